"""The goals, the printed table, results.json and latency.png. Figures in, nothing measured here.

A goal is `pass` or `miss` against the measured number, `n/a` when its measurement failed; no goal
changes the exit code unless `--strict` asks for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


@dataclass(frozen=True)
class Goal:
    name: str
    limit: float
    unit: str
    path: tuple[str, ...]  # where the figure sits in the results
    per: tuple[str, ...] = ()  # if given: the goal is on the ratio to this figure (same run)

    def value(self, results: dict[str, Any]) -> float | None:
        value = _number(results, self.path)
        if not self.per or value is None:
            return value
        base = _number(results, self.per)
        return value / base if base else None

    def judge(self, results: dict[str, Any]) -> dict[str, Any]:
        value = self.value(results)
        verdict = "n/a" if value is None else ("pass" if value <= self.limit else "miss")
        return {"goal": self.name, "value": value, "limit": self.limit, "unit": self.unit,
                "result": verdict}  # fmt: skip


def _number(results: dict[str, Any], path: tuple[str, ...]) -> float | None:
    node = _get(results, *path)
    return float(node) if isinstance(node, int | float) else None


# The app against the naive client measured in the same run: a ratio survives a noisy machine.
GOALS = (
    Goal(
        "p95 round trip vs naive",
        1.0,
        "x",
        ("latency", "app", "round_trip", "p95"),
        ("latency", "naive", "round_trip", "p95"),
    ),
    Goal("underruns at 20+/-10 ms jitter", 0, "", ("jitter", "audible_underruns")),
    Goal(
        "CPU vs naive",
        1.0,
        "x",
        ("usage", "app", "cpu_s_per_min"),
        ("usage", "naive", "cpu_s_per_min"),
    ),
    Goal("peak RSS", 57, "MB", ("usage", "app", "peak_rss_mb")),
    Goal("press to live (median)", 300, "ms", ("press_to_live", "median_press_to_live_ms")),
    Goal("back in service (median)", 2000, "ms", ("back_in_service", "median_restart_to_live_ms")),
)


def judge(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [goal.judge(results) for goal in GOALS]


def _get(results: dict[str, Any], *path: str) -> Any:
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ratio(a: Any, b: Any) -> str:
    if isinstance(a, int | float) and isinstance(b, int | float) and b:
        return f"{a / b:.2f}x"
    return "-"


def _triple(summary: Any) -> str:
    if not isinstance(summary, dict) or not summary.get("count"):
        return "-"
    return f"{_fmt(summary['p50'])} / {_fmt(summary['p95'])} / {_fmt(summary['max'])}"


def table(results: dict[str, Any]) -> str:
    """The human-readable summary: app beside the naive baseline, goal and verdict."""
    verdicts = {v["goal"]: v for v in results.get("goals", [])}
    rows: list[tuple[str, ...]] = [("figure", "app", "naive", "app/naive", "goal", "result")]

    def row(name: str, app: str, naive: str = "", ratio: str = "", goal: str = "") -> None:
        found = verdicts.get(goal)
        if found is None:
            rows.append((name, app, naive, ratio, "", ""))
            return
        limit = f"<= {found['limit']:g} {found['unit']}".strip()
        rows.append((name, app, naive, ratio, limit, found["result"]))

    lat = results.get("latency") or {}
    app_lat, naive_lat = lat.get("app") or {}, lat.get("naive") or {}
    app_use = _get(results, "usage", "app") or {}
    naive_use = _get(results, "usage", "naive") or {}
    press = results.get("press_to_live") or {}
    back = results.get("back_in_service") or {}
    jitter = results.get("jitter") or {}

    row(
        "round trip in client, p50/p95/max (ms)",
        _triple(app_lat.get("round_trip")),
        _triple(naive_lat.get("round_trip")),
        _ratio(_get(app_lat, "round_trip", "p95"), _get(naive_lat, "round_trip", "p95")) + " (p95)",
        "p95 round trip vs naive",
    )
    row("  harness floor: shortest loopback (ms)", _triple(lat.get("floor")))
    check = lat.get("tap_check") or {}
    row(f"  tap check: {check.get('loopback_ms', '-')} ms loopback measured as", _triple(check))
    row(
        "  beyond the floor's median (ms)",
        _triple(app_lat.get("over_floor")),
        _triple(naive_lat.get("over_floor")),
    )
    row(
        "CPU per minute of duplex audio (s)",
        _fmt(app_use.get("cpu_s_per_min"), 2),
        _fmt(naive_use.get("cpu_s_per_min"), 2),
        _ratio(app_use.get("cpu_s_per_min"), naive_use.get("cpu_s_per_min")),
        "CPU vs naive",
    )
    row(
        "peak RSS (MB)",
        _fmt(app_use.get("peak_rss_mb")),
        _fmt(naive_use.get("peak_rss_mb")),
        _ratio(app_use.get("peak_rss_mb"), naive_use.get("peak_rss_mb")),
        "peak RSS",
    )
    row("press to live, median (ms)", _fmt(press.get("median_press_to_live_ms")),
        goal="press to live (median)")  # fmt: skip
    row("  press to first frame at server (ms)",
        _fmt(press.get("median_press_to_first_frame_at_server_ms")))  # fmt: skip
    row("back in service, median (ms)", _fmt(back.get("median_restart_to_live_ms")),
        goal="back in service (median)")  # fmt: skip
    row("  of which the server was down (ms)", _fmt(back.get("median_outage_ms")))
    naive_jitter = jitter.get("naive") or {}
    row(f"underruns in a {_fmt(jitter.get('call_s'), 0)} s call, 20+/-10 ms",
        _fmt(jitter.get("audible_underruns")), _fmt(naive_jitter.get("underruns")),
        goal="underruns at 20+/-10 ms jitter")  # fmt: skip
    row("  playout buffer / device ran dry", f"{_fmt(jitter.get('underruns'))} / "
        f"{_fmt(jitter.get('device_underflows'))}")  # fmt: skip
    row("  overruns", _fmt(jitter.get("overruns")))
    row("  jitter made by", str(jitter.get("link", "-")))
    row("  round trip incl. network (ms)", _triple(jitter.get("round_trip_ms")),
        _triple(naive_jitter.get("round_trip_ms")))  # fmt: skip

    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    violations = results.get("standin_violations") or []
    if violations:
        lines.append(f"stand-in saw {len(violations)} protocol violation(s): {violations[:3]}")
    errors = results.get("errors") or {}
    lines += [f"ERROR in {name}: {text}" for name, text in errors.items()]
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")


def write_bursts(times_s: list[float], delays_ms: list[float | None], path: Path) -> None:
    """Every burst of a run: when it went into the microphone, and its delay (empty: lost)."""
    lines = ["mic_time_s,delay_ms"]
    lines += [
        f"{t:.4f},{'' if d is None else f'{d:.2f}'}"
        for t, d in zip(times_s, delays_ms, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")


Series = tuple[list[float], list[float]]  # burst times in s from the first burst, delays in ms


def plot(series: dict[str, Series], jitter: dict[str, Series], path: Path, title: str) -> None:
    """Per-burst delay over the call and its distribution, one line per client; and each
    client's round trip (network included) over the long call on the jittery link."""
    figure, (over_time, cdf, jittery) = plt.subplots(1, 3, figsize=(17, 4.5))
    for label, (times, delays) in series.items():
        if not delays:
            continue
        over_time.plot(times, delays, ".", markersize=3, label=label)
        ordered = sorted(delays)
        share = [(i + 1) / len(ordered) for i in range(len(ordered))]
        cdf.step(ordered, share, where="post", label=label)
    over_time.set_xlabel("time of burst in its run (s)")
    over_time.set_ylabel("delay (ms)")
    over_time.set_title("each burst")
    cdf.set_xlabel("delay (ms)")
    cdf.set_ylabel("share of bursts at or below")
    cdf.set_title("distribution")
    for label, (times, delays) in jitter.items():
        if delays:
            jittery.plot(times, delays, ".", markersize=2, label=f"{label}, network included")
    jittery.set_xlabel("time of burst in the call (s)")
    jittery.set_ylabel("delay (ms)")
    jittery.set_title("over the 20 +/- 10 ms link")
    for axis in (over_time, cdf, jittery):
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
