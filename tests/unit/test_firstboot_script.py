"""The first-boot script on this machine's bash, against a scratch boot partition and /etc: what a
maker's Notepad or Finder leaves there. (tests/system/test_image.py runs it in the image's root.)"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "image/stage-sesame/01-firstboot/files/sesame-pi-firstboot.sh"
BOM = b"\xef\xbb\xbf"


@pytest.fixture
def card(tmp_path: Path) -> tuple[Path, Path]:
    boot, etc = tmp_path / "boot", tmp_path / "etc"
    (boot / "sesame-pi").mkdir(parents=True)
    etc.mkdir()
    return boot, etc


def first_boot(boot: Path, etc: Path) -> str:
    env = {
        **os.environ,
        "BOOT_DIR": str(boot),
        "ETC_DIR": str(etc),
        "SESAME_PI_UID": str(os.getuid()),
        "SESAME_PI_GID": str(os.getgid()),
        "CONFIG_CHECK_DIR": str(REPO / "app/src"),  # the app's config module, as on the image
    }
    done = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout + done.stderr


def test_a_notepad_config_with_a_byte_order_mark_is_moved_without_it(
    card: tuple[Path, Path],
) -> None:
    boot, etc = card
    (boot / "sesame-pi/config.toml.txt").write_bytes(BOM + b'character = "Miles"\r\n')
    first_boot(boot, etc)
    assert (etc / "config.toml").read_bytes() == b'character = "Miles"\r\n'
    assert not (boot / "sesame-pi").exists()


def test_a_config_toml_cannot_read_stays_on_the_card_and_the_old_one_is_kept(
    card: tuple[Path, Path],
) -> None:
    boot, etc = card
    (etc / "config.toml").write_text('character = "Maya"\n')
    (boot / "sesame-pi/config.toml").write_text("character = Miles\n")  # no quotes
    log = first_boot(boot, etc)
    assert (etc / "config.toml").read_text() == 'character = "Maya"\n'
    assert (boot / "sesame-pi/config.toml").exists()
    assert "is not valid TOML" in log
    assert "not valid TOML" in (boot / "sesame-pi/config-error.txt").read_text()


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ('buton_pull = "up"\n', "unknown setting 'buton_pull' (did you mean 'button_pull'?)"),
        ("button_pin = 41\n", "button_pin 41 is not a GPIO pin (0-27)"),
    ],
)
def test_a_config_the_app_would_refuse_stays_on_the_card_with_a_note(
    card: tuple[Path, Path], written: str, said: str
) -> None:
    """Valid TOML with a misspelt key or a value out of range was installed, and the app then
    refused it at every start: restarted for ever, with no LED, earcon or setup page to say
    why. The app's own check runs first now: the file stays on the card, and a note beside it
    says what is wrong, where the maker looks next."""
    boot, etc = card
    (etc / "config.toml").write_text('character = "Maya"\n')
    (boot / "sesame-pi/config.toml").write_text(written)
    log = first_boot(boot, etc)
    assert (etc / "config.toml").read_text() == 'character = "Maya"\n'
    assert (boot / "sesame-pi/config.toml").read_text() == written
    note = (boot / "sesame-pi/config-error.txt").read_text()
    assert said in note and said in log
    assert ".XXXX" not in note and str(etc) not in note, note

    (boot / "sesame-pi/config.toml").write_text('button_pull = "up"\n')  # fixed
    first_boot(boot, etc)
    assert (etc / "config.toml").read_text() == 'button_pull = "up"\n'
    assert not (boot / "sesame-pi").exists(), "the note went with the file it was about"


def test_of_two_copies_the_newer_is_moved_and_the_older_deleted(card: tuple[Path, Path]) -> None:
    boot, etc = card
    older, newer = boot / "sesame-pi/auth.json", boot / "sesame-pi/auth.json.txt"
    older.write_text('{"old": true}\n')
    newer.write_text('{"new": true}\n')
    past = time.time() - 600
    os.utime(older, (past, past))
    log = first_boot(boot, etc)
    assert (etc / "auth.pending.json").read_text() == '{"new": true}\n'
    assert not older.exists() and not newer.exists() and not (boot / "sesame-pi").exists()
    assert "deleted auth.json from" in log and '"new"' not in log


def test_a_newer_copy_that_cannot_be_used_leaves_the_older_one_on_the_card(
    card: tuple[Path, Path],
) -> None:
    boot, etc = card
    older, newer = boot / "sesame-pi/config.toml", boot / "sesame-pi/config.toml.txt"
    older.write_text('character = "Miles"\n')
    newer.write_text("character = Miles\n")  # not TOML
    past = time.time() - 600
    os.utime(older, (past, past))
    first_boot(boot, etc)
    assert older.exists() and newer.exists(), "nothing of the maker's is lost"
    assert not (etc / "config.toml").exists()
