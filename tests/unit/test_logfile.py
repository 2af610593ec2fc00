"""The event log's own size rotation (`sesame_pi.logfile`), on real files."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sesame_pi.logfile import SizeRotatedFile
from sesame_pi.logs import log_file_paths


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("test_logfile")
    log.propagate = False
    log.setLevel(logging.INFO)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def attach(log: logging.Logger, path: Path, max_bytes: int, backups: int) -> SizeRotatedFile:
    handler = SizeRotatedFile(path, max_bytes, backups)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    return handler


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_the_file_rotates_before_a_line_would_reach_the_limit_and_keeps_whole_lines(
    tmp_path: Path, logger: logging.Logger
) -> None:
    path = tmp_path / "events.jsonl"
    handler = attach(logger, path, max_bytes=100, backups=3)
    for number in range(12):
        logger.info(json.dumps({"n": number, "pad": "x" * 20}))  # 34 bytes a line with "\n"
    assert [p.name for p in log_file_paths(path)] == [
        "events.jsonl",
        "events.jsonl.1",
        "events.jsonl.2",
        "events.jsonl.3",
    ]
    for file in log_file_paths(path):
        assert file.stat().st_size < 100
        assert all(json.loads(line)["pad"] == "x" * 20 for line in lines_of(file))
    # Two lines a file (a third would reach 100 bytes); the newest in the file being written.
    numbers = [json.loads(line)["n"] for line in lines_of(path)]
    older = [json.loads(line)["n"] for line in lines_of(path.with_name("events.jsonl.1"))]
    oldest = [json.loads(line)["n"] for line in lines_of(path.with_name("events.jsonl.3"))]
    assert (numbers, older, oldest) == ([10, 11], [8, 9], [4, 5])
    assert handler.rotations == 5  # lines 0-3 went past the last backup


def test_a_restart_counts_what_the_file_already_holds(
    tmp_path: Path, logger: logging.Logger
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("a" * 79 + "\n", encoding="utf-8")
    attach(logger, path, max_bytes=100, backups=1)
    logger.info("b" * 29)  # 80 + 30 would reach 100: the old file becomes the backup
    assert lines_of(path) == ["b" * 29]
    assert lines_of(path.with_name("events.jsonl.1")) == ["a" * 79]


def test_a_line_longer_than_the_limit_is_written_whole_into_a_file_of_its_own(
    tmp_path: Path, logger: logging.Logger
) -> None:
    path = tmp_path / "events.jsonl"
    handler = attach(logger, path, max_bytes=50, backups=2)
    logger.info("x" * 120)
    logger.info("y" * 10)
    assert lines_of(path) == ["y" * 10]
    assert lines_of(path.with_name("events.jsonl.1")) == ["x" * 120]
    assert handler.rotations == 1  # not one rotation of an empty file before the long line


def test_a_device_is_written_to_and_never_rotated(logger: logging.Logger) -> None:
    handler = attach(logger, Path(os.devnull), max_bytes=10, backups=2)
    for _ in range(5):
        logger.info("a line longer than ten bytes")
    assert handler.rotations == 0
    assert not Path(os.devnull + ".1").exists()


def test_a_rotation_that_fails_keeps_every_line_in_the_file(
    tmp_path: Path, logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.jsonl"
    (tmp_path / "events.jsonl.1").mkdir()  # a directory where the backup would go
    (tmp_path / "events.jsonl.1" / "keep").write_text("", encoding="utf-8")
    handler = attach(logger, path, max_bytes=40, backups=1)
    for number in range(6):
        logger.info(f"line {number:02d} of the call")
    assert lines_of(path) == [f"line {number:02d} of the call" for number in range(6)]
    assert handler.rotations == 0
    assert "Logging error" not in capsys.readouterr().err


def test_a_rotation_that_fails_waits_a_tenth_of_the_limit_before_the_next_try(
    tmp_path: Path, logger: logging.Logger
) -> None:
    """Not a close, rename and reopen for every line while the backup's place is taken."""
    path = tmp_path / "events.jsonl"
    in_the_way = tmp_path / "events.jsonl.1"
    in_the_way.mkdir()  # a directory where the backup would go (root cannot rename over it)
    (in_the_way / "keep").write_text("", encoding="utf-8")
    attempts: list[int] = []

    class Counted(SizeRotatedFile):
        def _rotate(self) -> None:
            attempts.append(self._size)
            super()._rotate()

    handler = Counted(path, 1000, 1)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    for number in range(60):
        logger.info(f"{number:03d} " + "x" * 35)  # 40 bytes a line
    assert len(lines_of(path)) == 60 and handler.rotations == 0
    # The first at the limit, then each time the file grew by a tenth of it (two lines here).
    assert attempts == list(range(960, 2400, 80))
    (in_the_way / "keep").unlink()
    in_the_way.rmdir()
    logger.info("the backup's place is free again")
    assert handler.rotations == 1
    assert lines_of(path) == ["the backup's place is free again"]
    assert len(lines_of(in_the_way)) == 60


CARD_FILLS_UP = """
import logging, resource, signal, sys
from pathlib import Path
from sesame_pi.logfile import SizeRotatedFile

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead
handler = SizeRotatedFile(Path(sys.argv[1]), 10_000, 2)
handler.setFormatter(logging.Formatter("%(message)s"))
log = logging.getLogger("card")
log.propagate = False
log.addHandler(handler)
log.setLevel(logging.INFO)
resource.setrlimit(resource.RLIMIT_FSIZE, (200, resource.RLIM_INFINITY))  # the card is full
for number in range(20):
    log.info(f"while full {number:02d} " + "." * 13)  # 28 bytes: the limit cuts one in two
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
for number in range(5):
    log.info(f"space again {number}")
"""


def test_a_full_card_loses_the_lines_it_refused_and_logging_goes_on_once_there_is_room(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    child = subprocess.run(
        [sys.executable, "-c", CARD_FILLS_UP, str(path)], capture_output=True, text=True
    )
    assert child.returncode == 0, child.stderr
    # The refused lines are said to be lost, once, as a JSON line: logging's own report was 23
    # lines of plain text for each, with the record's arguments unredacted.
    (said,) = child.stderr.splitlines()
    assert json.loads(said)["event"] == "log_file_unavailable", said
    lines = lines_of(path)
    # The line the full card cut in two stays cut; the next one starts on a line of its own
    # (it was glued to the torn one: the first line after the card had room lost too).
    assert lines[-5:] == [f"space again {number}" for number in range(5)]
    written = [f"while full {number:02d} " + "." * 13 for number in range(len(lines) - 5)]
    assert lines[:-6] == written[:-1] and written[-1].startswith(lines[-6]), lines
    assert lines[-6] != written[-1], "the limit cut a line in two"


class FlushFailsAtClose(io.TextIOWrapper):
    """A file whose last flush fails as it is closed (a full card): closed all the same."""

    def close(self) -> None:
        super().close()
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_file_that_fails_to_close_at_a_rotation_does_not_stop_the_log(
    tmp_path: Path, logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.jsonl"
    handler = attach(logger, path, max_bytes=100, backups=2)
    logger.info("a" * 39)
    logger.info("b" * 39)
    assert handler.stream is not None
    handler.stream.close()
    handler.stream = FlushFailsAtClose(open(path, "ab"), encoding="utf-8")  # noqa: SIM115
    logger.info("c" * 39)  # 80 + 40 reach the limit: the rotation closes the file
    logger.info("d" * 39)
    assert lines_of(path) == ["c" * 39, "d" * 39]
    assert lines_of(path.with_name("events.jsonl.1")) == ["a" * 39, "b" * 39]
    assert handler.rotations == 1
    assert "Logging error" not in capsys.readouterr().err


def test_a_non_ascii_line_is_counted_in_bytes(tmp_path: Path, logger: logging.Logger) -> None:
    path = tmp_path / "events.jsonl"
    attach(logger, path, max_bytes=30, backups=1)
    logger.info("é" * 10)  # 21 bytes with the newline, 11 characters
    logger.info("é" * 4)  # 9 more would reach 30: rotated, as bytes say, not characters
    assert lines_of(path) == ["é" * 4]
    assert lines_of(path.with_name("events.jsonl.1")) == ["é" * 10]


@pytest.mark.parametrize(("max_bytes", "backups"), [(0, 3), (1000, 0)])
def test_a_rotation_that_could_not_bound_the_log_is_refused(
    tmp_path: Path, max_bytes: int, backups: int
) -> None:
    with pytest.raises(ValueError, match="max_bytes > 0 and backups > 0"):
        SizeRotatedFile(tmp_path / "events.jsonl", max_bytes, backups)


def test_the_app_does_not_load_logging_handlers_or_pickle() -> None:
    """`logging.handlers` brings `pickle`, for a socket handler the app has no use for."""
    code = (
        "import sys, sesame_pi.cli, sesame_pi.app;"
        "print(sorted({'pickle', 'logging.handlers'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
