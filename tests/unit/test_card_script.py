"""The boot-time card choice (the audio role's sesame-pi-card) on this machine's sh, against a
scratch /proc/asound and the asound.conf the role's template writes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

ROLE = Path(__file__).resolve().parents[2] / "ansible/roles/audio"
SCRIPT = ROLE / "files/sesame-pi-card"
DEFAULTS = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
SEEED, BUILT_IN = "seeed2micvoicec", "wm8960soundcard"
WM8960_IDS = DEFAULTS["audio_wm8960_ids"]


def asound_conf(path: Path, card: str) -> Path:
    """/etc/asound.conf as the role writes it for `card`, with the role's defaults."""
    template = jinja2.Template((ROLE / "templates/asound.conf.j2").read_text())
    values = {**DEFAULTS, "ansible_managed": "Ansible managed", "audio_card_in_use": card}
    path.write_text(template.render(values) + "\n")
    return path


def choose(proc: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(SCRIPT), *args],
        env={**os.environ, "SESAME_PI_ASOUND_PROC": str(proc), "SESAME_PI_CARD_WAIT_S": "1"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    (tmp_path / "proc").mkdir()
    return tmp_path / "proc"


def fit(proc: Path, card: str) -> None:
    (proc / card).mkdir()  # /proc/asound/<id> is a link to the card's directory


def test_an_image_built_for_seeeds_driver_plays_on_the_built_in_overlay(
    tmp_path: Path, proc: Path
) -> None:
    """The SD image names seeed2micvoicec; the maker used Raspberry Pi OS's own
    dtoverlay=wm8960-soundcard, which names the same HAT wm8960soundcard. At boot the card lines
    are renamed, and nothing else in the file changes."""
    fit(proc, BUILT_IN)
    conf = asound_conf(tmp_path / "asound.conf", SEEED)
    done = choose(proc, str(conf), SEEED, *WM8960_IDS)
    assert done.stdout == f"{BUILT_IN}\n"
    assert conf.read_text() == asound_conf(tmp_path / "expected.conf", BUILT_IN).read_text()
    assert f"this machine has {BUILT_IN}" in done.stderr
    assert oct(conf.stat().st_mode & 0o777) == "0o644"
    again = choose(proc, str(conf), SEEED, *WM8960_IDS)
    assert again.stdout == f"{BUILT_IN}\n" and again.stderr == "", "the next boot changes nothing"


def test_the_configured_card_wins_and_a_swapped_hat_is_followed_back(
    tmp_path: Path, proc: Path
) -> None:
    fit(proc, SEEED)
    fit(proc, BUILT_IN)
    conf = asound_conf(tmp_path / "asound.conf", BUILT_IN)  # renamed at an earlier boot
    done = choose(proc, str(conf), SEEED, BUILT_IN)
    assert done.stdout == f"{SEEED}\n"
    assert conf.read_text() == asound_conf(tmp_path / "expected.conf", SEEED).read_text()


def test_no_card_at_all_leaves_the_file_and_says_so(tmp_path: Path, proc: Path) -> None:
    """A HAT not fitted yet (or its overlay missing): after the wait for a late driver, the
    configured id stays, for the mixer to report, and the journal says which ids it looked for."""
    conf = asound_conf(tmp_path / "asound.conf", SEEED)
    before = conf.read_text()
    done = choose(proc, str(conf), SEEED, BUILT_IN)
    assert done.stdout == f"{SEEED}\n"
    assert conf.read_text() == before
    assert f"no ALSA card with id {SEEED} {BUILT_IN} after 1 s" in done.stderr


def test_a_card_of_another_kind_is_never_renamed_to_the_hat(tmp_path: Path, proc: Path) -> None:
    """A USB adapter (`Device`) that enumerates late on a Pi that also has a WM8960 HAT: the
    file names a card outside the ids it was given, so it stays; and the role gives a card
    outside the WM8960 pair no alternatives."""
    fit(proc, SEEED)
    conf = asound_conf(tmp_path / "asound.conf", "Device")
    before = conf.read_text()
    done = choose(proc, str(conf), BUILT_IN, SEEED)
    assert conf.read_text() == before and "not one of" in done.stderr
    alternatives = jinja2.Template(DEFAULTS["audio_card_alternatives"]).render(
        audio_card="Device", audio_wm8960_ids=WM8960_IDS
    )
    assert alternatives == "[]"


def test_a_commented_card_line_is_neither_read_nor_changed(tmp_path: Path, proc: Path) -> None:
    fit(proc, BUILT_IN)
    conf = asound_conf(tmp_path / "asound.conf", SEEED)
    conf.write_text(f'# was: pcm "hw:CARD=Device,DEV=0"\n{conf.read_text()}')
    choose(proc, str(conf), SEEED, BUILT_IN)
    text = conf.read_text()
    assert text.startswith('# was: pcm "hw:CARD=Device,DEV=0"\n')
    assert text.count(f'"hw:CARD={BUILT_IN},DEV=0"') == 2 and f'card "{BUILT_IN}"' in text
