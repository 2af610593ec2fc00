"""The sesame_pi role's handlers: every restart is followed by the after-start check.

The check's behaviour with the real engine and a failing batch is in tests/system/
test_container.py; that test notifies the check by name, since the restart needs systemd. This
pins the wiring it relies on: the check listens to the restart and runs after it."""

from __future__ import annotations

from pathlib import Path

import yaml

HANDLERS = Path(__file__).resolve().parents[2] / "ansible/roles/sesame_pi/handlers/main.yml"


def test_the_after_start_check_listens_to_the_restart_and_runs_after_it() -> None:
    handlers = yaml.safe_load(HANDLERS.read_text(encoding="utf-8"))
    names = [handler["name"] for handler in handlers]
    restart = names.index("Restart sesame-pi")
    check = names.index("Check that sesame-pi stays up")
    assert check > restart, "handlers run in the order written"
    assert handlers[check]["listen"] == "Restart sesame-pi"
    assert handlers[check]["ansible.builtin.include_tasks"] == "verify.yml"
    conditions = handlers[check]["when"]
    assert "not ansible_check_mode" in conditions and "not (sesame_pi_offline | bool)" in conditions
