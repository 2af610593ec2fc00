"""Config precedence (flags > env > file > defaults) and plain-words validation."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sesame_pi.config import Config, ConfigError, load, misspelt_environment


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
        # at the 5 s setup hold or longer, the button could never open the setup page
        ({"SESAME_PI_HOLD_S": "6"}, "hold_s 6.0 must be between 0.5 and 4.5 seconds"),
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


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        # Windows' ANSI and UTF-16: a traceback (exit 1, a container restarting for ever)
        ('timezone = "Europe/Z\xfcrich"\n'.encode("latin-1"), "is not UTF-8 text"),
        ("character = 'Maya'\n".encode("utf-16-le"), "without a byte order mark"),
        # the README's [button] section and a top-level `button =`: one key to TOML
        (b'button = "stdin"\n[button]\nbutton_pin = 22\n', "move it into [button]"),
        # set twice, once in a section: the later one won without a word
        (b"button_pin = 22\n[button]\nbutton_pin = 17\n", "'button_pin' is set twice"),
        # a list is no device name: it became the text "['USB']"
        (b'input_device = ["USB"]\n', "input_device must be"),
        (b"client_name = true\n", "client_name must be"),
    ],
)
def test_a_file_a_maker_could_write_is_refused_in_words(
    tmp_path: Path, raw: bytes, message: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(path, environ={})


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig"])
def test_a_config_saved_by_notepad_is_read(tmp_path: Path, encoding: str) -> None:
    """Notepad's "Unicode" (UTF-16 with its byte order mark) and "UTF-8 with BOM": the same
    settings as plain UTF-8 (UTF-16 was refused, though it says which it is)."""
    path = tmp_path / "c.toml"
    path.write_bytes("character = 'Maya'\n[button]\nbutton_pin = 22\n".encode(encoding))
    cfg = load(path, environ={})
    assert (cfg.character, cfg.button_pin) == ("Maya", 22)


def test_a_file_with_notepads_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b'\xef\xbb\xbftimezone = "Europe/Berlin"\n')
    assert load(path, environ={}).timezone == "Europe/Berlin"


def test_pins_with_a_leading_zero_and_an_led_on_the_unused_button_pin(tmp_path: Path) -> None:
    """`int('017', 0)` refuses a leading zero ("must be a whole number", which it is); and with a
    stdin or no button, button_pin is unused: the LED may sit on 17."""
    loaded = load(None, environ={"SESAME_PI_CONFIG": "/dev/null", "SESAME_PI_BUTTON_PIN": "04"})
    assert loaded.button_pin == 4
    for kind in ("stdin", "none"):
        environ = {"SESAME_PI_CONFIG": "/dev/null", "SESAME_PI_BUTTON": kind}
        assert load(None, environ={**environ, "SESAME_PI_LED_PIN": "17"}).led_pin == 17


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


def test_a_misspelt_variable_is_named_with_the_setting_it_nearly_is() -> None:
    """A misspelt key in the file is an error; a misspelt variable was ignored without a word.
    The build's and the tests' own SESAME_PI_ variables are no near miss of a setting."""
    environ = {
        "SESAME_PI_BUTON_PIN": "22",
        "SESAME_PI_LEDPIN": "5",
        "SESAME_PI_BUTTON_PIN": "17",
        "SESAME_PI_CONFIG": "/dev/null",
        "SESAME_PI_BOOT_CONFIG": "led_pin = 5",
        "SESAME_PI_CACHE": "/var/cache/sesame-pi",
        "SESAME_PI_SSH_PUBKEY_FILE": "key.pub",
        "SESAME_PI_NO_SKIP": "1",
    }
    assert misspelt_environment(environ) == [
        ("SESAME_PI_BUTON_PIN", "SESAME_PI_BUTTON_PIN"),
        ("SESAME_PI_LEDPIN", "SESAME_PI_LED_PIN"),
    ]


def test_an_empty_path_is_refused_by_name_not_taken_for_the_working_directory() -> None:
    """`SESAME_PI_TOKEN_FILE=` (a blank line in a compose .env): Path("") is ".", and the app
    said "cannot read token file .: Is a directory", naming neither the setting nor the cause."""
    with pytest.raises(ConfigError, match="token_file must be a path, got ''"):
        load(Path("/dev/null"), environ={"SESAME_PI_TOKEN_FILE": ""})


def test_log_backups_has_a_ceiling() -> None:
    """Each rotation looks at every backup name, on the event loop: a billion backups took an
    hour a rotation, past the stall guard's minute, and the app restarted for ever."""
    with pytest.raises(ConfigError, match="log_backups"):
        load(Path("/dev/null"), environ={"SESAME_PI_LOG_BACKUPS": "1000000000"})
    assert load(Path("/dev/null"), environ={"SESAME_PI_LOG_BACKUPS": "100"}).log_backups == 100


def test_the_api_key_stays_out_of_the_configs_repr() -> None:
    """A Config in a traceback's locals or a debug line printed the account's API key."""
    cfg = Config(firebase_api_key="AIzaSyTHISKEYISNOTTOBESHOWN")
    assert "AIzaSyTHISKEYISNOTTOBESHOWN" not in repr(cfg)
    assert "button_pin=17" in repr(cfg)
