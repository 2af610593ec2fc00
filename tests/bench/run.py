"""`make bench`: the app's latency, CPU, memory, press to live, recovery and underruns, in one run.

Everything is real: `sesame-pi run` on PortAudio over virtual ALSA devices (a private PulseAudio),
the echoing stand-in server, the stdin button. A naive baseline client runs the same latency and
CPU measurements. Prints a table with each goal's verdict and writes bench-out/results.json and
bench-out/latency.png. `--quick` is a shorter run (under four minutes) with the same steps.
Needs root for the jitter step (network namespaces); every other step runs without.

    .venv/bin/python tests/bench/run.py [--quick] [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # the bench modules, and tests/ for `support`

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

import report  # noqa: E402
from impulses import Pairing, summary  # noqa: E402
from latency import Probe, app_call, harness_floor, naive_call  # noqa: E402
from runtime_venv import runtime_python  # noqa: E402
from service import back_in_service, press_to_live  # noqa: E402
from tap import DuplexTap  # noqa: E402
from underruns import jitter_call  # noqa: E402

import sesame_pi  # noqa: E402
from sesame_pi.standin import StandinOptions  # noqa: E402
from support.app_process import AppProcess  # noqa: E402
from support.credentials import make_token, write_token  # noqa: E402
from support.standin_thread import StandinThread  # noqa: E402
from support.virtual_audio import VirtualAudio  # noqa: E402

CHECK_MS = 20  # a loopback of known latency: the tap must measure it as such
CHECK_S = 10.0
PLANS = {
    # seconds of metered call, of floor, of jittery call; presses; server restarts
    "full": {"call_s": 60.0, "floor_s": 20.0, "jitter_s": 600.0, "presses": 5, "restarts": 3},
    "quick": {"call_s": 15.0, "floor_s": 10.0, "jitter_s": 60.0, "presses": 3, "restarts": 2},
}


def say(text: str) -> None:
    print(f"bench: {text}", flush=True)


def section(results: dict[str, Any], name: str, step: Callable[[], Any]) -> Any:
    """Run one measurement; a failure is recorded and reported, and the other steps still run."""
    started = time.monotonic()
    try:
        value = step()
    except Exception as exc:  # a benchmark reports what broke and goes on
        traceback.print_exc()
        results["errors"][name] = f"{type(exc).__name__}: {exc}"
        return None
    results.setdefault("step_seconds", {})[name] = round(time.monotonic() - started, 1)
    return value


def host_facts() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "sesame_pi": sesame_pi.__version__,
        "commit": commit or None,
    }


def latency_figures(pairing: Pairing, floor_p50: float | None) -> dict[str, Any]:
    """The gap between a burst's two copies is the client's share (the tap adds no skew); the
    same gap beyond the floor's median says what the client adds over a bare pass-through."""
    found = pairing.found
    over = [d - floor_p50 for d in found] if floor_p50 is not None else []
    return {
        "bursts": len(pairing.delays_ms),
        "bursts_missing": pairing.missing,
        "round_trip": summary(found),
        "over_floor": summary(over),
    }


def series(pairing: Pairing | None) -> tuple[list[float], list[float]]:
    if pairing is None or not pairing.mic_times:
        return [], []
    t0 = pairing.mic_times[0]
    points = [(t - t0, d) for t, d in zip(pairing.mic_times, pairing.delays_ms, strict=True) if d]
    return [t for t, _ in points], [d for _, d in points]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (about 3-4 minutes)")
    parser.add_argument("--out", type=Path, default=Path("bench-out"), help="where results go")
    parser.add_argument("--call-s", type=float, help="metered call length (s)")
    parser.add_argument("--jitter-s", type=float, help="length of the jittery call (s)")
    parser.add_argument(
        "--link",
        default="auto",
        choices=("auto", "netem", "netjitter"),
        help="how to add jitter: tc netem, the user-space relay, or netem when the kernel has it",
    )
    parser.add_argument("--skip-jitter", action="store_true", help="leave out the jitter step")
    parser.add_argument(
        "--app-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the app, e.g. SESAME_PI_PREBUFFER_MS=20 (to try a setting)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 3 when a goal is missed")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    plan = dict(PLANS["quick" if args.quick else "full"])
    if args.call_s:
        plan["call_s"] = args.call_s
    if args.jitter_s:
        plan["jitter_s"] = args.jitter_s
    # The echo stand-in returns the microphone's own bursts a moment later, which any echo
    # canceller rightly removes as echo; both clients are timed without one (echo_live.py
    # measures the canceller in a room). `--app-env SESAME_PI_ECHO_CANCEL=auto` overrides.
    app_env = {"SESAME_PI_ECHO_CANCEL": "off"}
    app_env.update(item.split("=", 1) for item in args.app_env)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    say("the app runs from a venv with its runtime dependencies only, as on the appliance")
    app_python = runtime_python(out)
    work = Path(tempfile.mkdtemp(prefix="sesame-bench-"))
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "plan": plan,
        "app_env": app_env,
        "app_python": str(app_python),
        "host": host_facts(),
        "errors": {},
    }
    pairings: dict[str, Pairing | None] = {}
    try:
        section(results, "set-up", lambda: measure(args, plan, work, results, pairings))
    finally:
        if args.keep:
            say(f"work files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    results["goals"] = report.judge(results)
    report.write_json(results, out / "results.json")
    for name, pairing in pairings.items():
        if pairing is not None:
            report.write_bursts(pairing.mic_times, pairing.delays_ms, out / f"bursts-{name}.csv")
    report.plot(
        {
            "app (echo stand-in)": series(pairings.get("app")),
            "naive baseline": series(pairings.get("naive")),
            "harness floor (shortest loopback)": series(pairings.get("floor")),
        },
        {
            "app": series(pairings.get("jitter")),
            "naive baseline": series(pairings.get("jitter-naive")),
        },
        out / "latency.png",
        f"microphone to speaker through the client ({results['mode']} run)",
    )
    print()
    print(report.table(results))
    say(f"wrote {out / 'results.json'} and {out / 'latency.png'}")
    if results["errors"]:
        return 1
    missed = any(goal["result"] == "miss" for goal in results["goals"])
    return 3 if args.strict and missed else 0


def measure(
    args: argparse.Namespace,
    plan: dict[str, Any],
    work: Path,
    results: dict[str, Any],
    pairings: dict[str, Pairing | None],
) -> None:
    say("starting virtual sound devices and the two-channel tap")
    with VirtualAudio(work / "audio") as sound, DuplexTap(sound) as tap:
        time.sleep(1.0)  # the rewired sinks settle into 10 ms blocks
        probe = Probe(sound, tap, work)
        token_file = write_token(work / "token", make_token(exp_in_s=6 * 3600))
        latency: dict[str, Any] = results.setdefault("latency", {})
        usage: dict[str, Any] = results.setdefault("usage", {})

        say(f"harness: bursts through a 20 ms loopback, to check the tap ({CHECK_S:.0f} s)")
        check = section(results, "tap_check", lambda: harness_floor(probe, CHECK_S, CHECK_MS))
        latency["tap_check"] = {"loopback_ms": CHECK_MS, **summary(check.found if check else [])}
        pairings["tap_check"] = check
        say(f"harness floor: bursts through the shortest loopback ({plan['floor_s']:.0f} s)")
        floor = section(results, "floor", lambda: harness_floor(probe, plan["floor_s"], 1))
        pairings["floor"] = floor
        latency["floor"] = summary(floor.found) if floor else None
        floor_p50 = latency["floor"]["p50"] if latency["floor"] else None

        launcher = (results["app_python"], "-m", "sesame_pi.cli")
        with StandinThread(StandinOptions(mode="echo", greeting_ms=0)) as server:
            app_dir = work / "app"
            app_dir.mkdir()
            env = {**sound.env, **results["app_env"]}
            with AppProcess(app_dir, server.url, token_file, env=env, launcher=launcher) as app:
                app.wait_state("idle", timeout=30)
                say(f"app: one call, bursts in, echo out, CPU and memory ({plan['call_s']:.0f} s)")
                call = section(results, "app_call", lambda: app_call(probe, app, plan["call_s"]))
                if call is not None:
                    pairings["app"] = call.pairing
                    latency["app"] = latency_figures(call.pairing, floor_p50)
                    usage["app"] = call.usage.as_dict()
                    results["app_call_audio"] = call.extra["call_ended"].get("audio")
                say(f"app: press to live on a warm link, {plan['presses']} presses")
                results["press_to_live"] = section(
                    results, "press_to_live", lambda: press_to_live(app, server, plan["presses"])
                )
                say(f"app: server crash and restart mid-call, {plan['restarts']} times")
                results["back_in_service"] = section(
                    results,
                    "back_in_service",
                    lambda: back_in_service(app, server, plan["restarts"]),
                )
                results["app_exit_code"] = app.terminate()
            shutil.copy(app.log_file, args.out / "app-events.jsonl")

            say(f"naive baseline: the same call ({plan['call_s']:.0f} s)")
            naive = section(
                results,
                "naive_call",
                lambda: naive_call(probe, server.url, token_file, plan["call_s"]),
            )
            if naive is not None:
                pairings["naive"] = naive.pairing
                latency["naive"] = latency_figures(naive.pairing, floor_p50)
                usage["naive"] = naive.usage.as_dict()
            results["standin_violations"] = list(server.record.violations)

        if args.skip_jitter:
            return
        say(f"jitter: one long call over a 20 +/- 10 ms link ({plan['jitter_s']:.0f} s)")
        jitter = section(
            results,
            "jitter",
            lambda: jitter_call(
                probe,
                token_file,
                plan["jitter_s"],
                args.link,
                results["app_env"],
                launcher,
            ),
        )
        if jitter is not None:
            results["jitter"], pairings["jitter"], pairings["jitter-naive"] = jitter
        jitter_log = work / "jitter" / "app-events.jsonl"
        if jitter_log.exists():
            shutil.copy(jitter_log, args.out / "jitter-app-events.jsonl")


if __name__ == "__main__":
    sys.exit(main())
