"""Figures the fault tests measure: a table at the session's end and bench-out/faults.json."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT_FILE = REPO / "bench-out" / "faults.json"


@dataclass(frozen=True)
class Figure:
    name: str
    value: float | int | str
    unit: str
    test: str
    limit: str = ""


class Figures:
    """What the tests measured this session, in the order they measured it."""

    def __init__(self) -> None:
        self.items: list[Figure] = []

    def record(
        self, test: str, name: str, value: float | int | str, unit: str = "", limit: str = ""
    ) -> None:
        if isinstance(value, float):
            value = round(value, 3)
        self.items.append(Figure(name, value, unit, test, limit))

    def table(self) -> list[str]:
        if not self.items:
            return ["(no figures: no fault test ran far enough to measure)"]
        width = max(len(f.name) for f in self.items)
        lines = [f"{'figure':<{width}}  {'value':>12}  {'unit':<6}  {'limit':<12}  test"]
        for f in self.items:
            lines.append(
                f"{f.name:<{width}}  {f.value!s:>12}  {f.unit:<6}  {f.limit:<12}  {f.test}"
            )
        return lines

    def write(self, path: Path = OUT_FILE) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"platform": platform.platform(), "python": platform.python_version()},
            "figures": [asdict(f) for f in self.items],
        }
        path.write_text(json.dumps(body, indent=2) + "\n")
        return path


FIGURES = Figures()
