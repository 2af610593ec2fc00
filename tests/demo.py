"""`make demo`: a whole call with no token and no hardware.

The real app (`sesame-pi run`) talks to the local stand-in over TLS, on real PortAudio over virtual
ALSA devices (a private PulseAudio with null sinks), with the stdin button pressed by this script.
It prints the app's event log as it happens and leaves what the speaker played in
demo-out/speaker.wav and the log in demo-out/events.jsonl.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from sesame_pi.standin import StandinOptions, server_tls
from support.app_process import AppProcess
from support.credentials import make_pki, make_token, write_token
from support.signals import loud_seconds, sine
from support.standin_thread import StandinThread
from support.virtual_audio import VirtualAudio, read_wav, write_wav

QUIET = {"ts", "level", "logger", "event"}
# The speaker must play at least this much: the earcons (ready, start, live, end) are about
# 0.7 s of it, the agent's greeting and the echoed melody several seconds.
MIN_SOUND_S = 2.0


def show(found: dict[str, object]) -> None:
    fields = " ".join(f"{k}={json.dumps(v)}" for k, v in found.items() if k not in QUIET)
    stamp = str(found.get("ts", ""))[11:23]
    print(f"  {stamp}  {found['event']:<16} {fields[:150]}", flush=True)


def follow(app: AppProcess, stop: threading.Event) -> None:
    seen = 0
    while not stop.is_set():
        events = app.events()
        for found in events[seen:]:
            show(found)
        seen = len(events)
        time.sleep(0.1)
    for found in app.events()[seen:]:
        show(found)


def melody(rate: int) -> bytes:
    """Something to say into the virtual microphone: a few notes, with pauses."""
    notes = (392.0, 0.0, 440.0, 494.0, 0.0, 587.0, 523.0, 0.0)
    return b"".join(
        sine(freq, 0.4, rate) if freq else bytes(int(0.4 * rate) * 2) for freq in notes * 3
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    parser.add_argument("--talk", type=float, default=4.0, help="seconds of call before the hold")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sesame-demo-"))
    code = 1
    try:
        print("demo: starting virtual sound devices (PulseAudio null sinks behind ALSA)")
        with VirtualAudio(work / "audio") as sound:
            pki = make_pki(work)
            token = make_token(exp_in_s=3600)
            token_file = write_token(work / "token", token)
            tls = server_tls(str(pki.cert_file), str(pki.key_file))
            options = StandinOptions(mode="echo", expect_token=token)
            with StandinThread(options, tls=tls) as server:
                print(f"demo: stand-in listening at {server.url} (echoes what it hears)")
                feeder = sound.feed_microphone(write_wav(work / "mic.wav", melody(16000), 16000))
                recorder = sound.record_speaker(out / "speaker.wav", rate=24000)
                stop = threading.Event()
                app = AppProcess(
                    work,
                    server.url,
                    token_file,
                    env=sound.env,
                    extra_args=("--ca-file", str(pki.ca_file)),
                )
                with app:
                    printer = threading.Thread(target=follow, args=(app, stop), daemon=True)
                    printer.start()
                    print("demo: sesame-pi run ... --button stdin   (its event log follows)")
                    app.wait_state("idle", timeout=30)
                    print("demo: [button] short press: start a call")
                    app.press()
                    app.wait_event("call_live")
                    time.sleep(args.talk)
                    print("demo: [button] hold for 2.5 s: end the call")
                    app.hold(2.5)
                    app.wait_event("call_ended")
                    app.wait_state("idle")
                    print("demo: SIGTERM")
                    code = app.terminate()
                    stop.set()
                    printer.join(5)
                sound.stop_recording(recorder)
                feeder.terminate()
        shutil.copy(app.log_file, out / "events.jsonl")
        heard, rate = read_wav(out / "speaker.wav")
        print(
            f"demo: the app exited with {code}; the speaker played "
            f"{loud_seconds(heard, rate):.1f} s of sound in {len(heard) / 2 / rate:.1f} s; "
            f"stand-in saw {server.record.calls} call(s), "
            f"{server.record.audio_frames_in} microphone frames"
        )
        print(f"demo: wrote {out / 'speaker.wav'} and {out / 'events.jsonl'}")
        if server.record.violations:
            print(f"demo: protocol violations: {server.record.violations}")
            return 1
        # A call that exits cleanly but carried no sound is no demo.
        if loud_seconds(heard, rate) < MIN_SOUND_S or server.record.audio_frames_in == 0:
            print(
                f"demo: FAILED: the speaker must play at least {MIN_SOUND_S} s of sound and the "
                "stand-in must hear the microphone"
            )
            return 1
        return code
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
