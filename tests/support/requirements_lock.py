"""app/requirements.lock, read as the tests that hold the image and pyproject.toml to it do."""

from __future__ import annotations

from pathlib import Path

from packaging.utils import canonicalize_name

LOCK = Path(__file__).resolve().parents[2] / "app" / "requirements.lock"


def locked_versions() -> dict[str, str]:
    """{canonical name: version}; a line that is not an exact `name==version` pin fails."""
    found: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version.strip(), f"not an exact pin: {line!r}"
            name = canonicalize_name(name)
            assert name not in found, f"{name} is pinned twice"
            found[name] = version.strip()
    return found
