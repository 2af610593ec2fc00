"""The sesame_pi role's handlers and their order: every restart is followed by the after-start
check, and the units are enabled at boot before anything starts.

The check's behaviour with the real engine and a failing batch is in tests/system/
test_container.py; that test notifies the check by name, since the restart needs systemd (so does
a live start: the Ansible test applies the role offline, to a root file system). This pins the
wiring those rely on."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROLE = Path(__file__).resolve().parents[2] / "ansible/roles/sesame_pi"
HANDLERS = ROLE / "handlers/main.yml"
TASKS = ROLE / "tasks/main.yml"


def _load(path: Path) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded


def test_the_after_start_check_listens_to_the_restart_and_runs_after_it() -> None:
    handlers = _load(HANDLERS)
    names = [handler["name"] for handler in handlers]
    restart = names.index("Restart sesame-pi")
    check = names.index("Check that sesame-pi stays up")
    assert check > restart, "handlers run in the order written"
    assert handlers[check]["listen"] == "Restart sesame-pi"
    assert handlers[check]["ansible.builtin.include_tasks"] == "verify.yml"
    assert handlers[check]["when"] == "sesame_pi_verify_wanted | bool"
    wanted = yaml.safe_load((ROLE / "vars/main.yml").read_text(encoding="utf-8"))
    condition = wanted["sesame_pi_verify_wanted"]
    assert "not ansible_check_mode" in condition and "not (sesame_pi_offline | bool)" in condition


def test_the_units_are_enabled_before_any_handler_starts_or_checks_the_app() -> None:
    """A first install whose after-start check failed left the units not enabled: the failure
    came in the handlers, before the task that enabled them, and the app never came back after
    a reboot. Enabling comes first now, and tells systemd of changed units itself (the handlers
    start them)."""
    tasks = _load(TASKS)
    names = [task["name"] for task in tasks]
    enable = names.index("Enable the units at boot")
    flush = next(
        i for i, task in enumerate(tasks) if task.get("ansible.builtin.meta") == "flush_handlers"
    )
    installed = names.index("Install the systemd units")
    assert installed < enable < flush, names
    enabling = tasks[enable]["ansible.builtin.systemd_service"]
    assert enabling["enabled"] is True and "state" not in enabling
    assert re.search(r"sesame_pi_units\b.*\bis changed", enabling["daemon_reload"])
    assert tasks[installed]["register"] == "sesame_pi_units"
    assert all(handler["name"] != "Reload systemd for sesame-pi" for handler in _load(HANDLERS))
    start = names.index("Start the units")
    assert flush < start < names.index("Check the app stays up after its start")


def test_the_image_is_loaded_before_the_configuration_is_written() -> None:
    """A `docker load` that failed in a handler came after the new config.toml: the old image
    restarted on a configuration it may refuse. The load is a task now, right after the copy,
    on every run that ships a tarball (a copy done by an earlier run whose load failed is loaded
    on the next). Its behaviour with the real engine: tests/system/test_container.py."""
    tasks = _load(TASKS)
    names = [task["name"] for task in tasks]
    imported = names.index("Copy and load the app image")
    assert tasks[imported]["ansible.builtin.import_tasks"] == "image.yml"
    assert imported < names.index("Write the app's configuration")
    image_tasks = _load(ROLE / "tasks/image.yml")
    steps = {task["name"]: task for task in image_tasks}
    assert list(steps) == [
        "Install the image loader",
        "Copy the app image",
        "Note the restart a new image would bring (--check)",
        "Load the app image into Docker",
    ]
    loading = steps["Load the app image into Docker"]
    assert "changed" not in loading["when"], "it must not wait for this run's copy"
    assert "sesame_pi_offline" in loading["when"]
    assert loading["notify"] == "Restart sesame-pi"
    assert "notify" not in steps["Copy the app image"], "a copy alone restarts nothing"
    noting = steps["Note the restart a new image would bring (--check)"]  # (a dry run loads none)
    assert noting["when"] == "ansible_check_mode and sesame_pi_image_copy is changed"
    assert noting["notify"] == "Restart sesame-pi"
    assert all(handler["name"] != "Load the sesame-pi image" for handler in _load(HANDLERS))
