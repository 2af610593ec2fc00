"""A whole call as a person makes it: `sesame-pi run` on real PortAudio over virtual ALSA devices,
the stdin button, and the strict stand-in. Press, talk, hear the agent, hold to hang up, SIGTERM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sesame_pi.standin import StandinOptions
from support.app_process import AppProcess
from support.credentials import make_token, write_token
from support.signals import loud_seconds, sine, tone_power
from support.standin_thread import StandinThread
from support.virtual_audio import VirtualAudio, read_wav, write_wav

MIC_HZ = 660.0  # the stand-in's greeting is 523 Hz, so an echo of the mic is told apart


@pytest.fixture
def sound(tmp_path: Path) -> Iterator[VirtualAudio]:
    with VirtualAudio(tmp_path / "audio") as audio:
        yield audio


@pytest.mark.parametrize("speaker_channels", [1, 2])
def test_press_talk_listen_hold_to_hang_up(
    tmp_path: Path, sound: VirtualAudio, speaker_channels: int
) -> None:
    """With 2 speaker channels (a card's stereo dmix, as the audio role sets it) the app writes
    the agent on both: the tone must come out at its own pitch and length, not half or double."""
    token = make_token(exp_in_s=3600)
    token_file = write_token(tmp_path / "token", token)
    mic_wav = write_wav(tmp_path / "mic.wav", sine(MIC_HZ, 30, 16000), 16000)
    speaker_wav = tmp_path / "speaker.wav"

    options = StandinOptions(mode="echo", expect_token=token, junk=True)
    with StandinThread(options) as server:
        server.record.keep_mic_bytes = 16000 * 2 * 10
        feeder = sound.feed_microphone(mic_wav)
        recorder = sound.record_speaker(speaker_wav, rate=24000)
        # The stand-in sends the microphone's tone straight back to the speaker: to an echo
        # canceller a steady tone that returns as a steady tone is its own echo, so this test of
        # the call path runs with it off (tests/unit/test_echo.py and the echo bench cover it).
        env = {
            **sound.env,
            "SESAME_PI_ECHO_CANCEL": "off",
            "SESAME_PI_OUTPUT_CHANNELS": str(speaker_channels),
        }
        with AppProcess(tmp_path, server.url, token_file, env=env) as app:
            app.wait_state("idle", timeout=30)
            mark = app.mark()
            app.press()
            live = app.wait_event("call_live", after=mark)
            assert live["server_rate"] == 24000
            app.wait_event("uplink_started", after=mark)
            time.sleep(3.0)  # talk; the stand-in echoes and also sends malformed frames
            assert app.wait_event("bad_frame", after=mark), "junk was seen and skipped"

            mark = app.mark()
            app.press()  # a short press while live is the safeguard: ignored
            app.wait_event("press_ignored", after=mark)
            time.sleep(0.5)
            assert not any(e.get("event") == "call_ended" for e in app.events()[mark:])

            mark = app.mark()
            app.hold(2.5)
            ended = app.wait_event("call_ended", after=mark)
            app.wait_state("idle", after=mark)
            time.sleep(0.5)
            assert app.proc is not None and app.proc.poll() is None, "the app stays up, idle"
            code = app.terminate()
        sound.stop_recording(recorder)
        feeder.terminate()
    record = server.record

    # The call, as the strict peer saw it.
    assert code == 0, app.stderr_file.read_text()[-2000:]
    assert record.calls == 1 and record.violations == [], record.violations
    assert record.disconnects, "call_disconnect was sent on the hold"
    assert ended["reason"] == "user_request"
    assert ended["disconnect_answered"] is True

    # Microphone audio went up as 16 kHz PCM in 20 ms frames and it was the microphone's tone.
    assert set(record.audio_frame_sizes) == {640}, record.audio_frame_sizes
    assert record.audio_frames_in >= 100  # > 2 s of audio
    # In 100 ms pieces: one slip of the capture under load (a dropped period turns the tone's
    # phase) would cancel a single long Goertzel window; the median piece must be the tone.
    uplink = bytes(record.mic_pcm[32000:96000])
    pieces = sorted(tone_power(uplink[i : i + 3200], MIC_HZ, 16000) for i in range(0, 64000, 3200))
    assert pieces[len(pieces) // 2] > 0.5, (pieces, ended["audio"])

    # The agent's 24 kHz audio (the echo of our tone) came out of the speaker.
    heard, rate = read_wav(speaker_wav)
    assert rate == 24000
    # What the app says it played, beside what was heard, for a run that comes up short.
    played = (
        len(heard) / 2 / rate,
        ended["audio"],
        [
            e
            for e in app.events()
            if e.get("event") in ("audio_opened", "output_mode_chosen")
            or "underrun" in str(e.get("event"))
        ],
    )
    assert loud_seconds(heard, rate) > 2.0, played
    loud = [heard[i : i + 9600] for i in range(0, len(heard) - 9600, 9600)]
    assert max(tone_power(chunk, MIC_HZ, rate) for chunk in loud) > 0.5
    assert ended["audio"]["frames_captured"] >= 100

    # `output_mode = "auto"` tried the speaker once, before the call, and the call was played the
    # way it chose. Behind PulseAudio the verdict can go either way from run to run (the server
    # pulls the stream ahead of playing it, or keeps up with the clock while the probe watches):
    # callback mode with 20 ms periods (10 fell into underflow storms through the pulse plugin)
    # when it read ahead, else the writer with the configured 10 ms. Either way the call above
    # was heard whole.
    events = app.events()
    chosen = [e for e in events if e.get("event") == "output_mode_chosen"]
    assert len(chosen) == 1, chosen
    mode, reason = chosen[0]["mode"], chosen[0]["reason"]
    wanted_period = {"callback": 20, "writer": 10}[mode]
    assert ("sound server" in reason) == (mode == "callback"), chosen
    opened = next(e for e in events if e.get("event") == "audio_opened")
    assert (opened["output_mode"], opened["output_period_ms"]) == (mode, wanted_period), opened

    # The log: JSON lines only, every line an event; the token nowhere.
    lines = app.log_file.read_text().splitlines()
    assert all(json.loads(line)["event"] for line in lines)
    for text in (
        app.log_file.read_text(),
        app.stdout_file.read_text(),
        app.stderr_file.read_text(),
    ):
        assert token not in text
        assert token.split(".")[2] not in text
    stdout_events = [json.loads(line) for line in app.stdout_file.read_text().splitlines()]
    assert stdout_events[-1]["event"] == "app_stopped"


def test_check_says_what_is_ready_and_what_is_not(tmp_path: Path, sound: VirtualAudio) -> None:
    """`sesame-pi check` against the stand-in over TLS and the virtual sound devices: one line
    per part; a microphone name that matches nothing fails the check (exit 5) and says so."""
    token = make_token(exp_in_s=3600)
    token_file = write_token(tmp_path / "token", token)
    with StandinThread(StandinOptions(expect_token=token)) as server:

        def check(*extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "sesame_pi.cli", "check", "--config", "/dev/null",
                 "--server", server.url, "--token-file", str(token_file), *extra],
                capture_output=True, text=True, timeout=60, env={**os.environ, **sound.env},
            )  # fmt: skip

        ready = check()
        assert ready.returncode == 0, ready.stdout + ready.stderr
        lines = ready.stdout.splitlines()
        assert [line.split(":")[0] for line in lines] == [
            "[ok] config", "[ok] audio", "[ok] token", "[ok] server"
        ]  # fmt: skip
        missing = check("--input-device", "no-such-microphone")
    assert missing.returncode == 5
    assert "[FAIL] audio: no input device named 'no-such-microphone'" in missing.stdout
    assert "[ok] server" in missing.stdout, "the other checks still run"
    assert token not in ready.stdout + ready.stderr + missing.stdout + missing.stderr
