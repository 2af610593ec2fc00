"""A long call over a link with 20 +/- 10 ms of delay each way: does the speaker ever run dry?

The stand-in runs as its own process in one namespace, the app in another (see `jitter_net.py`);
the app still reaches the private PulseAudio through its Unix socket, which ignores network
namespaces. Underruns and overruns are the app's own counts from its `call_ended` event. The burst
train runs throughout, so the round trip under jitter is measured too (for information). Then the
naive client makes the same call over the same link: its underruns are the ones alsa-lib reports
recovering its stream from.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from impulses import Pairing, summary
from jitter_net import SRV_ADDR, JitterLink
from latency import SETTLE_S, Probe, naive_call

from sesame_pi.standin import PATH
from support.app_process import AppProcess

PORT = 8765
DELAY_MS = 20.0
JITTER_MS = 10.0


def _start_standin(link: JitterLink, work: Path) -> subprocess.Popen[bytes]:
    log = work / "jitter-standin.jsonl"
    command = [
        *link.exec_prefix(link.srv), sys.executable, "-m", "sesame_pi.cli", "standin",
        "--host", SRV_ADDR, "--port", str(PORT), "--mode", "echo", "--greeting-ms", "0",
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while "standin_listening" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the stand-in did not start: " + log.read_text()[-500:])
        time.sleep(0.05)
    return proc


def jitter_call(
    probe: Probe,
    token_file: Path,
    seconds: float,
    kind: str,
    app_env: dict[str, str],
    launcher: tuple[str, ...],
) -> tuple[dict[str, Any], Pairing, Pairing]:
    work = probe.work / "jitter"
    work.mkdir(exist_ok=True)
    with JitterLink(DELAY_MS, JITTER_MS, kind) as link:
        standin = _start_standin(link, work)
        url = f"ws://{SRV_ADDR}:{PORT}{PATH}"
        env = {**probe.sound.env, **app_env}
        app = AppProcess(work, url, token_file, env=env, launcher=launcher)
        app.command[:0] = link.exec_prefix(link.app)
        wav, _ = probe.train("jitter", seconds)
        recording = work / "jitter-tap.wav"
        try:
            with app:
                app.wait_state("idle", timeout=30)
                recorder = probe.tap.record(recording, rate=16000)
                try:
                    mark = app.mark()
                    app.press()
                    app.wait_event("call_live", after=mark)
                    time.sleep(SETTLE_S)
                    probe.feed(wav)
                    mark = app.mark()
                    app.hold(2.1)
                    ended = app.wait_event("call_ended", after=mark)
                finally:
                    probe.sound.stop_recording(recorder)
                app.terminate()
            # The naive client on the same link, in the same namespace, for as long.
            naive = naive_call(
                probe, url, token_file, seconds, "jitter-naive", tuple(link.exec_prefix(link.app))
            )
        finally:
            standin.terminate()
            standin.wait(10)
    pairing = probe.analyse(recording)
    audio = ended.get("audio", {})
    device_dry = audio.get("output_underflows") or 0
    figures = {
        "link": link.used,
        "delay_ms": DELAY_MS,
        "jitter_ms": JITTER_MS,
        "call_s": ended.get("duration_s"),
        "underruns": audio.get("underruns"),
        # The writer (or PortAudio) finding the device empty is as audible as the playout buffer
        # running dry; the goal counts both (one dry spell may be counted by each).
        "device_underflows": device_dry,
        "audible_underruns": (audio.get("underruns") or 0) + device_dry,
        "overruns": audio.get("overruns"),
        "audio": audio,
        "ping_rtt_ms": ended.get("link", {}).get("ping_rtt_ms"),
        "relay": link.relay_counts,
        "round_trip_ms": summary(pairing.found),
        "bursts": len(pairing.delays_ms),
        "bursts_missing": pairing.missing,
        "naive": {
            "underruns": naive.extra.get("underruns"),
            "round_trip_ms": summary(naive.pairing.found),
            "bursts": len(naive.pairing.delays_ms),
            "bursts_missing": naive.pairing.missing,
            "exit_code": naive.extra.get("exit_code"),
        },
    }
    return figures, pairing, naive.pairing
