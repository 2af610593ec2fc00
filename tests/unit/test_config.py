"""Config precedence (flags > env > file > defaults) and plain-words validation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sesame_pi.config import Config, ConfigError, load


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_match_the_web_client(tmp_path: Path) -> None:
    cfg = load(write(tmp_path / "c.toml", ""), environ={})
    assert cfg.server == "wss://sesameai.app/agent-service-0/v1/connect"
    assert cfg.client_name == "Consumer-Web-App"
    assert cfg.origin == "https://app.sesame.com"
    assert cfg.button_pin == 17 and cfg.button_pull == "down"
    assert cfg.bounce_ms == 50 and cfg.hold_s == 2.0
    assert cfg.ping_interval_s == 0.5
    assert cfg.reconnect_flag is False


def test_flags_beat_env_beat_file(tmp_path: Path) -> None:
    config_file = write(
        tmp_path / "c.toml",
        'character = "Miles"\nbutton_pin = 22\n[audio]\nframe_ms = 10\n',
    )
    env = {"SESAME_PI_BUTTON_PIN": "23", "SESAME_PI_CHARACTER": "Maya"}
    cfg = load(config_file, environ=env, flags={"character": "Miles", "log_file": None})
    assert cfg.character == "Miles"  # flag
    assert cfg.button_pin == 23  # env over file
    assert cfg.frame_ms == 10  # file, from a [section]


def test_missing_default_file_is_fine_but_an_explicit_one_is_not(
    tmp_path: Path,
) -> None:
    assert isinstance(load(None, environ={"SESAME_PI_TIMEZONE": "Europe/Berlin"}), Config)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(tmp_path / "absent.toml", environ={})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SESAME_PI_BUTTON_PIN": "41"}, "button_pin 41 is not a GPIO pin"),
        ({"SESAME_PI_CHARACTER": "Bob"}, "character 'Bob' is not one of Maya, Miles"),
        ({"SESAME_PI_SERVER": "http://x"}, "is not a ws:// or wss:// URL"),
        ({"SESAME_PI_TIMEZONE": "Mars/Olympus"}, "is not an IANA zone"),
        ({"SESAME_PI_FRAME_MS": "ten"}, "frame_ms must be a whole number"),
        ({"SESAME_PI_BUTTON_PULL": "sideways"}, "button_pull 'sideways'"),
        ({"SESAME_PI_EARCON_VOLUME": "3"}, "earcon_volume 3.0 must be between 0 and 1"),
        ({"SESAME_PI_LED_PIN": "17"}, "led_pin and button_pin must be different"),
        # an hour or more before an hour-long token's end: a refresh on every look, for ever
        ({"SESAME_PI_REFRESH_BEFORE_S": "3600"}, "refresh_before_s 3600.0 must be between 0"),
        ({"SESAME_PI_REFRESH_BEFORE_S": "inf"}, "refresh_before_s inf must be between 0"),
        (
            {"SESAME_PI_CA_FILE": "/nonexistent/ca.pem"},
            "ca_file /nonexistent/ca.pem does not exist",
        ),
    ],
)
def test_bad_values_are_named_in_plain_words(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(None, environ={"SESAME_PI_CONFIG": "/dev/null", **env})
    assert message in str(info.value)


def test_unknown_setting_in_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting 'buton_pin'"):
        load(write(tmp_path / "c.toml", "buton_pin = 3\n"), environ={})


def test_bad_toml_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(tmp_path / "c.toml", "character = \n"), environ={})


def test_cli_exits_2_with_the_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sesame_pi.cli",
            "run",
            "--config",
            "/dev/null",
            "--button-pin",
            "41",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "button_pin 41 is not a GPIO pin" in result.stderr
