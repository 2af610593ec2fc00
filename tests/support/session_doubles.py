"""Doubles for the session's audio and feedback ports, for tests that run a real link."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sesame_pi.states import Earcon, State

FRAME = b"\x10\x00" * 320  # 20 ms of 16 kHz PCM


@dataclass
class PacedMicrophone:
    """An AudioPort double: 20 ms frames at real-time pace while a call runs."""

    started: list[int] = field(default_factory=list)
    stopped: int = 0
    played: int = 0

    def start_call(self, playback_rate: int) -> None:
        self.started.append(playback_rate)

    def stop_call(self) -> None:
        self.stopped += 1

    async def next_frame(self) -> bytes:
        await asyncio.sleep(0.02)
        return FRAME

    def play(self, pcm: bytes) -> None:
        self.played += len(pcm)

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
