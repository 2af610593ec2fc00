"""Device faults: both sinks stall mid-call and come back; the sound server dies mid-call and
comes back; no GPIO chip for the button.

Suspending the private PulseAudio's sinks is a sound server that stalls (or a USB hiccup): the
streams stop moving but nothing errors, and they move again on resume. Killing the daemon is as
close as a test machine gets to pulling a USB sound card: PortAudio's streams stop calling back,
and nothing can be opened until a daemon is back on the same socket.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from array import array
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
from support.virtual_audio import VirtualAudio, read_wav

TokenFile = Callable[..., tuple[str, Path]]
STALL_S = 2.5
OUTAGE_GRACE_S = 3.0  # the outage below outlasts it: that call ends, as a lost device should


def tone(seconds: float = 1.0, rate: int = 24000, hz: float = 440.0) -> bytes:
    """The agent's voice for the stall test: a steady tone, so the speaker's level says it plays."""
    samples = (
        int(8000 * math.sin(2 * math.pi * hz * i / rate)) for i in range(int(seconds * rate))
    )
    return array("h", samples).tobytes()


def rms(wav: Path) -> float:
    pcm, _rate = read_wav(wav)
    samples = array("h", pcm)
    return math.sqrt(sum(x * x for x in samples) / max(1, len(samples)))


def record_speaker_for(sound: VirtualAudio, wav: Path, seconds: float) -> float:
    proc = sound.record_speaker(wav)
    time.sleep(seconds)
    sound.stop_recording(proc)
    return rms(wav)


@pytest.fixture(scope="module")
def stall(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One call through a 2.5 s stall of both sinks: what the app, service and speaker saw."""
    tmp = tmp_path_factory.mktemp("pulse-stall")
    token = LEDGER.add(make_token())
    path = write_token(tmp / "token", token)
    seen: dict[str, Any] = {}
    options = StandinOptions(mode="speech", speech=tone(), expect_token=token, greeting_ms=0)
    with (
        VirtualAudio(tmp / "audio") as sound,
        StandinThread(options) as server,
        AppProcess(tmp, server.url, path, sound.env) as app,
    ):
        app.wait_state("idle", timeout=30)
        call_mark = app.mark()
        app.press()
        app.wait_event("call_live", after=call_mark)
        app.wait_event("uplink_started", after=call_mark)
        time.sleep(1.0)
        seen["level_before"] = record_speaker_for(sound, tmp / "before.wav", 1.0)

        mark = app.mark()
        frames_at_stall = server.record.audio_frames_in
        for sink in ("speaker", "micfeed"):
            sound._pactl("suspend-sink", sink, "1")
        stalled_at = time.time()
        time.sleep(STALL_S)
        seen["frames_in_gap"] = server.record.audio_frames_in - frames_at_stall
        for sink in ("speaker", "micfeed"):
            sound._pactl("suspend-sink", sink, "0")
        resumed_at = time.time()
        seen["hiccup"] = app.wait_event("audio_device_hiccup", after=mark, timeout=5)
        seen["recovered"] = app.wait_event("audio_device_recovered", after=mark, timeout=10)
        FIGURES.record("test_a_device_stall_keeps_the_call", "device: resumed -> recovered",
                       event_time(seen["recovered"]) - resumed_at, "s")  # fmt: skip
        FIGURES.record("test_a_device_stall_keeps_the_call", "device: stall -> hiccup seen",
                       event_time(seen["hiccup"]) - stalled_at, "s")  # fmt: skip

        time.sleep(0.5)
        frames_after = server.record.audio_frames_in
        seen["level_after"] = record_speaker_for(sound, tmp / "after.wav", 2.0)
        seen["frames_after_gap"] = server.record.audio_frames_in - frames_after
        seen["calls_during"] = server.record.calls
        seen["disconnects_during"] = list(server.record.disconnects)

        app.hold(2.5)
        seen["ended"] = app.wait_event("call_ended", after=call_mark, timeout=15)
        seen["events"] = app.events()[call_mark:]
        time.sleep(0.5)
        seen["disconnects"] = list(server.record.disconnects)
        seen["calls"] = server.record.calls
        seen["exit"] = app.terminate()
    return seen


def test_a_device_stall_keeps_the_call(stall: dict[str, Any]) -> None:
    names = [e.get("event") for e in stall["events"]]
    assert "audio_device_error" not in names, "a 2.5 s stall is within the grace"
    assert names.count("call_live") == 1 and stall["calls"] == 1, "one call, never redialled"
    assert stall["calls_during"] == 1 and stall["disconnects_during"] == []
    assert stall["hiccup"]["detail"].startswith("the microphone stopped")
    assert stall["ended"]["reason"] == "user_request", "ended later by the hold"
    assert stall["disconnects"] == ["user_request"]
    assert stall["exit"] == 0


def test_the_uplink_sends_silence_in_the_gap_and_audio_after_it(stall: dict[str, Any]) -> None:
    # the stall is seen after 1.5 s; from then on one frame of silence per 20 ms
    assert stall["frames_in_gap"] >= 25, stall["frames_in_gap"]
    assert stall["frames_after_gap"] >= 80, "2 s of uplink after the gap: 100 frames, give or take"
    figures = stall["ended"]["audio"]
    assert figures["silence_frames"] >= 25
    assert figures["frames_captured"] >= figures["silence_frames"]


def test_the_speaker_plays_again_after_the_stall(stall: dict[str, Any]) -> None:
    assert stall["level_before"] > 2000, "the agent's tone was heard before the stall"
    assert stall["level_after"] > 2000, f"and after it: RMS {stall['level_after']:.0f}"


def test_call_ended_counts_the_hiccup(stall: dict[str, Any]) -> None:
    figures = stall["ended"]["audio"]
    assert figures["device_hiccups"] == 1
    assert STALL_S * 1000 - 300 <= figures["device_gap_ms"] <= STALL_S * 1000 + 2500, figures
    assert figures["device_reopens"] >= 1
    assert "device_failures" not in figures
    gap = stall["recovered"]["gap_ms"]
    assert gap == figures["device_gap_ms"]


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
        AppProcess(
            tmp, server.url, path, {**sound.env, "SESAME_PI_DEVICE_GRACE_S": str(OUTAGE_GRACE_S)}
        ) as app,
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
    # the engine tried to ride it out first, for the grace and no longer
    assert ended[0]["audio"]["device_hiccups"] == 1
    assert ended[0]["audio"]["device_gap_ms"] >= OUTAGE_GRACE_S * 1000
    assert ended[0]["audio"]["device_reopen_failures"] >= 1
    assert f"still gone after {OUTAGE_GRACE_S:g} s" in outage["error"]["detail"]


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


def test_the_agent_is_not_left_late_after_the_stall(stall: dict[str, Any]) -> None:
    figures = stall["ended"]["audio"]
    assert figures["stale_bytes"] > 0, "what piled up during the gap was dropped"
    assert figures["buffered_ms"] < 500, f"not kept as delay for the rest of the call: {figures}"
