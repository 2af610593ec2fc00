"""Device faults: the sound server dies mid-call and comes back; no GPIO chip for the button.

Killing the private PulseAudio is as close as a test machine gets to pulling a USB sound card:
PortAudio's streams stop calling back, and nothing can be opened until a daemon is back on the
same socket.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from faults.figures import FIGURES
from faults.ledger import LEDGER
from faults.processes import event_time
from sesame_pi.standin import StandinOptions
from support.app_process import AppProcess
from support.credentials import make_token, write_token
from support.standin_thread import StandinThread
from support.virtual_audio import VirtualAudio

TokenFile = Callable[..., tuple[str, Path]]


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One call through a sound-server outage; what the app and the service saw."""
    tmp = tmp_path_factory.mktemp("pulse-outage")
    token = LEDGER.add(make_token())
    path = write_token(tmp / "token", token)

    def record(*figure: Any) -> None:
        FIGURES.record("test_sound_server_dies_mid_call_and_the_app_recovers", *figure)

    seen: dict[str, Any] = {}
    options = StandinOptions(mode="echo", expect_token=token, greeting_ms=0)
    with (
        VirtualAudio(tmp / "audio") as sound,
        StandinThread(options) as server,
        AppProcess(tmp, server.url, path, sound.env) as app,
    ):
        app.wait_state("idle", timeout=30)
        mark = app.mark()
        app.press()
        app.wait_event("call_live", after=mark)
        app.wait_event("uplink_started", after=mark)
        time.sleep(1.0)

        mark = app.mark()
        killed_at = time.time()
        sound.stop()  # the daemon and its helpers are gone: every stream dies
        seen["error"] = app.wait_event("audio_device_error", after=mark, timeout=15)
        seen["error_state"] = app.wait_state("device_error", after=mark, timeout=5)
        record("device: sound server killed -> audio_device_error",
               event_time(seen["error"]) - killed_at, "s")  # fmt: skip
        time.sleep(1.0)  # the call's end reaches the service
        seen["disconnects"] = list(server.record.disconnects)

        press_mark = app.mark()
        app.press()  # a press while the device is gone is refused, audibly
        seen["refused"] = app.wait_event("press_ignored", after=press_mark, timeout=5)

        time.sleep(2.0)
        revived = VirtualAudio(sound.root)  # a fresh daemon on the same socket path
        restarted_at = time.time()
        revived.start()
        try:
            seen["back"] = app.wait_event("audio_device_back", after=mark, timeout=30)
            seen["idle"] = app.wait_state("idle", after=mark, timeout=5)
            record("device: sound server restarted -> audio_device_back",
                   event_time(seen["back"]) - restarted_at, "s")  # fmt: skip
            seen["outage_events"] = app.events()[mark:]
            calls_before = server.record.calls
            mark = app.mark()
            app.press()
            app.wait_event("call_live", after=mark, timeout=20)
            app.wait_event("uplink_started", after=mark, timeout=10)
            time.sleep(1.0)
            seen["new_calls"] = server.record.calls - calls_before
            app.hold(2.5)
            seen["again"] = app.wait_event("call_ended", after=mark, timeout=15)
            seen["exit"] = app.terminate()
        finally:
            revived.stop()
    return seen


def test_sound_server_dies_mid_call_and_the_app_recovers(outage: dict[str, Any]) -> None:
    assert "microphone" in outage["error"]["detail"] or "speaker" in outage["error"]["detail"]
    assert outage["error_state"]["previous"] == "live"
    assert outage["disconnects"] == ["error"], "the call was ended cleanly with the service"
    assert "audio device" in outage["refused"]["reason"]
    assert outage["idle"], "back to idle once the device returned"
    assert outage["new_calls"] == 1, "and a new call works"
    again = outage["again"]
    assert again["reason"] == "user_request"
    assert again["audio"]["frames_captured"] >= 40, "the microphone works again"
    assert outage["exit"] == 0


def test_a_call_lost_to_the_device_is_summarised(outage: dict[str, Any]) -> None:
    ended = [e for e in outage["outage_events"] if e.get("event") == "call_ended"]
    assert ended and ended[0]["audio"]["device_failures"] >= 1


def test_gpio_button_without_a_gpio_chip_exits_4_naming_the_stdin_button(
    tmp_path: Path, token_file: TokenFile
) -> None:
    _token, path = token_file()
    result = subprocess.run(
        [
            sys.executable, "-m", "sesame_pi.cli", "run",
            "--config", "/dev/null",
            "--server", "ws://127.0.0.1:9/agent-service-0/v1/connect",
            "--token-file", str(path),
            "--button", "gpio",
            "--log-file", str(tmp_path / "app-events.jsonl"),
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert not Path("/dev/gpiochip0").exists(), "this test is about a machine without GPIO"
    assert result.returncode == 4, result.stderr
    assert "--button stdin" in result.stderr
    assert "GPIO 17" in result.stderr
    log = (tmp_path / "app-events.jsonl").read_text()
    assert '"event": "button_unavailable"' in log
