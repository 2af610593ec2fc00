"""The README's configuration reference names every setting the app takes, and no other, and its
table is the one the settings schema generates (defaults, allowed values, help)."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import fields
from pathlib import Path
from types import ModuleType

import pytest

from sesame_pi.config import Config, schema
from sesame_pi.settings_schema import markdown_table

README = Path(__file__).resolve().parents[2] / "README.md"


def documented_settings() -> set[str]:
    text = README.read_text()
    table = text[text.index("## Configuration reference") :]
    table = table[: table.index("\n## ", 1)]
    names: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names.update(re.findall(r"`([a-z_0-9]+)`", first_cell))
    return names


def test_every_setting_is_in_the_readme_table_and_every_row_is_a_setting() -> None:
    settings = {f.name for f in fields(Config) if f.name != "extra"}
    documented = documented_settings()
    assert settings - documented == set(), "settings missing from README.md's table"
    assert documented - settings == set(), "README.md's table names settings that do not exist"


# ---------------------------------------------------------------- the table is the schema's

SCRIPT = README.parent / "app" / "scripts" / "config_table.py"


def _script() -> ModuleType:
    """app/scripts/config_table.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("config_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_table_is_the_one_the_schema_generates() -> None:
    """Defaults, allowed values and help in README.md are the schema's, row by row."""
    text = README.read_text()
    start, end = _script().table_span(text)
    documented = text[start:end].splitlines()
    generated = markdown_table(schema()).splitlines()
    for row, wanted in zip(documented, generated, strict=False):
        assert row == wanted, "README.md is stale: run .venv/bin/python app/scripts/config_table.py"
    assert len(documented) == len(generated)


def test_a_generated_row_shows_the_default_and_the_allowed_values() -> None:
    rows = markdown_table(schema()).splitlines()
    assert "| `bounce_ms` | `50` | 0 to 500 ms | debounce |" in rows
    assert (
        "| `log_level` | `INFO` | `DEBUG`, `INFO`, `WARNING`, `ERROR` | how much the log says |"
        in (rows)
    )
    assert "| **`[audio]`** | | | |" in rows


def test_the_script_rewrites_a_stale_table_and_nothing_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _script()
    current = README.read_text()
    stale = current.replace("| `bounce_ms` | `50` |", "| `bounce_ms` | `40` |")
    assert stale != current
    copy = tmp_path / "README.md"
    copy.write_text(stale)
    assert script.main(["--readme", str(copy), "--check"]) == 1
    assert copy.read_text() == stale
    assert script.main(["--readme", str(copy)]) == 0
    assert copy.read_text() == current
    assert script.main(["--readme", str(copy), "--check"]) == 0
    capsys.readouterr()
