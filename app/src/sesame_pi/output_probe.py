"""Does the speaker's fill level tell what it still has to play? The question `output_mode =
"auto"` asks once per device before choosing the writer or PortAudio's callback.

The writer (see `speaker`) keeps the device lean by its fill level: what ALSA says was written
and not yet taken. On a DAC (a hw device, or dmix as the audio role sets it up) that is the
truth, since the card takes a period at a time in real time. A sound server behind ALSA's pulse
or pipewire plugin pulls the stream into its own buffers ahead of playing it, and the fill reads
empty while the audio still waits. Measured behind PulseAudio (the echo bench's room, 20 s
calls): a writer that took the empty fill at its word found the device dry hundreds of times a
call and primed its playout buffer again each time (25 to 146 times; 25 gaps of 70-140 ms in the
call recorded); one that counted on the clock instead could not see the server really run dry,
and PulseAudio then dropped the audio written after each dry spell (25 ms missing in every 40).
Behind a server, callback mode (the device kept full, as desktop players do) played clean.

`reads_ahead` writes silence for a moment, a period at a time, and watches: a device that takes
more than real time could have played, by more than a period and a half, several times, reads
ahead. Counting restarts each time the fill is at least what the clock allows, so a device that
starts late or a card slower than the clock is never mistaken for one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

PROBE_S = 0.3  # how long a device that keeps up with the clock is watched
SLACK_PERIODS = 1.5  # a DAC takes its period at once: this far ahead of the clock is not a sign
SIGNS = 3  # signs needed: one could be a period boundary met at an unlucky moment
SAMPLE_BYTES = 2


def reads_ahead(
    stream: Any,
    rate: int,
    period_frames: int,
    *,
    channels: int = 1,
    seconds: float = PROBE_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Whether the open blocking output `stream` takes audio faster than real time plays it."""
    capacity = int(stream.get_write_available())
    silence = bytes(period_frames * SAMPLE_BYTES * channels)
    started: float | None = None  # since when real time plays what was written
    written = 0  # frames written since then (the fill counted as written)
    signs = 0
    deadline = clock() + seconds
    while (now := clock()) < deadline:
        fill = capacity - int(stream.get_write_available())
        if started is not None:
            unplayed = written - (now - started) * rate  # what real time cannot have played
            if fill >= unplayed:
                started, written = now, fill
            elif unplayed - fill > SLACK_PERIODS * period_frames:
                signs += 1
                if signs >= SIGNS:
                    return True
        if fill < 2 * period_frames:
            if started is None:
                started, written = now, fill
            stream.write(silence, exception_on_underflow=False)
            written += period_frames
        sleep(period_frames / rate / 4)
    return False
