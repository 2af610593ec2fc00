"""The heartbeat file, as `sesame-pi status` (the HEALTHCHECK) and the soak test read it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sesame_pi.heartbeat import Heartbeat, check
from sesame_pi.states import State


async def test_a_beat_inside_the_loop_counts_its_tasks(tmp_path: Path) -> None:
    path = tmp_path / "run" / "heartbeat.json"
    beat = Heartbeat(path)
    sleepers = [asyncio.create_task(asyncio.sleep(10)) for _ in range(3)]
    try:
        beat.update(State.IDLE, link_up=True)
        body = json.loads(path.read_text())
    finally:
        for task in sleepers:
            task.cancel()
    assert body["state"] == "idle" and body["link_up"] is True and body["pid"] == os.getpid()
    assert body["tasks"] == 4  # the three sleepers and this test's own task
    assert check(path) == (True, "state idle, link up, 0 s ago")


def test_outside_a_loop_the_task_count_is_unknown(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat.json"
    Heartbeat(path).update(State.OFFLINE, link_up=False)
    assert json.loads(path.read_text())["tasks"] is None
    healthy, line = check(path)
    assert healthy and "link down" in line


def test_a_person_must_act_states_are_unhealthy(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat.json"
    beat = Heartbeat(path)
    for state in (State.NEEDS_TOKEN, State.DEVICE_ERROR):
        beat.update(state)
        healthy, line = check(path)
        assert not healthy and state.value in line


def test_stale_missing_and_garbled_heartbeats_are_unhealthy(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat.json"
    healthy, line = check(path)
    assert not healthy and "no heartbeat" in line
    path.write_text(json.dumps({"ts": time.time() - 120, "state": "idle"}))
    healthy, line = check(path, max_age_s=30)
    assert not healthy and "hung" in line
    path.write_text("{not json")
    healthy, line = check(path)
    assert not healthy and "unreadable" in line


def test_a_heartbeat_dated_ahead_of_a_clock_that_stepped_back_is_stale(tmp_path: Path) -> None:
    """NTP steps a Pi's clock back an hour: a beat written before that is an hour "ahead", and
    its negative age passed the age check for the whole hour, however hung the app. A live app
    rewrites it within seconds, so one dated ahead by more than the allowed age is stale."""
    path = tmp_path / "heartbeat.json"
    path.write_text(json.dumps({"ts": time.time() + 3600, "state": "idle", "link_up": True}))
    healthy, line = check(path, max_age_s=30)
    assert not healthy and "ahead of the clock" in line
    path.write_text(json.dumps({"ts": time.time() + 5, "state": "idle", "link_up": True}))
    assert check(path, max_age_s=30)[0], "a few seconds of clock skew is no fault"


def test_a_heartbeat_directory_that_cannot_be_made_is_a_warning_not_a_crash(
    tmp_path: Path,
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("in the way\n")
    heartbeat = Heartbeat(blocked / "heartbeat.json")  # its directory would be a file's child
    heartbeat.update(State.IDLE)
    healthy, line = check(blocked / "heartbeat.json")
    assert not healthy and "unreadable" in line


def test_a_heartbeat_that_cannot_be_written_is_said_once_per_spell(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each failed write was passed over in silence: the container's health check failed and
    `status` asked whether the app ran with --heartbeat-file, with nothing in the log."""
    caplog.set_level(logging.INFO)
    path = tmp_path / "heartbeat.json"
    path.mkdir()  # in the way of the file (a read-only disk, as root sees one)
    heartbeat = Heartbeat(path)

    def said() -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "event", "") == "heartbeat_unavailable"]

    heartbeat.update(State.IDLE)
    heartbeat.update(State.IDLE)
    assert len(said()) == 1 and str(path) in str(said()[0].__dict__["detail"])
    path.rmdir()
    heartbeat.update(State.IDLE)
    assert check(path)[0]
    path.unlink()
    path.mkdir()
    heartbeat.update(State.IDLE)
    assert len(said()) == 2, "a new spell of failures is said again"


@pytest.fixture
def stale_beat_with_no_room(tmp_path: Path) -> Iterator[Path]:
    """A two-minute-old beat in a directory no new beat fits in: a 64 KB tmpfs filled up, as
    root (root writes through file modes); a read-only directory for anyone else."""
    directory = tmp_path / "run"
    directory.mkdir()
    path = directory / "heartbeat.json"
    as_root = os.geteuid() == 0
    if as_root:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", directory], check=True)
    try:
        path.write_text(json.dumps({"ts": time.time() - 120, "state": "idle"}))
        if as_root:
            filler = (directory / "filler").open("wb", buffering=0)
            with filler, contextlib.suppress(OSError):  # (unbuffered: its close cannot fail)
                while True:
                    filler.write(bytes(4096))
        else:
            directory.chmod(0o555)
        yield path
    finally:
        if as_root:
            subprocess.run(["umount", directory], check=True)
        else:
            directory.chmod(0o755)


def test_a_stale_beat_that_cannot_be_rewritten_says_so_rather_than_hung(
    tmp_path: Path, stale_beat_with_no_room: Path
) -> None:
    """A full card stops the beat as surely as a hung app; `status` said "hung" and sent its
    owner to the app instead of the disk. It still fails the health check."""
    writable = tmp_path / "heartbeat.json"
    writable.write_text(json.dumps({"ts": time.time() - 120, "state": "idle"}))
    assert "the app looks hung" in check(writable, max_age_s=30)[1]
    directory = stale_beat_with_no_room.parent
    before = sorted(directory.iterdir())
    healthy, line = check(stale_beat_with_no_room, max_age_s=30)
    assert not healthy
    assert "cannot be written" in line and str(directory) in line and "hung" not in line
    assert sorted(directory.iterdir()) == before, "the probe leaves nothing behind"
