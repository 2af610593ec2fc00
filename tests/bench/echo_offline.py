"""The echo canceller alone, offline, on the synthetic room of the unit tests: each engine's
figures and its cost against "off" in the same run, and a plot of the default engine.

For each delay (60 and 300 ms) and engine (off, webrtc, speex) a fresh Python process builds the
room (espeak-ng voices made once, here), feeds it through `EchoStage` in real-time order and
reports ERLE over far-end-only speech after 2 s (median and 10th percentile), the person's loss
alone, their level in double talk against alone, convergence and re-convergence time (ERLE of
every later 0.5 s window >= 15 dB), CPU seconds per second of audio, peak RSS during the run and
what the stage added to it (+MB). "off" does no work at all, so its CPU is the harness feeding
frames: the cost of an engine is its CPU minus off's, the ratio shows it against that floor. A
process per run makes peak memory honest (the engines allocate natively) and keeps one engine's
caches from flattering the next. Under a minute on a laptop core.

Then the cost of digital silence (the reference before the agent speaks, a muted microphone):
each engine alone and behind the stage, 2 s of noise then 8 s of exact zeros on both inputs, as
CPU ms per second of audio. Alone, AEC3's float filters decay into subnormal numbers and cost
many times their usual CPU; the stage's dither (`LsbDither`) keeps them at their usual cost.

    .venv/bin/python tests/bench/echo_offline.py [--plot echo.png] [--json results.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from sesame_pi.echo import EchoStage, resolve_engine  # noqa: E402
from sesame_pi.echo.engine import EchoUnavailable  # noqa: E402
from sesame_pi.echo.stage import Stage, open_engine  # noqa: E402
from support import room  # noqa: E402

ENGINES = ("off", "webrtc", "speex")
DELAYS = {60: 200, 300: 150}  # delay -> the delay after the room changes at CHANGE_S
SECONDS = 26.0
CHANGE_S = 18.0
FAR_SPANS = [(0.0, 10.0), (13.0, 26.0)]
NEAR_SPANS = [(10.0, 18.0)]
CONVERGED_DB = 15.0


def make_scene(work: Path, delay_ms: int) -> room.Scene:
    far = np.fromfile(work / "far.raw", np.int16).astype(float)
    near = np.fromfile(work / "near.raw", np.int16).astype(float)
    sc = room.build(
        far,
        near,
        seconds=SECONDS,
        far_spans=FAR_SPANS,
        near_spans=NEAR_SPANS,
        delay_ms=delay_ms,
        change=(CHANGE_S, DELAYS[delay_ms]),
    )
    np.savez(work / f"scene-{delay_ms}.npz", far=sc.far, mic=sc.mic, near=sc.near, echo=sc.echo)
    return sc


def load_scene(work: Path, delay_ms: int, *, parts: bool = True) -> room.Scene:
    data = np.load(work / f"scene-{delay_ms}.npz")
    empty = np.zeros(0)
    near, echo = (data["near"], data["echo"]) if parts else (empty, empty)
    return room.Scene(data["far"], data["mic"], near, echo, 20.0)


def memory_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measure(work: Path, engine: str, delay_ms: int) -> dict[str, Any]:
    """One engine in one room (runs in its own process, with only what the run needs loaded)."""
    sc = load_scene(work, delay_ms, parts=False)
    before = memory_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # restart the peak (VmHWM) from here
    stage = EchoStage(engine)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    out = room.run(stage, sc)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    peak = memory_kb("VmHWM")
    stats = stage.stats()
    stage.close()
    np.save(work / f"out-{engine}-{delay_ms}.npy", out)
    sc = load_scene(work, delay_ms)
    erle = room.erle_blocks(sc, out, 2.0, 10.0)
    alone = room.near_gain_db(sc, out, 10.0, 13.0)
    both = room.near_gain_db(sc, out, 13.0, 18.0)
    return {
        "engine": engine,
        "delay_ms": delay_ms,
        "erle_median_db": float(np.median(erle)),
        "erle_p10_db": float(np.percentile(erle, 10)),
        "near_loss_db": -alone,
        "double_talk_db": both - alone,
        "converge_s": room.converged_after(sc, out, 0.0, 10.0, CONVERGED_DB),
        "reconverge_s": room.converged_after(sc, out, CHANGE_S, SECONDS, CONVERGED_DB),
        "cpu_s_per_s": cpu / sc.seconds,
        "wall_s": wall,
        "peak_rss_mb": peak / 1024,
        "stage_mb": (peak - before) / 1024,
        "delay_found_ms": stats["delay_ms"],
    }


def silence_cost(engine: str) -> tuple[float, float] | None:
    """CPU ms per second of digital silence (after 2 s of noise): the engine fed directly, and
    behind the stage; None where the engine cannot run here."""
    rate, frame = room.MIC_RATE, room.MIC_RATE // 50
    noise = (np.random.default_rng(5).standard_normal(2 * rate) * 3000).astype(np.int16)
    signal = np.concatenate((noise, np.zeros(8 * rate, np.int16)))
    figures = []
    for staged in (False, True):
        try:
            canceller = open_engine(engine, rate)
        except EchoUnavailable:
            return None
        stage = Stage(canceller, rate)
        cpu = 0.0
        for i in range(0, len(signal), frame):
            block = signal[i : i + frame]
            t0 = time.process_time()
            if staged:
                stage.far_end(block.tobytes(), rate, i / rate)
                stage.process(block.tobytes(), i / rate)
            else:
                canceller.process(block, block)
            if i >= len(noise):
                cpu += time.process_time() - t0
        stage.close()
        figures.append(cpu * 1000 / 8)
    return figures[0], figures[1]


def child(work: Path, engine: str, delay_ms: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(work), engine, str(delay_ms)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'engine':7} {'delay':>5} {'ERLE med':>8} {'p10':>6} {'loss':>5} {'dbl talk':>8} "
        f"{'conv s':>6} {'reconv':>6} {'cpu s/s':>8} {'cpu/off':>7} {'+MB':>5} {'rss MB':>6} "
        f"{'rss/off':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['engine']:7} {r['delay_ms']:>5} {r['erle_median_db']:8.1f} "
            f"{r['erle_p10_db']:6.1f} "
            f"{r['near_loss_db']:5.2f} {r['double_talk_db']:8.2f} {r['converge_s']:6.1f} "
            f"{r['reconverge_s']:6.1f} {r['cpu_s_per_s']:8.4f} {r['cpu_ratio']:7.2f} "
            f"{r['stage_mb']:5.1f} {r['peak_rss_mb']:6.1f} {r['rss_ratio']:7.2f}"
        )
    return "\n".join(lines)


def plot(work: Path, engine: str, delay_ms: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sc = load_scene(work, delay_ms)
    out = np.load(work / f"out-{engine}-{delay_ms}.npy")
    ref = np.asarray(sc.far[:: room.FAR_RATE // 8000], float)  # for the eye only
    fig, axes = plt.subplots(3, 1, figsize=(12, 7), sharex=True, sharey=True)
    series = [
        ("microphone (echo + person + noise)", np.arange(len(sc.mic)) / room.MIC_RATE, sc.mic),
        ("reference (what the speaker played)", np.arange(len(ref)) / 8000, ref),
        (f"uplink ({engine})", np.arange(len(out)) / room.MIC_RATE, out),
    ]
    for ax, (title, t, x) in zip(axes, series, strict=True):
        ax.plot(t, x / 32768, linewidth=0.3)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(-0.6, 0.6)
        ax.axvspan(10.0, 13.0, color="tab:green", alpha=0.1)
        ax.axvspan(13.0, 18.0, color="tab:orange", alpha=0.1)
        ax.axvline(CHANGE_S, color="tab:red", linewidth=0.8)
    axes[-1].set_xlabel(
        f"seconds (delay {delay_ms} ms, {DELAYS[delay_ms]} ms after the red line; green: the "
        "person alone, orange: both talk)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plot", type=Path, help="write a PNG of mic, reference and uplink here")
    ap.add_argument("--json", type=Path, help="write the figures as JSON here")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        work, engine, delay = args.child
        print(json.dumps(measure(Path(work), engine, int(delay))))
        return 0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="echo-bench-") as tmp:
        work = Path(tmp)
        room.speech(room.FAR_TEXT, room.FAR_VOICE, room.FAR_RATE, work).tofile(work / "far.raw")
        room.speech(room.NEAR_TEXT, room.NEAR_VOICE, room.MIC_RATE, work).tofile(work / "near.raw")
        rows = []
        for delay in DELAYS:
            make_scene(work, delay)
            runs = {e: child(work, e, delay) for e in ENGINES}
            for r in runs.values():
                r["cpu_ratio"] = r["cpu_s_per_s"] / runs["off"]["cpu_s_per_s"]
                r["rss_ratio"] = r["peak_rss_mb"] / runs["off"]["peak_rss_mb"]
                rows.append(r)
        default = resolve_engine("auto")
        print(table(rows))
        print(
            f"\ndefault engine here: {default}; delay the stamps miss: 40 and 280 ms; "
            f"converged = every later 0.5 s window >= {CONVERGED_DB:.0f} dB; "
            f"{time.perf_counter() - start:.0f} s"
        )
        if args.plot:
            plot(work, default, 300, args.plot)
            print(f"plot: {args.plot}")
    print("\ndigital silence on both inputs, CPU ms per second of audio:")
    for engine in ENGINES[1:]:
        cost = silence_cost(engine)
        if cost is None:
            print(f"  {engine:7} cannot run here")
            continue
        alone, staged = cost
        print(f"  {engine:7} fed directly {alone:6.1f}   behind the stage (dithered) {staged:6.1f}"
              f"   ratio {alone / max(staged, 1e-6):5.1f}x")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
