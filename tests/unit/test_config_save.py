"""config.save: validated first, written whole by rename, read back by load as it was meant."""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sesame_pi import config
from sesame_pi.config import Config, ConfigError, load, save, schema, toml_text

OLD_TEXT = "# by hand\ncharacter = 'Miles'\n[audio]\nframe_ms = 10\n"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(OLD_TEXT)
    return path


@pytest.fixture
def umask_077() -> Iterator[None]:
    """A strict umask, which the saved file's mode must not depend on."""
    old = os.umask(0o077)
    yield
    os.umask(old)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != "config.toml")


def test_saved_values_load_back(config_file: Path) -> None:
    changes: dict[str, Any] = {
        "button_pin": 22,
        "button_pull": "up",
        "led_pin": "12",
        "earcon_volume": 0.2,
        "earcons": False,
        "timezone": "Europe/Berlin",
        "log_file": None,
        "log_level": "debug",
        "input_device": 'hw:"USB"\\0 \t\u00e9\x01',
        "token_file": config_file.parent / "token",
    }
    saved = save(changes, config_file)
    loaded = load(config_file, environ={})
    assert loaded == saved
    assert loaded.character == "Miles" and loaded.frame_ms == 10  # kept from the old file
    assert loaded.button_pin == 22 and loaded.led_pin == 12 and loaded.earcons is False
    assert loaded.log_file is None and loaded.log_level == "DEBUG"
    assert loaded.input_device == 'hw:"USB"\\0 \t\u00e9\x01'
    assert loaded.token_file == config_file.parent / "token"


def test_every_default_survives_a_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    save({item.name: item.default for item in schema()}, path)
    assert load(path, environ={}) == Config()


def test_the_file_is_grouped_by_section(config_file: Path) -> None:
    save({"button_pin": 22, "setup_port": 9000, "ca_file": None}, config_file)
    data = tomllib.loads(config_file.read_text())
    assert data == {
        "service": {"character": "Miles"},
        "audio": {"frame_ms": 10},
        "button": {"button_pin": 22},
        "setup": {"setup_port": 9000},
    }


def test_a_refused_value_leaves_the_file_byte_identical(config_file: Path) -> None:
    before = config_file.read_bytes()
    with pytest.raises(ConfigError) as info:
        save({"button_pin": 41, "character": "Bob", "frame_ms": "ten"}, config_file)
    assert info.value.problems == [
        "frame_ms must be a whole number, got 'ten'",
        "character 'Bob' is not one of Maya, Miles",
        "button_pin 41 is not a GPIO pin (0-27)",
    ]
    assert config_file.read_bytes() == before
    assert _leftovers(config_file.parent) == []


def test_an_unknown_setting_is_refused(config_file: Path) -> None:
    before = config_file.read_bytes()
    with pytest.raises(ConfigError, match="unknown setting 'buton_pin'"):
        save({"buton_pin": 3}, config_file)
    assert config_file.read_bytes() == before


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = config_file.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(config.os, "fsync", disk_full)
    with pytest.raises(ConfigError, match=r"cannot write config file .*: No space left"):
        save({"button_pin": 22}, config_file)
    assert config_file.read_bytes() == before
    assert _leftovers(config_file.parent) == []


def test_a_new_file_is_0644_whatever_the_umask(tmp_path: Path, umask_077: None) -> None:
    path = tmp_path / "config.toml"
    save({"character": "Miles"}, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert load(path, environ={}).character == "Miles"


def test_an_existing_file_keeps_its_mode(config_file: Path) -> None:
    config_file.chmod(0o640)  # neither mkstemp's 0600 nor the new-file 0644
    save({"button_pin": 22}, config_file)
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o640


def test_a_symlinked_file_is_replaced_where_it_lives(tmp_path: Path) -> None:
    target = tmp_path / "real.toml"
    target.write_text(OLD_TEXT)
    link = tmp_path / "config.toml"
    link.symlink_to(target)
    save({"button_pin": 22}, link)
    assert link.is_symlink()
    assert load(target, environ={}).button_pin == 22


def test_an_unwritable_directory_is_a_sentence(tmp_path: Path) -> None:
    missing = tmp_path / "absent" / "config.toml"
    with pytest.raises(ConfigError, match="cannot write config file"):
        save({"button_pin": 22}, missing)


def test_toml_text_escapes_what_toml_needs_escaped() -> None:
    text = toml_text({"input_device": 'a"b\\c\nd\x7f', "hold_s": 2.5, "earcons": True})
    assert tomllib.loads(text) == {
        "audio": {"input_device": 'a"b\\c\nd\x7f'},
        "button": {"hold_s": 2.5, "earcons": True},
    }
