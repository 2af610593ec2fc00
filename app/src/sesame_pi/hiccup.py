"""Riding out a sound device that stalls or errors mid-call, within a grace period.

A USB card that hiccups or a sound server that stalls for a few seconds should not end a call the
service still holds: the engine (see `audio`) reopens its streams and the uplink carries silence
meanwhile, so the service's turn detection keeps going. Only a device still gone after
`device_grace_s` ends the call. This module keeps the books for that (when the device was last
seen working, when to try again, how many hiccups a call survived and how long they lasted) and
paces the silence; the engine owns the streams. No PortAudio here, and the clock is injectable,
so the rules are tested without a sound card.
"""

from __future__ import annotations

import time
from collections.abc import Callable

RETRY_S = 1.0  # between reopen attempts while the device stays gone
# A device seen stopped again this soon after it seemed back, with no sign of life since then,
# never came back: its hiccup goes on.
RELAPSE_S = 5.0
MAX_LAG_FRAMES = 2  # a loop that ran late catches up this many silence frames, not a burst


class DeviceGrace:
    """One call's hiccups: `begin` when the watchdog sees a device stop, `end` once it delivers
    again, `expired` once it stayed gone for the grace; `figures` for the call summary."""

    def __init__(self, grace_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_s = grace_s
        self._clock = clock
        self.hiccups = 0  # hiccups this call survived or is in
        self.reopens = 0  # reopen attempts, successful or not
        self.gap_s = 0.0  # total length of the hiccups that ended
        self.since: float | None = None  # the device was last seen working then; None: all well
        self.detail = ""
        self._next_try = 0.0
        self._ended: tuple[float, float] | None = None  # the last hiccup's (since, end)

    @property
    def active(self) -> bool:
        return self.since is not None

    def begin(self, detail: str, since: float) -> None:
        """The watchdog saw a device stop; it last showed life at `since` (its clock). One that
        showed none after the last recovery, seen within RELAPSE_S of it, is that hiccup's
        relapse, and its clock goes on: a reopened speaker looks alive for a moment whether it
        plays or not, and a frozen DAC beside a working microphone, counted afresh each time,
        never used up the grace (the call went on unheard, a reopen every two seconds). A
        device that worked after the recovery stops anew, with a grace of its own."""
        now = self._clock()
        ended, self._ended = self._ended, None
        if ended is not None and now - ended[1] < RELAPSE_S and since <= ended[1]:
            self.since, end = ended
            self.gap_s -= end - self.since  # (counted again, whole, when this one ends)
        else:
            self.hiccups += 1
            self.since = min(since, now)
        self.detail = detail
        self._next_try = now

    def should_try(self) -> bool:
        return self.active and self._clock() >= self._next_try

    def tried(self) -> None:
        """A reopen attempt starts now; the next one waits RETRY_S."""
        self.reopens += 1
        self._next_try = self._clock() + RETRY_S

    def gone_s(self) -> float:
        return 0.0 if self.since is None else self._clock() - self.since

    def expired(self) -> bool:
        return self.active and self.gone_s() >= self.grace_s

    def end(self) -> float:
        """The device delivers again: the hiccup's length (s), now counted in `gap_s`."""
        gap = self.gone_s()
        self.gap_s += gap
        if self.since is not None:
            self._ended = (self.since, self.since + gap)
        self.since = None
        return gap

    def figures(self) -> dict[str, int | float]:
        """For `call_ended`: how many hiccups, how long in all (an ongoing one included)."""
        return {
            "device_hiccups": self.hiccups,
            "device_gap_ms": round((self.gap_s + self.gone_s()) * 1000),
            "device_reopens": self.reopens,
        }


class SilencePacer:
    """Frames of silence at real-time pace on the loop's clock while the microphone is gone:
    one frame every `frame_s`, never a burst (a late loop catches up at most MAX_LAG_FRAMES)."""

    def __init__(self, frame_s: float) -> None:
        self.frame_s = frame_s
        self._due = 0.0

    def start(self, now: float) -> None:
        self._due = now

    def wait_s(self, now: float) -> float:
        """How long until the next frame is due (0: now)."""
        return max(0.0, self._due - now)

    def took(self, now: float) -> None:
        self._due = max(self._due + self.frame_s, now - MAX_LAG_FRAMES * self.frame_s)
