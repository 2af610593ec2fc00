"""The README's configuration reference names every setting the app takes, and no other."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from sesame_pi.config import Config

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
