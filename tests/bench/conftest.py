"""The bench's modules import each other by bare name, as `run.py` does; put them on the path."""

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
