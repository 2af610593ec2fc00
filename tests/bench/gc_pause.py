"""How long the interpreter stops for a full collection, before and after `settle_after_start`.

The app as the appliance runs it (the runtime-only venv, see `runtime_venv.py`) imports what
`sesame-pi run` imports, and the echo stage's modules (numpy; the default `echo_cancel = "auto"`
loads them at the first call), and builds its settings; then a full collection is timed several
times, those objects are frozen as the app does (before its first call, and once the echo stage
is made), and it is timed again, in the same process. Every thread that needs the GIL (the
speaker's writer keeps 25 ms in the device, the capture callback comes every 20 ms) waits that
long.

    .venv/bin/python tests/bench/gc_pause.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_venv import runtime_python

CHILD = r"""
import gc, json, sys, time
import sesame_pi.app, sesame_pi.cli, sesame_pi.audio, sesame_pi.session, sesame_pi.link
import gpiozero, pyaudio, jwt, tenacity, websockets.asyncio.client
import sesame_pi.echo, numpy
from sesame_pi.config import Config
from sesame_pi.heap import settle_after_start
cfg = Config()
repeat = int(sys.argv[1])

def full_collections():
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - began) * 1000)
    return {"walked": len(gc.get_objects()), "ms": times}

before = full_collections()
settle_after_start()
after = full_collections()
print(json.dumps({"before": before, "after": after, "frozen": gc.get_freeze_count()}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9, help="full collections timed each way")
    args = parser.parse_args()
    python = runtime_python(Path("bench-out"))
    out = subprocess.run(
        [str(python), "-c", CHILD, str(args.repeat)], check=True, capture_output=True, text=True
    ).stdout
    figures = json.loads(out)
    rows = []
    for name in ("before", "after"):
        times = figures[name]["ms"]
        rows.append((name, figures[name]["walked"], statistics.median(times), max(times)))
    print(f"{'full collection':<34} {'objects walked':>14} {'median ms':>10} {'max ms':>8}")
    labels = {"before": "start-up's objects walked", "after": "after settle_after_start"}
    for name, walked, median, longest in rows:
        print(f"{labels[name]:<34} {walked:>14} {median:>10.2f} {longest:>8.2f}")
    ratio = rows[1][2] / rows[0][2] if rows[0][2] else float("nan")
    print(f"after / before (median): {ratio:.3f}; frozen objects: {figures['frozen']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
