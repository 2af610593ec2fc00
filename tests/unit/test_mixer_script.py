"""The audio role's boot-time mixer script (sesame-pi-mixer) on this machine's sh, against a
stand-in `amixer` that knows the controls of a WM8960 card, and the role's WM8960 levels."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[2] / "ansible/roles/audio"
SCRIPT = ROLE / "files/sesame-pi-mixer"
DEFAULTS = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
VARS = yaml.safe_load((ROLE / "vars/main.yml").read_text())
# The WM8960 codec driver's simple controls, as `amixer scontrols` lists them (a subset).
WM8960_CONTROLS = (
    "Headphone", "Speaker", "Playback", "Capture", "Left Output Mixer PCM",
    "Right Output Mixer PCM", "Left Input Mixer Boost", "Right Input Mixer Boost",
)  # fmt: skip
FAKE_AMIXER = """#!/bin/sh
# amixer -c CARD info | sget NAME | -q -c CARD sset NAME VALUE...: a card with the controls in
# $CONTROLS (one per line); sets are logged to $SET_LOG.
[ "$2" = wm8960soundcard ] || [ "$3" = wm8960soundcard ] || exit 1
case "$3" in
  info) exit 0 ;;
  sget) grep -qxF "$4" "$CONTROLS" || exit 1; grep -F "$4=" "$SET_LOG" | tail -n1; exit 0 ;;
esac
shift 4
name="$1"; shift
grep -qxF "$name" "$CONTROLS" || exit 1
echo "$name=$*" >> "$SET_LOG"
"""


def run_mixer(
    tmp_path: Path, levels: list[dict[str, str]], *flags: str
) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    amixer = bin_dir / "amixer"
    amixer.write_text(FAKE_AMIXER)
    amixer.chmod(0o755)
    (tmp_path / "controls").write_text("\n".join(WM8960_CONTROLS) + "\n")
    (tmp_path / "set.log").write_text("")
    config = tmp_path / "mixer.conf"
    config.write_text("".join(f"{c['name']}={c['value']}\n" for c in levels))
    return subprocess.run(
        ["sh", str(SCRIPT), *flags, "wm8960soundcard", str(config)],
        env={
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "CONTROLS": str(tmp_path / "controls"),
            "SET_LOG": str(tmp_path / "set.log"),
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_wm8960_card_gets_levels_that_play_and_hear() -> None:
    """With no mixer levels set (the default), the WM8960's reset state plays nothing (the DAC
    reaches no output mixer, both amplifiers at their lowest) and hears nothing (the PGA
    muted): a maker's HAT was silent both ways."""
    levels_in_use = VARS["audio_mixer_levels"]
    assert levels_in_use.startswith("{{ (audio_wm8960_mixer if audio_card in audio_wm8960_ids")
    assert levels_in_use.rstrip("} ").endswith("+ audio_mixer_controls"), "the inventory's win"
    assert DEFAULTS["audio_card"] in DEFAULTS["audio_wm8960_ids"], "the image's card gets them"
    levels = {c["name"]: c["value"] for c in DEFAULTS["audio_wm8960_mixer"]}
    assert levels["Left Output Mixer PCM"] == levels["Right Output Mixer PCM"] == "on"
    assert levels["Left Input Mixer Boost"] == levels["Right Input Mixer Boost"] == "on"
    assert "cap" in levels["Capture"].split()
    for amplifier in ("Speaker", "Headphone"):
        assert int(levels[amplifier].rstrip("%")) >= 50, amplifier
    assert set(levels) <= set(WM8960_CONTROLS), "every default names a control the codec has"


def test_the_script_sets_the_levels_and_skips_a_control_the_card_lacks(tmp_path: Path) -> None:
    levels = [
        {"name": "Left Output Mixer PCM", "value": "on"},
        {"name": "Mic Boost", "value": "on"},  # another HAT's control
        {"name": "Capture", "value": "70% cap"},
    ]
    run = run_mixer(tmp_path, levels)
    assert run.returncode == 0, run.stderr
    assert "no control 'Mic Boost'; skipped" in run.stderr
    assert (tmp_path / "set.log").read_text().splitlines() == [
        "Left Output Mixer PCM=on",
        "Capture=70% cap",
    ], "the level after the missing control still applies"
    assert run.stdout.strip() == "changed"


def test_strict_fails_on_a_control_the_card_lacks_after_applying_the_rest(tmp_path: Path) -> None:
    """Ansible runs it --strict: a misspelt level in the inventory fails the deploy instead of
    a green run that never set it (at boot it is said and skipped)."""
    levels = [{"name": "Speakr", "value": "80%"}, {"name": "Capture", "value": "60% cap"}]
    run = run_mixer(tmp_path, levels, "--strict")
    assert run.returncode == 1 and "no control 'Speakr'" in run.stderr
    assert (tmp_path / "set.log").read_text().splitlines() == ["Capture=60% cap"]
