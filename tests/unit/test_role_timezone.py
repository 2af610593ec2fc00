"""The base role refuses a time zone tzdata does not have, by the real ansible-playbook.

A typo (or an old name Debian 13 moved to tzdata-legacy) used to leave /etc/localtime dangling
and went on into the app's config.toml, which the app refuses at start: the first batch of a
rollout was restarted onto a crash loop. The role's timezone tasks run here against this machine
in --check mode (nothing on it changes), as a play that includes only them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = """\
- name: The base role's time zone tasks
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Set the time zone
      ansible.builtin.include_role:
        name: base
        tasks_from: timezone.yml
"""


def play(tmp_path: Path, zone: str, missing: list[str]) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "timezone.yml"
    playbook.write_text(PLAYBOOK)
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(REPO / "ansible/roles"),
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        "ANSIBLE_NOCOLOR": "1",
    }
    variables = {"base_timezone": zone, "base_missing_packages": missing}
    return subprocess.run(
        [str(REPO / ".venv/bin/ansible-playbook"), "-i", "localhost,", "--check",
         "-e", f"ansible_python_interpreter={REPO / '.venv/bin/python'}",
         "-e", json.dumps(variables), str(playbook)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_zone_tzdata_knows_passes_and_one_it_does_not_fails_the_host(tmp_path: Path) -> None:
    known = play(tmp_path, "Europe/Berlin", [])
    assert known.returncode == 0, known.stdout[-3000:] + known.stderr[-2000:]
    unknown = play(tmp_path, "Europe/Berlinn", [])
    assert unknown.returncode != 0, unknown.stdout[-3000:]
    assert 'base_timezone "Europe/Berlinn" is no time zone tzdata knows' in unknown.stdout
    assert "Set the time zone file" not in unknown.stdout, "it failed before the link"


def test_a_dry_run_on_a_host_without_tzdata_yet_only_notes_it(tmp_path: Path) -> None:
    """--check on a host never provisioned: tzdata is among the packages a real run installs."""
    dry = play(tmp_path, "Europe/Berlinn", ["tzdata"])
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-2000:]
    assert "Check the time zone exists" in dry.stdout and "skipping" in dry.stdout
