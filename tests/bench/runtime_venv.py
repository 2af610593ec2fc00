"""The app as the appliance runs it: a virtualenv with its runtime dependencies only.

The development venv also holds the test tools, and some of them change what the app loads:
with `cryptography` installed (trustme needs it), PyJWT imports it at start and the app's RSS grows
by some 10 MB that a Pi never sees (the container image has no `cryptography`). So the benchmark
measures the app in a venv made from `app/pyproject.toml` alone, cached by that file's hash; the
package is installed editable, so a source change needs no rebuild.

The appliance's image compiles the app's bytecode when it is built (`compileall` in the
Dockerfile), so the benchmark does the same before each run: the app's modules are then loaded from
`__pycache__` as on a Pi, not compiled from source at every start (this machine's environment sets
PYTHONDONTWRITEBYTECODE, so nothing else would write them). Compiling at start cost the app about
1 MB of peak RSS that the appliance never pays: the compiler's working memory, freed but resident.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SESAME_PI_CACHE", "/var/cache/sesame-pi"))


def runtime_python(fallback_dir: Path) -> Path:
    """The interpreter of the runtime-only venv, made on first use (about a minute)."""
    # The venv installs this checkout in editable mode: key it by the checkout's path too, or a
    # second clone with the same pyproject.toml would run the first clone's code.
    pyproject = (REPO / "app" / "pyproject.toml").read_bytes()
    key = hashlib.sha256(pyproject + str(REPO).encode()).hexdigest()[:12]
    base = CACHE if os.access(CACHE, os.W_OK) or not CACHE.exists() else fallback_dir
    venv = base / "bench-venv" / f"runtime-{key}"
    python = venv / "bin" / "python"
    ready = venv / ".ready"
    if not (ready.exists() and python.exists()):
        _make_venv(venv, python)
        ready.touch()
    compile_bytecode(python)
    return python


def compile_bytecode(python: Path) -> None:
    """Write the app's `__pycache__` (only files changed since the last run are compiled)."""
    package = REPO / "app" / "src" / "sesame_pi"
    subprocess.run([str(python), "-m", "compileall", "-q", str(package)], check=True)


def _make_venv(venv: Path, python: Path) -> None:
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-e", str(REPO / "app")],
        check=True,
    )  # fmt: skip
