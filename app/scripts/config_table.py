#!/usr/bin/env python3
"""Write README.md's configuration table from the settings schema; --check only says if it differs.

The table is generated, not written by hand, so the README cannot disagree with what `sesame-pi run`
accepts; tests/unit/test_readme_config.py fails when a schema change was not followed by a run of
this script (`.venv/bin/python app/scripts/config_table.py`). Only the table's lines are touched.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sesame_pi.config import schema
from sesame_pi.settings_schema import markdown_table

README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "\n## Configuration reference\n"
HEADER_ROW = "| setting |"


def table_span(text: str) -> tuple[int, int]:
    """Where the table sits: from its header row to the first line that is not a row."""
    start = text.index("\n" + HEADER_ROW, text.index(HEADING)) + 1
    end = start
    while text.startswith("|", end):
        end = text.index("\n", end) + 1
    return start, end


def with_table(text: str) -> str:
    """`text` with the configuration table replaced by the generated one."""
    start, end = table_span(text)
    return text[:start] + markdown_table(schema()) + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--check", action="store_true", help="exit 1 if the table is stale")
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    wanted = with_table(text)
    if wanted == text:
        return 0
    if args.check:
        print(f"{args.readme}: the configuration table is stale; run {__file__}", file=sys.stderr)
        return 1
    args.readme.write_text(wanted, encoding="utf-8")
    print(f"{args.readme}: configuration table written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
