"""Each setting's section, help and allowed values, declared once beside its Config field.

config.Config declares every field with `field(default=..., metadata={SPEC: Spec(...)})`.
Validation, `sesame-pi settings`, the README's configuration table and the setup page's form all
read these Specs, so a range or a help sentence cannot say one thing in the code and another in the
documentation.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import Field, dataclass, field
from pathlib import PurePath
from typing import Any

# The README's and the TOML file's sections, in the order they are shown.
SECTIONS = ("service", "auth", "link", "audio", "button", "logging", "setup")
SPEC = "spec"  # the key of a Spec in a Config field's metadata
# A name's suffix says its unit: (short form for tables, long form for sentences).
_UNITS = {"_s": ("s", "seconds"), "_ms": ("ms", "ms"), "_bytes": ("bytes", "bytes")}
_TYPE_NAMES = {"str": "text", "int": "integer", "float": "number", "bool": "true or false"}
_KIND_IN_A_SENTENCE = {
    "str": "text",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "Path": "a path",
}


@dataclass(frozen=True)
class Spec:
    """What one setting is for and which values it takes.

    `check` sees the whole Config, for the rules a range cannot say (a URL's shape, two fields that
    must differ); it returns a sentence or None, and `allowed` says the same rule to a person. It
    runs only once this setting and the ones named in `reads` passed their own rules.
    """

    section: str
    help: str
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the low bound itself is refused (a timeout of 0 is no timeout)
    allowed: str = ""
    check: Callable[[Any], str | None] | None = None
    reads: tuple[str, ...] = ()  # the other settings `check` reads
    normalise: Callable[[Any], Any] | None = None
    shown_default: str | None = None  # for defaults too long or too indirect to print
    message: str | None = None  # the range sentence, when a plainer one exists ("not a GPIO pin")

    def __post_init__(self) -> None:
        if self.section not in SECTIONS:
            raise ValueError(f"section {self.section!r} is not one of {', '.join(SECTIONS)}")
        if not self.help:
            raise ValueError("every setting needs a help sentence")


def setting(default: Any, section: str, help_text: str, *, shown: bool = True, **rule: Any) -> Any:
    """A Config field with its Spec: `name: int = setting(50, "button", "debounce", low=0)`.
    `shown=False` keeps the value out of the Config's repr (a key in a traceback's locals)."""
    return field(default=default, repr=shown, metadata={SPEC: Spec(section, help_text, **rule)})


def number(value: float) -> str:
    """A bound or a default as a person writes it: 300 rather than 300.0, 1048576 not 1.04e+06."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class Setting:
    """One Config field: its name, declared type, default and Spec."""

    name: str
    kind: str  # the annotation as written: "int", "Path | None", ...
    default: Any
    spec: Spec

    @classmethod
    def of(cls, item: Field[Any]) -> Setting | None:
        """The Setting a dataclass field declares, or None for a field outside the schema."""
        spec = item.metadata.get(SPEC)
        if not isinstance(spec, Spec):
            return None
        return cls(item.name, str(item.type), item.default, spec)

    @property
    def base(self) -> str:
        """The type without `| None`: str, int, float, bool or Path."""
        return self.kind.split(" ")[0]

    @property
    def optional(self) -> bool:
        return "None" in self.kind

    @property
    def env(self) -> str:
        return "SESAME_PI_" + self.name.upper()

    def unit(self, long: bool = False) -> str:
        for suffix, names in _UNITS.items():
            if self.name.endswith(suffix):
                return names[1] if long else names[0]
        return ""

    def type_problem(self, value: Any) -> str:
        """The sentence for a value of the wrong type (also `_coerce`'s, so both read alike)."""
        kind = _KIND_IN_A_SENTENCE.get(self.base, self.base)
        return f"{self.name} must be {kind}{' (or none)' if self.optional else ''}, got {value!r}"

    def type_ok(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.base == "bool":
            return isinstance(value, bool)
        if isinstance(value, bool):
            return False
        if self.base == "int":
            return isinstance(value, int)
        if self.base == "float":
            return isinstance(value, int | float)
        if self.base == "Path":
            return isinstance(value, PurePath)
        return isinstance(value, str)

    def problem(self, value: Any) -> str | None:
        """The one sentence saying why `value` is refused by type, choices or range, or None.

        The value is checked as normalised ("debug" as "DEBUG") but named as given.
        """
        if not self.type_ok(value):
            return self.type_problem(value)
        if value is None:
            return None
        taken = value if self.spec.normalise is None else self.spec.normalise(value)
        if self.spec.choices and taken not in self.spec.choices:
            listed = ", ".join(str(choice) for choice in self.spec.choices)
            return f"{self.name} {value!r} is not one of {listed}"
        if not self.in_range(taken):
            return self.range_problem(value)
        return None

    def in_range(self, value: float) -> bool:
        """Whether `value` is within bounds; NaN never is."""
        low, high = self.spec.low, self.spec.high
        if (low is not None or high is not None) and math.isnan(value):
            return False
        if low is not None and (value <= low if self.spec.low_open else value < low):
            return False
        return high is None or value <= high

    def range_problem(self, value: float) -> str:
        if self.spec.message:
            return self.spec.message.format(name=self.name, value=value)
        unit = f" {self.unit(long=True)}" if self.unit() else ""
        return f"{self.name} {value} must be {self._bounds('and')}{unit}"

    def _bounds(self, joiner: str) -> str:
        """The bounds in words: `between 5 and 64`, `at least 4096`, `more than 0 and at most 9`."""
        low, high, spec = self.spec.low, self.spec.high, self.spec
        if low is not None and high is not None and not spec.low_open:
            return f"between {number(low)} {joiner} {number(high)}"
        words = []
        if low is not None:
            words.append(f"{'more than' if spec.low_open else 'at least'} {number(low)}")
        if high is not None:
            words.append(f"at most {number(high)}")
        return f" {joiner} ".join(words)

    def allowed_text(self) -> str:
        """The values taken, for a person (Markdown: values in backticks)."""
        parts: list[str] = []
        if self.spec.choices:
            parts.append(", ".join(f"`{choice}`" for choice in self.spec.choices))
        elif self.spec.low is not None or self.spec.high is not None:
            parts.append(self._range_text())
        elif not self.spec.allowed:
            parts.append(_kind_text(self.base))
        if self.spec.allowed:
            parts.append(self.spec.allowed)
        if self.optional:
            parts.append("or `none`")
        return ", ".join(parts)

    def _range_text(self) -> str:
        unit = f" {self.unit()}" if self.unit() else ""
        low, high = self.spec.low, self.spec.high
        if low is not None and high is not None and not self.spec.low_open:
            return f"{number(low)} to {number(high)}{unit}"
        return self._bounds("and") + unit

    def default_text(self) -> str:
        """The default, for a person (Markdown)."""
        if self.spec.shown_default is not None:
            return self.spec.shown_default
        return value_text(self.default)


def value_text(value: Any) -> str:
    """A value as the TOML file would hold it, in backticks; `none` and `empty` as words."""
    if value is None:
        return "none"
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int | float):
        return f"`{number(value)}`"
    return f"`{value}`"


def _kind_text(base: str) -> str:
    if base == "Path":
        return "a file path"
    if base == "bool":
        return "`true` or `false`"
    return "any text"


def plain(text: str) -> str:
    """Markdown's backticks dropped, for a terminal."""
    return text.replace("`", "")


# ---------------------------------------------------------------- the schema shown to people


def type_name(item: Setting) -> str:
    name = "path" if item.base == "Path" else _TYPE_NAMES.get(item.base, item.base)
    return f"{name} or none" if item.optional else name


def by_section(settings: Sequence[Setting]) -> list[tuple[str, list[Setting]]]:
    """The settings grouped in SECTIONS order, each group in declaration order."""
    return [(name, [s for s in settings if s.spec.section == name]) for name in SECTIONS]


def text(settings: Sequence[Setting]) -> str:
    """`sesame-pi settings`: every setting by section, with type, default, allowed values, help."""
    lines = [
        "Each setting is a key in the TOML config file (at the top level or in any [section])",
        "and an environment variable SESAME_PI_<NAME>; the environment wins over the file.",
    ]
    for section, items in by_section(settings):
        lines += ["", f"[{section}]"]
        for item in items:
            lines.append(
                f"  {item.name}  {type_name(item)}, default {plain(item.default_text())}, "
                f"allowed {plain(item.allowed_text())}"
            )
            lines += textwrap.wrap(
                plain(item.spec.help), width=100, initial_indent=" " * 6, subsequent_indent=" " * 6
            )
    return "\n".join(lines) + "\n"


def _json_value(value: Any) -> Any:
    return str(value) if isinstance(value, PurePath) else value


def as_json(settings: Sequence[Setting]) -> dict[str, Any]:
    """The schema for machines (the setup page's form): plain values, no Markdown."""
    return {
        "sections": list(SECTIONS),
        "settings": [
            {
                "name": item.name,
                "section": item.spec.section,
                "type": "path" if item.base == "Path" else item.base,
                "optional": item.optional,
                "default": _json_value(item.default),
                "default_text": plain(item.default_text()),
                "choices": list(item.spec.choices),
                "min": item.spec.low,
                "min_exclusive": item.spec.low_open,
                "max": item.spec.high,
                "unit": item.unit(),
                "allowed": plain(item.allowed_text()),
                "help": plain(item.spec.help),
                "env": item.env,
            }
            for item in settings
        ],
    }


def markdown_table(settings: Sequence[Setting]) -> str:
    """README.md's configuration table (app/scripts/config_table.py writes it there)."""
    lines = ["| setting | default | allowed | what it does |", "|---|---|---|---|"]
    for section, items in by_section(settings):
        lines.append(f"| **`[{section}]`** | | | |")
        lines += [
            f"| `{i.name}` | {i.default_text()} | {i.allowed_text()} | {i.spec.help} |"
            for i in items
        ]
    return "\n".join(lines) + "\n"
