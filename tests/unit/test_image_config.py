"""pi-gen's configuration for one build (image/pi-gen-config.sh), read back as pi-gen reads it
(sourced by bash) and held to the rules pi-gen's build.sh enforces before it builds anything.

A build without an SSH key (the published image: a baked key would let its holder into every
maker's Pi) kept `PUBKEY_ONLY_SSH=1`, which pi-gen refuses without `PUBKEY_SSH_FIRST_USER`: every
release build failed, after the half hour the app image takes."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "image/pi-gen-config.sh"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG2c0ni8Q2rX admin@fleet"
# What pi-gen's build.sh (arm64 branch, the pinned commit) checks of these variables.
PI_GEN_RULES = """
if [[ "${PUBKEY_ONLY_SSH}" = "1" && -z "${PUBKEY_SSH_FIRST_USER}" ]]; then
  echo "Must set 'PUBKEY_SSH_FIRST_USER' to a valid SSH public key if using PUBKEY_ONLY_SSH"; exit 1
fi
if [[ -z "${FIRST_USER_PASS}" && "${DISABLE_FIRST_BOOT_USER_RENAME}" = "1" ]]; then
  echo "Must set FIRST_USER_PASS when DISABLE_FIRST_BOOT_USER_RENAME is set to 1"; exit 1
fi
"""


def configure(tmp_path: Path, **env: str) -> dict[str, str]:
    out = tmp_path / "pi-gen.config"
    base = {k: v for k, v in os.environ.items() if not k.startswith("SESAME_PI_")}
    subprocess.run(["bash", str(SCRIPT), str(out)], env={**base, **env}, check=True)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600, "it holds the admin password"
    names = "ENABLE_SSH PUBKEY_ONLY_SSH PUBKEY_SSH_FIRST_USER FIRST_USER_PASS WPA_COUNTRY"
    shown = " ".join(f'"${{{name}:-}}"' for name in names.split())
    read = subprocess.run(
        ["bash", "-c", f'set -eu; PUBKEY_ONLY_SSH=0; PUBKEY_SSH_FIRST_USER=""; source "$0"; '
         f'{PI_GEN_RULES}\nprintf "%s\\n" {shown}', str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert read.returncode == 0, read.stdout + read.stderr  # pi-gen would stop here
    return dict(zip(names.split(), read.stdout.split("\n")[:5], strict=True))


def test_without_a_key_ssh_is_off_and_pi_gen_takes_it(tmp_path: Path) -> None:
    values = configure(tmp_path, SESAME_PI_FIRST_USER_PASS="pw 'with' $pecials")
    assert values["ENABLE_SSH"] == "0" and values["PUBKEY_ONLY_SSH"] == "0"
    assert values["PUBKEY_SSH_FIRST_USER"] == ""
    assert values["FIRST_USER_PASS"] == "pw 'with' $pecials"


def test_with_a_key_only_that_key_logs_in(tmp_path: Path) -> None:
    values = configure(
        tmp_path, SESAME_PI_FIRST_USER_PASS="secret", SESAME_PI_SSH_PUBKEY=KEY,
        SESAME_PI_WIFI_COUNTRY="GB",
    )  # fmt: skip
    assert values["ENABLE_SSH"] == "1" and values["PUBKEY_ONLY_SSH"] == "1"
    assert values["PUBKEY_SSH_FIRST_USER"] == KEY and values["WPA_COUNTRY"] == "GB"


def test_no_password_no_configuration(tmp_path: Path) -> None:
    with pytest.raises(subprocess.CalledProcessError):
        configure(tmp_path)
