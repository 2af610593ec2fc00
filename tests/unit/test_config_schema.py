"""The settings schema: each field declared once, each rule enforced, all problems told at once.

The range and choice tests are generated from the schema itself, so a rule added there is tested
here without a line of test code; the count guards keep a broken generator from passing vacuously.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from sesame_pi.cli import main
from sesame_pi.config import Config, ConfigError, load, problems, schema
from sesame_pi.settings_schema import SECTIONS, SPEC, Setting, Spec
from support.credentials import make_pki

SETTINGS = schema()
DEV_NULL = Path("/dev/null")


def _step(item: Setting) -> float:
    """The smallest change that matters: 1 for integers, a thousandth for numbers."""
    return 1 if item.base == "int" else 0.001


def _range_cases() -> list[tuple[str, Any, Any]]:
    """(name, just inside, just outside) for each bound of each numeric range in the schema."""
    cases: list[tuple[str, Any, Any]] = []
    for item in SETTINGS:
        low, high, step = item.spec.low, item.spec.high, _step(item)
        if low is not None:
            inside, outside = (low + step, low) if item.spec.low_open else (low, low - step)
            cases.append((item.name, inside, outside))
        if high is not None:
            cases.append((item.name, high, high + step))
    return cases


RANGE_CASES = _range_cases()
CHOICE_SETTINGS = [item for item in SETTINGS if item.spec.choices]


def _about(name: str, found: list[str]) -> list[str]:
    """The sentences about one setting (each starts with the setting's name)."""
    return [problem for problem in found if problem.startswith(f"{name} ")]


def _typed(item: Setting, value: float) -> Any:
    return int(value) if item.base == "int" else float(value)


# ---------------------------------------------------------------- declared once


def test_every_field_declares_a_section_and_a_help_sentence() -> None:
    declared = [f.name for f in fields(Config) if f.name != "extra"]
    assert [item.name for item in SETTINGS] == declared
    for item in fields(Config):
        if item.name == "extra":
            continue
        spec = item.metadata.get(SPEC)
        assert isinstance(spec, Spec), f"{item.name} has no Spec"
        assert spec.section in SECTIONS, item.name
        assert len(spec.help) > 3, item.name


def test_every_section_holds_settings() -> None:
    used = {item.spec.section for item in SETTINGS}
    assert used == set(SECTIONS)


def test_a_spec_outside_the_sections_or_without_help_is_refused() -> None:
    with pytest.raises(ValueError, match="section 'gpio'"):
        Spec("gpio", "a pin")
    with pytest.raises(ValueError, match="help"):
        Spec("button", "")


def test_defaults_pass_their_own_rules() -> None:
    cfg, found = problems(Config())
    assert found == []
    assert cfg == Config()


# ---------------------------------------------------------------- ranges and choices


def test_the_schema_has_the_ranges_and_choices_it_should() -> None:
    """Guards the generated cases below: an empty parametrisation would pass silently."""
    assert len(RANGE_CASES) >= 35
    assert len(CHOICE_SETTINGS) >= 8


@pytest.mark.parametrize(("name", "inside", "outside"), RANGE_CASES)
def test_a_value_just_outside_a_range_is_refused(name: str, inside: Any, outside: Any) -> None:
    item = next(s for s in SETTINGS if s.name == name)
    with pytest.raises(ConfigError) as info:
        load(DEV_NULL, environ={item.env: str(_typed(item, outside))})
    assert len(info.value.problems) == 1, info.value.problems
    assert _about(name, info.value.problems), info.value.problems


@pytest.mark.parametrize(("name", "inside", "outside"), RANGE_CASES)
def test_a_value_just_inside_a_range_is_accepted(name: str, inside: Any, outside: Any) -> None:
    item = next(s for s in SETTINGS if s.name == name)
    value = _typed(item, inside)
    cfg, found = problems(Config(**{name: value}))
    assert _about(name, found) == []
    assert getattr(cfg, name) == value


def test_nan_is_outside_every_range() -> None:
    with pytest.raises(ConfigError) as info:
        Config().replace(hold_s=math.nan)
    assert info.value.problems == ["hold_s nan must be between 0.5 and 4.5 seconds"]


@pytest.mark.parametrize("item", CHOICE_SETTINGS, ids=lambda item: item.name)
def test_every_choice_is_accepted_and_nothing_else(item: Setting) -> None:
    for choice in item.spec.choices:
        assert getattr(Config().replace(**{item.name: choice}), item.name) == choice
    bogus = 12345 if item.base == "int" else "bogus"
    with pytest.raises(ConfigError) as info:
        Config().replace(**{item.name: bogus})
    assert info.value.problems == [
        f"{item.name} {bogus!r} is not one of {', '.join(map(str, item.spec.choices))}"
    ]


def test_log_level_is_taken_in_any_case_and_kept_in_capitals() -> None:
    assert load(DEV_NULL, environ={"SESAME_PI_LOG_LEVEL": "debug"}).log_level == "DEBUG"


@pytest.mark.parametrize(
    ("changes", "sentence"),
    [
        ({"server": "http://x"}, "server 'http://x' is not a ws:// or wss:// URL"),
        ({"server": "wss://"}, "server 'wss://' is not a ws:// or wss:// URL"),
        (
            {"server": "wss://h:99999/x"},
            "server 'wss://h:99999/x' is not a ws:// or wss:// URL (Port out of range 0-65535)",
        ),
        (
            {"server": "wss://h:abc/x"},
            "server 'wss://h:abc/x' is not a ws:// or wss:// URL "
            "(Port could not be cast to integer value as 'abc')",
        ),
        (
            {"server": "wss://[::1/x"},
            "server 'wss://[::1/x' is not a ws:// or wss:// URL (Invalid IPv6 URL)",
        ),
        # a space or a fragment passed, and the app stayed "offline" (healthy) for good
        (
            {"server": "wss://h/v1/con nect"},
            "server 'wss://h/v1/con nect' is not a ws:// or wss:// URL "
            "(it holds a space or a control character)",
        ),
        (
            {"server": "wss://h/connect#frag"},
            "server 'wss://h/connect#frag' is not a ws:// or wss:// URL "
            "(a #fragment is never sent to a server)",
        ),
        (
            {"user_agent": "Mozilla\r\nX-Evil: 1"},
            "user_agent must be one line of text without control characters",
        ),
        ({"origin": "https://a\n"}, "origin must be one line of text without control characters"),
        (
            {"timezone": "Mars/Olympus"},
            "timezone 'Mars/Olympus' is not an IANA zone such as Europe/Berlin",
        ),
        ({"timezone": "America"}, "timezone 'America' is not an IANA zone such as Europe/Berlin"),
        (
            {"ca_file": Path("/nonexistent/ca.pem")},
            "ca_file /nonexistent/ca.pem does not exist or is not a file",
        ),
        (
            {"backoff_initial_s": 40.0},
            "backoff_initial_s 40.0 must not exceed backoff_max_s 30.0",
        ),
        ({"jitter_max_ms": 79}, "jitter_max_ms 79 must be at least prebuffer_ms + frame_ms (80)"),
        ({"led_pin": 17}, "led_pin and button_pin must be different pins"),
        (
            {"setup_bind": "everywhere"},
            "setup_bind 'everywhere' is not an IP address (0.0.0.0 for every interface)",
        ),
    ],
)
def test_rules_a_range_cannot_say_are_checked(changes: dict[str, Any], sentence: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config().replace(**changes)
    assert info.value.problems == [sentence]


@pytest.mark.parametrize(
    "changes",
    [
        {"server": "ws://localhost:8765/x"},
        {"timezone": "Europe/Berlin"},
        {"backoff_initial_s": 30.0},
        {"jitter_max_ms": 80},
        {"led_pin": 12},
        {"setup_bind": "::"},
    ],
)
def test_values_those_rules_allow_pass(changes: dict[str, Any]) -> None:
    assert Config().replace(**changes) == Config(**changes)


def test_a_ca_file_must_hold_a_certificate(tmp_path: Path) -> None:
    ca = make_pki(tmp_path).ca_file
    assert Config().replace(ca_file=ca).ca_file == ca
    damaged = tmp_path / "damaged.pem"
    damaged.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ConfigError) as info:
        Config().replace(ca_file=damaged)
    assert info.value.problems == [f"ca_file {damaged} holds no PEM certificate"]


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/v1/token", "http://[::1]:8080/v1/token", "http://localhost/t"]
)
def test_a_plain_http_token_endpoint_is_taken_on_this_machine_only(url: str) -> None:
    assert Config().replace(token_endpoint=url).token_endpoint == url


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("button_pin = 17.9\n", "button_pin must be a whole number, got 17.9"),
        ("log_file = false\n", "log_file must be a path (or none), got False"),
        ("[audio]\nframe_ms = 15\n", "frame_ms 15 must be a multiple of 10"),
        (
            'token_endpoint = "securetoken.googleapis.com/v1/token"\n',
            "token_endpoint 'securetoken.googleapis.com/v1/token' is not an https://",
        ),
        (  # a refresh token in clear over the network: refused, not sent
            'token_endpoint = "http://securetoken.googleapis.com/v1/token"\n',
            "token_endpoint 'http://securetoken.googleapis.com/v1/token' would send the refresh "
            "token unencrypted: use https://",
        ),
    ],
)
def test_a_value_toml_gives_the_wrong_shape_is_refused_not_bent(
    tmp_path: Path, text: str, sentence: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path, environ={})
    assert info.value.problems[0].startswith(sentence), info.value.problems


# ---------------------------------------------------------------- all at once


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    config_file = tmp_path / "c.toml"
    config_file.write_text("buton_pin = 3\n[audio]\ncapture_rate = 12000\n")
    env = {
        "SESAME_PI_BUTTON_PIN": "41",
        "SESAME_PI_CHARACTER": "Bob",
        "SESAME_PI_FRAME_MS": "ten",
    }
    with pytest.raises(ConfigError) as info:
        load(config_file, environ=env)
    expected = {
        f"config file {config_file}: unknown setting 'buton_pin' (did you mean 'button_pin'?)",
        "frame_ms must be a whole number, got 'ten'",
        "character 'Bob' is not one of Maya, Miles",
        "capture_rate 12000 is not one of 8000, 16000, 24000, 48000",
        "button_pin 41 is not a GPIO pin (0-27)",
    }
    assert set(info.value.problems) == expected
    assert sorted(str(info.value).splitlines()) == sorted(expected)


def test_three_bad_values_make_three_sentences() -> None:
    with pytest.raises(ConfigError) as info:
        Config().replace(bounce_ms=600, hold_s=0.1, echo_cancel="loud")
    assert info.value.problems == [
        "echo_cancel 'loud' is not one of auto, webrtc, speex, off",
        "bounce_ms 600 must be between 0 and 500 ms",
        "hold_s 0.1 must be between 0.5 and 4.5 seconds",
    ]


def test_one_problem_reads_as_its_sentence() -> None:
    with pytest.raises(ConfigError) as info:
        load(DEV_NULL, environ={"SESAME_PI_BUTTON_PIN": "41"})
    assert str(info.value) == "button_pin 41 is not a GPIO pin (0-27)"
    assert info.value.problems == ["button_pin 41 is not a GPIO pin (0-27)"]


def test_a_wrongly_typed_value_is_a_sentence_not_a_crash() -> None:
    """A rule across fields stays quiet about a field with its own sentence (and does not crash)."""
    with pytest.raises(ConfigError) as info:
        Config().replace(prebuffer_ms="60", earcons="yes")
    assert info.value.problems == [
        "prebuffer_ms must be a whole number, got '60'",
        "earcons must be true or false, got 'yes'",
    ]


def test_unknown_flags_are_gathered_with_the_rest() -> None:
    with pytest.raises(ConfigError) as info:
        load(DEV_NULL, environ={}, flags={"buton": 3, "bounce_ms": "-1"})
    assert info.value.problems == [
        "unknown setting 'buton' (did you mean 'button'?)",
        "bounce_ms -1 must be between 0 and 500 ms",
    ]


def test_the_cli_prints_each_problem_on_its_own_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", "--config", "/dev/null", "--button-pin", "41", "--character", "Bob"])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        "sesame-pi: character 'Bob' is not one of Maya, Miles",
        "sesame-pi: button_pin 41 is not a GPIO pin (0-27)",
    ]


# ---------------------------------------------------------------- sesame-pi settings


def test_settings_lists_every_setting_by_section(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    headers = [out.index(f"\n[{section}]\n") for section in SECTIONS]
    assert headers == sorted(headers)
    for item in SETTINGS:
        line = next(line for line in out.splitlines() if line.startswith(f"  {item.name}  "))
        section_start = headers[SECTIONS.index(item.spec.section)]
        assert out.index(line) > section_start, item.name
        assert "default " in line and "allowed " in line, line
    assert "  bounce_ms  integer, default 50, allowed 0 to 500 ms" in out
    assert "  character  text, default Maya, allowed Maya, Miles" in out


def test_settings_json_describes_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings", "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["sections"] == list(SECTIONS)
    entries = {entry["name"]: entry for entry in described["settings"]}
    assert list(entries) == [item.name for item in SETTINGS]
    for entry in entries.values():
        assert entry["section"] in SECTIONS and entry["help"] and "`" not in entry["help"]
    assert entries["button_pin"] | {"help": ""} == {
        "name": "button_pin",
        "section": "button",
        "type": "int",
        "optional": False,
        "default": 17,
        "default_text": "17",
        "choices": [],
        "min": 0,
        "min_exclusive": False,
        "max": 27,
        "unit": "",
        "allowed": "0 to 27",
        "help": "",
        "env": "SESAME_PI_BUTTON_PIN",
    }
    assert entries["log_file"]["default"] == "/var/log/sesame-pi/events.jsonl"
    assert entries["character"]["choices"] == ["Maya", "Miles"]
