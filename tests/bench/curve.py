"""Latency against CPU over the playout settings: which trade the default makes.

Runs `run.py --quick --skip-jitter` once per setting (output mode, speaker period, device target),
each run with the naive client measured beside the app on the same machine a minute apart, and
prints the app's p95 round trip and CPU per minute of call as ratios to that run's naive client.
The plot puts every run's app and naive client on one p95-against-CPU plane. About two minutes a
setting; nothing is asserted here.

    .venv/bin/python tests/bench/curve.py [--out bench-out/curve] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# name -> the app's settings for that run (environment overrides)
SETTINGS: dict[str, dict[str, str]] = {
    "callback 20 ms": {"SESAME_PI_OUTPUT_MODE": "callback", "SESAME_PI_OUTPUT_PERIOD_MS": "20"},
    "callback 10 ms": {"SESAME_PI_OUTPUT_MODE": "callback", "SESAME_PI_OUTPUT_PERIOD_MS": "10"},
    "writer 20 ms / 40": {
        "SESAME_PI_OUTPUT_MODE": "writer",
        "SESAME_PI_OUTPUT_PERIOD_MS": "20",
        "SESAME_PI_DEVICE_TARGET_MS": "40",
    },
    "writer 10 ms / 20": {
        "SESAME_PI_OUTPUT_MODE": "writer",
        "SESAME_PI_OUTPUT_PERIOD_MS": "10",
        "SESAME_PI_DEVICE_TARGET_MS": "20",
    },
    "writer 5 ms / 10": {
        "SESAME_PI_OUTPUT_MODE": "writer",
        "SESAME_PI_OUTPUT_PERIOD_MS": "5",
        "SESAME_PI_DEVICE_TARGET_MS": "10",
    },
}


def run_setting(name: str, env: dict[str, str], out: Path) -> dict[str, Any]:
    slug = name.replace(" ", "-").replace("/", "").replace("--", "-")
    where = out / slug
    command = [
        sys.executable,
        str(HERE / "run.py"),
        "--quick",
        "--skip-jitter",
        "--out",
        str(where),
    ]
    for key, value in env.items():
        command += ["--app-env", f"{key}={value}"]
    print(f"curve: {name}", flush=True)
    subprocess.run(command, check=False, stdout=subprocess.DEVNULL)
    results: dict[str, Any] = json.loads((where / "results.json").read_text())
    return results


def point(name: str, results: dict[str, Any]) -> dict[str, Any]:
    latency, usage = results.get("latency", {}), results.get("usage", {})

    def p95(who: str) -> float | None:
        value = (latency.get(who) or {}).get("round_trip", {}).get("p95")
        return float(value) if value is not None else None

    def cpu(who: str) -> float | None:
        value = (usage.get(who) or {}).get("cpu_s_per_min")
        return float(value) if value is not None else None

    row = {
        "setting": name,
        "app_p95_ms": p95("app"),
        "naive_p95_ms": p95("naive"),
        "app_cpu_s_per_min": cpu("app"),
        "naive_cpu_s_per_min": cpu("naive"),
        "underflows": (results.get("app_call_audio") or {}).get("output_underflows"),
        "errors": results.get("errors") or {},
    }
    for figure in ("p95_ms", "cpu_s_per_min"):
        app, naive = row[f"app_{figure}"], row[f"naive_{figure}"]
        row[f"{figure}_ratio"] = round(app / naive, 2) if app and naive else None
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| setting | app p95 (ms) | naive p95 (ms) | p95 ratio | app CPU (s/min) "
        "| naive CPU (s/min) | CPU ratio | device ran dry |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r["setting"]] + [
            "-" if r[key] is None else f"{r[key]}"
            for key in (
                "app_p95_ms", "naive_p95_ms", "p95_ms_ratio", "app_cpu_s_per_min",
                "naive_cpu_s_per_min", "cpu_s_per_min_ratio", "underflows",
            )
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        if r["app_p95_ms"] is None or r["app_cpu_s_per_min"] is None:
            continue
        axis.scatter(r["app_cpu_s_per_min"], r["app_p95_ms"], color="tab:blue")
        axis.annotate(r["setting"], (r["app_cpu_s_per_min"], r["app_p95_ms"]), fontsize=8,
                      xytext=(4, 4), textcoords="offset points")  # fmt: skip
        if r["naive_p95_ms"] is not None and r["naive_cpu_s_per_min"] is not None:
            axis.scatter(r["naive_cpu_s_per_min"], r["naive_p95_ms"], color="tab:orange",
                         marker="x")  # fmt: skip
            axis.plot([r["naive_cpu_s_per_min"], r["app_cpu_s_per_min"]],
                      [r["naive_p95_ms"], r["app_p95_ms"]], color="0.8", linewidth=0.8,
                      zorder=0)  # fmt: skip
    axis.scatter([], [], color="tab:blue", label="app, per setting")
    axis.scatter([], [], color="tab:orange", marker="x", label="naive client, same run")
    axis.set_xlabel("CPU seconds per minute of call")
    axis.set_ylabel("p95 round trip in the client (ms)")
    axis.set_title("latency against CPU, clean link (quick runs)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out/curve"))
    parser.add_argument("--only", nargs="*", choices=sorted(SETTINGS), help="these settings only")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [
        point(name, run_setting(name, env, args.out))
        for name, env in SETTINGS.items()
        if not args.only or name in args.only
    ]
    (args.out / "curve.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, args.out / "curve.png")
    print()
    print(table(rows))
    print(f"curve: wrote {args.out / 'curve.json'} and {args.out / 'curve.png'}")
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
