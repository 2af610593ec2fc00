"""The session with a gpiozero button on MockFactory pins, driven with real timings, and a real link
to the stand-in over verified TLS: the safeguard (1.9 s is not a hang-up, 2.1 s is; a short press
in a call is ignored), through the GPIO button and through the stdin button alike.

The audio engine is replaced by a paced microphone double here (the end-to-end test runs the real
PortAudio path); everything else is the product's own code.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sesame_pi.auth import TokenProvider
from sesame_pi.button import DebouncedMockPin, GpioButton, StdinButton, make_button, mock_factory
from sesame_pi.config import Config
from sesame_pi.link import Link
from sesame_pi.logs import setup_logging
from sesame_pi.session import Session
from sesame_pi.standin import Standin, StandinOptions, server_tls, tone
from sesame_pi.states import Earcon, State
from support.credentials import make_pki, make_token, write_token
from support.session_doubles import FeedbackLog, PacedMicrophone
from support.session_rig import wait_for_state


@dataclass
class Rig:
    session: Session
    standin: Standin
    audio: PacedMicrophone
    feedback: FeedbackLog
    pin: DebouncedMockPin
    button: GpioButton

    async def wait_state(self, state: State, timeout: float = 10) -> None:
        await wait_for_state(self.session, state, timeout)

    async def hold(self, seconds: float) -> None:
        """Press for `seconds` on the pin, bouncing a little on the way down like a real switch."""
        for level in (True, False, True, False, True):
            self.drive(level)
            await asyncio.sleep(0.004)
        await asyncio.sleep(seconds)
        self.drive(False)
        await asyncio.sleep(0.1)

    def drive(self, pressed: bool) -> None:
        active_high = self.session.cfg.button_pull != "up"
        if pressed == active_high:
            self.pin.drive_high()
        else:
            self.pin.drive_low()


@contextlib.asynccontextmanager
async def rig(
    tmp_path: Path, button_kind: str, pull: str = "down", greeting_ms: int = 0
) -> AsyncIterator[Rig]:
    pki = make_pki(tmp_path)
    token = make_token()
    options = StandinOptions(mode="tone", expect_token=token, greeting_ms=greeting_ms)
    standin = Standin(options)
    port = await standin.start(tls=server_tls(str(pki.cert_file), str(pki.key_file)))
    cfg = Config(
        server=f"wss://127.0.0.1:{port}/agent-service-0/v1/connect",
        ca_file=pki.ca_file,
        token_file=write_token(tmp_path / "token", token),
        log_file=tmp_path / "events.jsonl",
        button=button_kind,
        button_pull=pull,
    )
    setup_logging(cfg)
    tokens = TokenProvider(cfg)
    tokens.load()
    audio = PacedMicrophone()
    feedback = FeedbackLog()
    session = Session(cfg, link=Link(cfg, tokens), audio=audio, feedback=feedback)
    loop = asyncio.get_running_loop()
    factory = mock_factory() if button_kind == "gpio" else None
    button = make_button(cfg, session, loop, pin_factory=factory)
    assert isinstance(button, GpioButton)
    button.start()
    runner = asyncio.create_task(session.run())
    pin = button.pin
    try:
        built = Rig(session, standin, audio, feedback, pin, button)
        await built.wait_state(State.IDLE)
        yield built
    finally:
        await session.stop()
        await asyncio.wait_for(runner, 10)
        button.close()
        await standin.stop()


@pytest.mark.parametrize(("kind", "pull"), [("gpio", "down"), ("gpio", "up"), ("stdin", "down")])
async def test_short_press_calls_hold_1_9_s_does_not_end_2_1_s_does(
    tmp_path: Path, kind: str, pull: str
) -> None:
    async with rig(tmp_path, kind, pull) as r:
        await r.hold(0.2)
        await r.wait_state(State.LIVE)
        assert r.audio.started == [24000]
        assert r.feedback.earcons[:3] == [Earcon.READY, Earcon.CALL_START, Earcon.LIVE]

        await r.hold(0.3)  # the safeguard: a short press in a call does nothing
        await r.hold(1.9)  # nearly, but not, a hang-up
        await asyncio.sleep(0.3)
        assert r.session.state is State.LIVE
        assert r.standin.record.disconnects == []
        assert r.standin.record.audio_frames_in > 50, "the uplink ran at real-time pace"

        await r.hold(2.1)
        await r.wait_state(State.IDLE)
        assert len(r.standin.record.disconnects) == 1
        assert r.audio.stopped >= 1 and r.feedback.earcons[-1] is Earcon.END
        assert r.standin.record.calls == 1


async def test_stdin_lines_feed_the_same_logic(tmp_path: Path) -> None:
    async with rig(tmp_path, "stdin") as r:
        assert isinstance(r.button, StdinButton)
        line = (
            r.button.handle_line
        )  # blocks for a tap, as on the reader thread: keep it off the loop
        await asyncio.to_thread(line, "")  # a bare Enter is a short press
        await r.wait_state(State.LIVE)
        await asyncio.sleep(0.2)  # let the release settle: a new press within 50 ms is a bounce
        await asyncio.to_thread(line, "press")
        await asyncio.sleep(1.9)
        await asyncio.to_thread(line, "release")
        await asyncio.sleep(0.3)
        assert r.session.state is State.LIVE
        await asyncio.to_thread(line, "press")
        await asyncio.sleep(2.1)
        await r.wait_state(State.IDLE, timeout=3)
        await asyncio.to_thread(line, "release")
        assert r.standin.record.disconnects


async def test_the_agent_s_first_words_are_played_whole(tmp_path: Path) -> None:
    """The stand-in greets in the same breath as its answer to call_connect, as the agent speaks
    first. Those frames came before the call was live and were dropped: the greeting never
    played. They now wait the few loop turns until it is, and play first, in order."""
    async with rig(tmp_path, "stdin", greeting_ms=400) as r:
        await r.hold(0.2)
        await r.wait_state(State.LIVE)
        greeting = tone(523.25, 400)
        for _ in range(50):
            if len(r.audio.heard) >= len(greeting):
                break
            await asyncio.sleep(0.02)
        assert bytes(r.audio.heard[: len(greeting)]) == greeting
