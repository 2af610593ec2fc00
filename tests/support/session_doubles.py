"""The session's shared doubles: one typed fake per port (link, audio, feedback).

The fakes record what the session asked of them, so the state-event tests read the effects
of each transition; tests that run a real link use the audio and feedback doubles alone.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sesame_pi.link import CallInfo, LinkListener, LinkStats
from sesame_pi.ports import AudioPort, FeedbackPort, LinkPort
from sesame_pi.states import Earcon, State

FRAME = b"\x10\x00" * 320  # 20 ms of 16 kHz PCM
CALL = CallInfo(call_id=7, sample_rate=24000, audio_codec="none")


@dataclass
class PacedMicrophone:
    """An AudioPort double: 20 ms frames at real-time pace while a call runs."""

    started: list[int] = field(default_factory=list)
    reopening: bool = False
    stopped: int = 0
    ending: int = 0
    played: int = 0
    heard: bytearray = field(default_factory=bytearray)  # the first seconds the agent said
    left_to_play_s: float = 0.0  # what `play_out` says is still to play when the server hangs up

    def start_call(self, playback_rate: int) -> None:
        self.started.append(playback_rate)

    def stop_call(self) -> None:
        self.stopped += 1

    def call_ending(self) -> None:
        self.ending += 1

    def play_out(self) -> float:
        return self.left_to_play_s

    async def next_frame(self) -> bytes:
        await asyncio.sleep(0.02)
        return FRAME

    def play(self, pcm: bytes) -> None:
        self.played += len(pcm)
        if len(self.heard) < 10 * 48000:
            self.heard += pcm

    def probe(self) -> None:
        return None

    def stats(self) -> dict[str, int | float]:
        return {"bytes_played": self.played}


@dataclass
class FeedbackLog:
    """A FeedbackPort double: remembers every state shown and earcon played."""

    states: list[State] = field(default_factory=list)
    earcons: list[Earcon] = field(default_factory=list)

    def show(self, state: State) -> None:
        self.states.append(state)

    def earcon(self, which: Earcon) -> None:
        self.earcons.append(which)


@dataclass
class FakeLink:
    """A LinkPort double: up or down as the test says; a call is placed when the test answers it.

    `start_call` waits for `answer()` (or `refuse()`), so a test can act while a call connects;
    `calls` records every request the session made, in order."""

    up: bool = True
    stats: LinkStats = field(default_factory=LinkStats)
    listener: LinkListener | None = None
    calls: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    abandoned: int = 0
    end_answered: bool = True
    _answer: asyncio.Future[CallInfo] | None = None

    def attach(self, listener: LinkListener) -> None:
        self.listener = listener

    def wake(self) -> None:
        self.calls.append("wake")

    async def wait_up(self, within_s: float) -> bool:
        self.calls.append("wait_up")
        return self.up

    async def start_call(self, reconnect: bool = False) -> CallInfo:
        self.calls.append("resume" if reconnect else "start_call")
        self._answer = asyncio.get_running_loop().create_future()
        try:
            return await self._answer
        except asyncio.CancelledError:
            self.abandoned += 1  # the real link closes the socket here
            raise
        finally:
            self._answer = None

    @property
    def connecting(self) -> bool:
        return self._answer is not None

    def answer(self, info: CallInfo = CALL) -> None:
        assert self._answer is not None, "no call is connecting"
        self._answer.set_result(info)

    def refuse(self, error: BaseException) -> None:
        assert self._answer is not None, "no call is connecting"
        self._answer.set_exception(error)

    async def send_audio(self, pcm: bytes) -> None:
        await asyncio.sleep(0)

    async def end_call(self, reason: str = "user_request") -> bool:
        self.calls.append("end_call")
        self.ended.append(reason)
        return self.end_answered

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def stop(self) -> None:
        self.calls.append("stop")


def _typed(link: FakeLink, audio: PacedMicrophone, feedback: FeedbackLog) -> None:
    """mypy checks here that the fakes satisfy the session's ports."""
    _l: LinkPort = link
    _a: AudioPort = audio
    _f: FeedbackPort = feedback
