"""Echo in a room made of PulseAudio parts: the real app, the real canceller, speech both ways.

The room: the app plays into the `speaker` null sink; a `module-loopback` carries the speaker's
monitor into the `micfeed` sink (the microphone) after a chosen delay and 9 dB down, so the
agent's voice reaches the microphone as a speaker a hand's width away would; a second talker (the
person) is played into the same sink. The stand-in streams spoken sentences down (with comfort
noise between them, as the service does) and keeps everything the app sends up.

One call per engine and delay, the same script each time:

    0 s        2 s                 9 s        12.5 s    14 s                 19 s
    |agent speaks ... (far end only: ERLE) |  person alone  | agent and person (double talk)|

Figures (each from recordings of the microphone and of the uplink, aligned by cross-correlation):
- ERLE over far-end-only windows after 2 s of convergence: median and 10th percentile;
- convergence: when the rolling ERLE first holds 20 dB;
- near-end loss in single talk: how much quieter the person is in the uplink than at the mic;
- double talk: the person's level in the uplink while the agent speaks, against the same sentence
  alone (a projection onto the single-talk copy, so residual echo does not count as the person);
- CPU: the app's CPU seconds per call second, as a ratio against `off` in the same run.

Run: `python tests/bench/echo_live.py [--quick] [--out DIR]` (also a step of `make bench`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from runtime_venv import runtime_python  # noqa: E402

from sesame_pi.standin import StandinOptions  # noqa: E402
from support.app_process import AppProcess  # noqa: E402
from support.credentials import make_pki, make_token, write_token  # noqa: E402
from support.standin_thread import StandinThread  # noqa: E402
from support.virtual_audio import VirtualAudio, read_wav  # noqa: E402

RATE = 16000  # the microphone and uplink
FAR_RATE = 24000  # the stand-in's speech
WINDOW_S = 0.1
ECHO_GAIN_DB = -9.0
FAR_TEXT = (
    "Hello, I am the agent. I speak from the little speaker next to your microphone, "
    "and without echo control I would hear myself and stop talking. "
    "Tell me about your day while I keep talking over you, so we can test double talk."
)
NEAR_TEXT = "This is the person in the room, talking to the appliance."
# The script, in seconds after the call is live.
FAR_SPANS = ((0.0, 8.5), (13.5, 19.5))
NEAR_AT = (9.0, 14.5)
CALL_S = 20.5
GOALS = {"erle_median_db": 25.0, "near_loss_db": 2.0, "double_talk_db": 6.0, "cpu_ratio": 1.3}


def say(text: str) -> None:
    print(f"[echo] {text}", flush=True)


# --------------------------------------------------------------------------- signals


def espeak(text: str, voice: str, rate: int, path: Path, pitch: int = 50) -> np.ndarray:
    """Speech made here and now (espeak-ng), at `rate`, as float samples in [-1, 1]."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(
        ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", "165", "-w", str(raw), text],
        check=True,
        capture_output=True,
    )
    subprocess.run(["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(path)], check=True)
    pcm, _ = read_wav(path)
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0


def to_pcm(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def far_script(speech: np.ndarray, rng: np.random.Generator) -> bytes:
    """The agent's side of the call: sentences where FAR_SPANS say, comfort noise everywhere."""
    total = int((CALL_S + 5) * FAR_RATE)
    out = rng.normal(0.0, 10 ** (-55 / 20), total)  # about -55 dBFS of comfort noise
    pos = 0
    for start, end in FAR_SPANS:
        a, b = int(start * FAR_RATE), int(end * FAR_RATE)
        piece = np.resize(speech[pos:], b - a) if pos < len(speech) else np.resize(speech, b - a)
        out[a:b] += 0.5 * piece
        pos += b - a
    return to_pcm(out)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(to_pcm(samples))
    return path


def load(path: Path) -> np.ndarray:
    pcm, rate = read_wav(path)
    assert rate == RATE, f"{path} is {rate} Hz"
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0


def lag_of(reference: np.ndarray, signal: np.ndarray, max_lag: int) -> int:
    """The lag (samples, >= 0) where `reference` best matches `signal` (signal[n] ~ ref[n-lag])."""
    n = 1 << int(np.ceil(np.log2(len(reference) + len(signal))))
    spec = np.fft.rfft(signal, n) * np.conj(np.fft.rfft(reference, n))
    spec /= np.abs(spec) + 1e-12  # PHAT: sharp peaks for speech
    corr = np.fft.irfft(spec, n)
    return int(np.argmax(corr[: max_lag + 1]))


def powers(x: np.ndarray, start: int, count: int) -> np.ndarray:
    w = int(WINDOW_S * RATE)
    seg = x[start : start + count * w]
    seg = np.pad(seg, (0, count * w - len(seg)))
    return np.mean(seg.reshape(count, w) ** 2, axis=1) + 1e-12


def db(x: float | np.ndarray) -> Any:
    return 10 * np.log10(x)


def level(p: np.ndarray, where: np.ndarray) -> float | None:
    """The mean level (dBFS) of the windows `where` selects, or None if it selects none."""
    return round(float(db(np.mean(p[where]))), 1) if where.any() else None


# --------------------------------------------------------------------------- the room


def build_room(audio: VirtualAudio, delay_ms: int) -> None:
    """The speaker's sound into the microphone, `delay_ms` later and ECHO_GAIN_DB down."""
    pactl = ["pactl"]
    env = audio.child_env()
    out = subprocess.run(
        [*pactl, "load-module", "module-loopback", "source=speaker.monitor", "sink=micfeed",
         f"latency_msec={delay_ms}", "source_dont_move=true", "sink_dont_move=true",
         "remix=true"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    module = out.stdout.strip()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listing = subprocess.run(
            [*pactl, "list", "sink-inputs"], env=env, capture_output=True, text=True
        ).stdout
        for block in listing.split("Sink Input #")[1:]:
            if f"Owner Module: {module}\n" in block:
                index = block.split("\n", 1)[0].strip()
                subprocess.run(
                    [*pactl, "set-sink-input-volume", index, f"{ECHO_GAIN_DB}dB"],
                    env=env,
                    check=True,
                )
                return
        time.sleep(0.2)
    raise RuntimeError("the loopback that makes the room did not appear")


@dataclass
class CallRecording:
    mic: np.ndarray  # what the microphone heard (echo + person + noise)
    speaker: np.ndarray  # what the app played
    uplink: np.ndarray  # what the app sent up
    live_offset_s: float  # where the call went live in the mic recording
    cpu_per_s: float
    rss_mb: float
    audio_opened: dict[str, Any]
    summary: dict[str, Any]


def record_call(
    work: Path,
    engine: str,
    delay_ms: int,
    far_pcm: bytes,
    near_wav: Path,
    launcher: tuple[str, ...],
) -> CallRecording:
    run_dir = Path(tempfile.mkdtemp(prefix=f"{engine}-{delay_ms}-", dir=work))
    pki = make_pki(run_dir)
    import ssl

    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(pki.cert_file, pki.key_file)
    options = StandinOptions(mode="speech", speech=far_pcm, greeting_ms=0)
    with VirtualAudio(run_dir) as audio, StandinThread(options, tls=tls) as server:
        server.record.keep_mic_bytes = int((CALL_S + 10) * RATE * 2)
        build_room(audio, delay_ms)
        token = write_token(run_dir / "token", make_token())
        # The app from this checkout, whatever the venv's editable install points at.
        env = {**audio.env, "SESAME_PI_ECHO_CANCEL": engine, "PYTHONPATH": str(ROOT / "app/src")}
        app = AppProcess(run_dir, server.url, token, env=env, launcher=launcher,
                         extra_args=("--ca-file", str(pki.ca_file)))  # fmt: skip
        with app:
            app.wait_state("idle", timeout=30)
            mic_rec = run_dir / "mic.wav"
            spk_rec = run_dir / "speaker.wav"
            mic_proc = subprocess.Popen(
                ["parec", "--device=micfeed.monitor", "--file-format=wav", "--format=s16le",
                 f"--rate={RATE}", "--channels=1", "--latency-msec=10", str(mic_rec)],
                env=audio.child_env(),
            )  # fmt: skip
            spk_proc = audio.record_speaker(spk_rec, rate=RATE)
            time.sleep(0.5)
            rec_start = time.monotonic()
            mark = app.mark()
            app.press()
            app.wait_event("call_live", after=mark)
            live_at = time.monotonic()
            opened = app.wait_event("audio_opened", after=mark)
            proc = psutil.Process(app.pid)
            cpu0 = sum(proc.cpu_times()[:2])
            timers = [threading.Timer(at, audio.feed_microphone, (near_wav,)) for at in NEAR_AT]
            for timer in timers:
                timer.start()
            time.sleep(CALL_S)
            cpu = sum(proc.cpu_times()[:2]) - cpu0
            rss = proc.memory_info().rss / 1e6
            mark = app.mark()
            app.hold(2.1)
            ended = app.wait_event("call_ended", after=mark)
            for p in (mic_proc, spk_proc):
                audio.stop_recording(p)
            uplink = bytes(server.record.mic_pcm)
            (run_dir / "uplink.raw").write_bytes(uplink)
            app.terminate()
    return CallRecording(
        mic=load(mic_rec),
        speaker=load(spk_rec),
        uplink=np.frombuffer(uplink, dtype="<i2").astype(np.float64) / 32768.0,
        live_offset_s=live_at - rec_start,
        cpu_per_s=cpu / CALL_S,
        rss_mb=rss,
        audio_opened=opened,
        summary=ended,
    )


# --------------------------------------------------------------------------- figures


def figures(rec: CallRecording, near: np.ndarray) -> dict[str, Any]:
    """ERLE, convergence, near-end loss and double-talk level from one call's recordings."""
    w = int(WINDOW_S * RATE)
    live = int(rec.live_offset_s * RATE)
    # The uplink's sample 0 sits somewhere after the press in the mic recording: find where.
    # The uplink and the mic share the person's voice (and all of the mic, with no canceller).
    up_at = lag_of(rec.uplink[: 25 * RATE], rec.mic, max_lag=len(rec.mic) - 1)
    echo_lag = lag_of(rec.speaker[live : live + 8 * RATE], rec.mic[live : live + 8 * RATE], RATE)
    count = int(min(len(rec.uplink), len(rec.mic) - up_at) // w)
    p_mic = powers(rec.mic, up_at, count)
    p_up = powers(rec.uplink, 0, count)
    p_far = powers(rec.speaker, max(0, up_at - echo_lag), count)
    t = np.arange(count) * WINDOW_S + (up_at - live) / RATE  # seconds after live
    # Where the person's sentences really are: the timers that play them start a little late,
    # both by the same amount; the first starts in a quiet room, so its onset is plain to see.
    n = len(near)
    quiet_room = np.where((t >= NEAR_AT[0] - 0.5) & (db(p_mic) > -40))[0]
    late = float(t[quiet_room[0]] - NEAR_AT[0]) if quiet_room.size else 0.0
    near_spans = [(at + late, at + late + n / RATE) for at in NEAR_AT]

    def in_near(x: float, margin: float) -> bool:
        return any(a - margin <= x <= b + margin for a, b in near_spans)

    far_active = db(p_far) > -45
    far_start = FAR_SPANS[0][0]
    far_only = np.array(
        [far_active[i] and not in_near(t[i], 1.0) and t[i] >= far_start + 2.0 for i in range(count)]
    )
    erle = db(p_mic / p_up)
    erle_far = erle[far_only]
    # Convergence: the first far-end window from which 1 s of far-only windows averages >= 20 dB.
    converged_s = None
    early = np.where(far_active & (t >= far_start) & (t < FAR_SPANS[0][1]))[0]
    for k, i in enumerate(early):
        window = erle[early[k : k + 10]]
        if len(window) == 10 and np.median(window) >= 20:
            converged_s = round(float(t[i] - far_start), 2)
            break
    st_a, st_b = near_spans[0]
    single = np.array(
        [st_a + 0.2 <= t[i] <= st_b - 0.2 and not far_active[i] and db(p_mic[i]) > -45
         for i in range(count)]
    )  # fmt: skip
    near_loss = float(np.median(db(p_mic[single] / p_up[single]))) if single.any() else None
    # Double talk: the same sentence alone and over the agent, window for window; the uplink's
    # energy over it against its energy alone (what is left of the echo adds a little).
    dt_level = None
    spoken = np.array([st_a + 0.2 <= x <= st_b - 0.2 for x in t])
    over = np.roll(spoken, round((near_spans[1][0] - st_a) / WINDOW_S))
    if spoken.any() and over.any() and not (spoken & over).any():
        dt_level = round(float(db(p_up[over].sum() / p_up[spoken].sum())), 2)
    return {
        "echo_path_ms": round(echo_lag / RATE * 1000, 1),
        "erle_median_db": round(float(np.median(erle_far)), 1) if erle_far.size else None,
        "erle_p10_db": round(float(np.percentile(erle_far, 10)), 1) if erle_far.size else None,
        "far_only_windows": int(far_only.sum()),
        "converged_after_s": converged_s,
        "near_loss_db": round(near_loss, 2) if near_loss is not None else None,
        "double_talk_db": dt_level,
        "echo_at_mic_dbfs": level(p_mic, far_only),
        "person_at_mic_dbfs": level(p_mic, single),
        "cpu_per_s": round(rec.cpu_per_s, 4),
        "rss_mb": round(rec.rss_mb, 1),
        "engine": rec.audio_opened.get("echo_engine"),
        "input_latency_ms": rec.audio_opened.get("input_latency_ms"),
        "output_latency_ms": rec.audio_opened.get("output_latency_ms"),
        "underruns": (rec.summary.get("audio") or {}).get("underruns"),
        "echo_delay_estimate_ms": (rec.summary.get("audio") or {}).get("echo_delay_ms"),
        # the stage's and the engine's own CPU, timed inside the app (per second of the call)
        "stage_cpu_ms_per_s": per_call_s(rec, "echo_cpu_ms"),
        "engine_cpu_ms_per_s": per_call_s(rec, "echo_engine_cpu_ms"),
    }


def per_call_s(rec: CallRecording, field: str) -> float | None:
    """A figure from the call summary's audio part, per second of the call."""
    audio = rec.summary.get("audio") or {}
    duration = rec.summary.get("duration_s")
    if field not in audio or not duration:
        return None
    return round(float(audio[field]) / float(duration), 2)


def plot(rec: CallRecording, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    up_at = lag_of(rec.uplink[: 25 * RATE], rec.mic, max_lag=len(rec.mic) - 1)
    live = int(rec.live_offset_s * RATE)
    n = min(len(rec.uplink), len(rec.mic) - up_at)
    t = (np.arange(n) + up_at - live) / RATE
    fig, axes = plt.subplots(3, 1, figsize=(11, 6.5), sharex=True, sharey=True)
    for ax, (name, x) in zip(
        axes,
        (
            ("reference: what the speaker played", rec.speaker[up_at : up_at + n]),
            ("microphone: echo + the person", rec.mic[up_at : up_at + n]),
            ("uplink: what the agent hears", rec.uplink[:n]),
        ),
        strict=True,
    ):
        ax.plot(t[: len(x)], x, linewidth=0.3)
        ax.set_title(name, fontsize=10, loc="left")
        ax.set_ylim(-0.6, 0.6)
    for ax in axes:
        for a in NEAR_AT:
            ax.axvspan(a, a + 3.0, color="tab:orange", alpha=0.08)
    axes[-1].set_xlabel("seconds after the call went live (orange: the person talks)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- run


def judge(row: dict[str, Any], off_cpu: float | None) -> dict[str, str]:
    verdict: dict[str, str] = {}
    if row["engine"] == "off":
        return verdict
    checks = {
        "erle_median_db": (row["erle_median_db"] or 0) >= GOALS["erle_median_db"],
        "near_loss_db": row["near_loss_db"] is not None
        and row["near_loss_db"] <= GOALS["near_loss_db"],
        "double_talk_db": row["double_talk_db"] is not None
        and abs(row["double_talk_db"]) <= GOALS["double_talk_db"],
    }
    if off_cpu:
        row["cpu_ratio"] = round(row["cpu_per_s"] / off_cpu, 2)
        checks["cpu_ratio"] = row["cpu_ratio"] <= GOALS["cpu_ratio"]
    return {k: "met" if ok else "MISSED" for k, ok in checks.items()}


def table(rows: list[dict[str, Any]]) -> str:
    cols = [
        ("setting", "setting"), ("engine", "engine"), ("delay", "delay_ms"),
        ("path ms", "echo_path_ms"), ("ERLE med", "erle_median_db"), ("ERLE p10", "erle_p10_db"),
        ("conv s", "converged_after_s"), ("near loss", "near_loss_db"),
        ("dbl talk", "double_talk_db"), ("CPU x off", "cpu_ratio"), ("RSS MB", "rss_mb"),
    ]  # fmt: skip
    lines = [" | ".join(f"{h:>9}" for h, _ in cols)]
    for row in rows:
        lines.append(" | ".join(f"{row.get(k)!s:>9}" for _, k in cols))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the default engine and off only")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--engines", default="", help="comma list (default: off,auto,speex,webrtc)")
    parser.add_argument("--delays", default="60,300", help="echo delays in ms")
    parser.add_argument("--keep", action="store_true", help="keep the recordings")
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds of calls; CPU is each setting's median"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    engines = (
        args.engines.split(",")
        if args.engines
        else (["off", "auto"] if args.quick else ["off", "auto", "speex", "webrtc"])
    )
    delays = [int(d) for d in args.delays.split(",")]
    work = Path(tempfile.mkdtemp(prefix="sesame-echo-"))
    # The app as the appliance runs it (runtime dependencies only, compiled bytecode): its RSS is
    # then the Pi's, not the development venv's (where PyJWT also loads `cryptography`).
    launcher = (str(runtime_python(work)), "-m", "sesame_pi.cli")
    rng = np.random.default_rng(7)
    try:
        far = espeak(FAR_TEXT, "en-us", FAR_RATE, work / "far.wav", pitch=40)
        near = espeak(NEAR_TEXT, "en-gb+f3", RATE, work / "near.wav", pitch=70)
        near_wav = write_wav(work / "near-16k.wav", 0.5 * near, RATE)
        far_pcm = far_script(far, rng)
        rows: list[dict[str, Any]] = []
        for delay in delays:
            # Settings take turns, `--repeat` rounds: the CPU ratio is of medians, as one call's
            # CPU on a shared machine varies by a fifth from one call to the next.
            runs: dict[str, list[dict[str, Any]]] = {engine: [] for engine in engines}
            for round_no in range(args.repeat):
                for engine in engines:
                    say(f"call with echo_cancel={engine}, echo delay {delay} ms, round {round_no}")
                    rec = record_call(work, engine, delay, far_pcm, near_wav, launcher)
                    row = {"setting": engine, "delay_ms": delay, **figures(rec, 0.5 * near)}
                    runs[engine].append(row)
                    say(json.dumps(row))
                    if round_no == 0 and engine == "auto" and delay == max(delays):
                        plot(rec, args.out / "echo.png", f"the default canceller, {delay} ms echo")
            off_cpu = None
            for engine in engines:
                row = runs[engine][0]
                row["cpu_runs"] = [r["cpu_per_s"] for r in runs[engine]]
                row["cpu_per_s"] = round(float(np.median(row["cpu_runs"])), 4)
                if engine == "off":
                    off_cpu = row["cpu_per_s"]
                row["verdicts"] = judge(row, off_cpu)
                rows.append(row)
    finally:
        if args.keep:
            say(f"recordings kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    (args.out / "echo.json").write_text(json.dumps({"goals": GOALS, "rows": rows}, indent=2))
    print()
    print(table(rows))
    missed = [(r["setting"], r["delay_ms"], k) for r in rows for k, v in r["verdicts"].items()
              if v != "met"]  # fmt: skip
    for setting, delay, goal in missed:
        print(f"goal missed: {goal} for {setting} at {delay} ms")
    print(f"wrote {args.out / 'echo.json'} and {args.out / 'echo.png'}")
    return 0 if all(r["erle_median_db"] is not None for r in rows if r["setting"] != "off") else 1


if __name__ == "__main__":
    sys.exit(main())
