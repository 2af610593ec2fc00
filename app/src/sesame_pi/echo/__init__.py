"""Echo control between the microphone and the uplink: the agent never hears itself.

`EchoStage` takes what the speaker really played (`far_end`, on PortAudio's playback thread) and
each capture frame (`process`, on the event loop), lines the two up in time (align.py), and hands
10 ms blocks to one engine: WebRTC AEC3 (webrtc.py) or speexdsp (speex.py). Ducking (duck.py) is
the half-duplex fallback, on the far end's level.

Which engine "auto" picks, from tests/bench/echo_offline.py on the synthetic room (RT60 0.3 s,
speaker clipping, 80 ppm drift, -65 dBFS noise floor; the stamps 20 ms short of the real delay),
x86_64, one process per run:

    engine  delay  ERLE median/p10  loss alone  double talk  converged  again  CPU (s/s)  +MB
    webrtc   60 ms   47.1 / 40.3      0.35 dB     -4.3 dB      0.6 s    1.7 s    0.009   12.2
    speex    60 ms   20.6 / 13.1      0.38 dB     -0.5 dB      6.4 s    3.2 s    0.006   11.0
    webrtc  300 ms   47.0 / 37.8      0.65 dB     -3.4 dB      0.8 s    2.2 s    0.009   12.2
    speex   300 ms   19.3 / 13.3      0.44 dB     -0.5 dB      6.9 s    2.9 s    0.006   11.0

(converged: every later 0.5 s window above 15 dB; "again": after the delay jumps; "off" does no
work, 0.0003 s/s, and grows peak memory by 9.6 MB in this harness.) WebRTC cancels 26 dB more
echo and converges far faster for about one and a half times speex's CPU, so it is the default
wherever its wheel exists (x86_64, aarch64). (Before the stage dithered the engines' inputs, AEC3
cost 0.020 s/s here: the room's digital silence between sentences drove its filters into
subnormal numbers; `LsbDither` says more.) armv7 has no wheel and gets speex, which keeps double
talk best but leaves about 20 dB. Neither library: "off".
"""

from __future__ import annotations

import importlib.util
import logging
import platform

from ..logs import event
from .engine import Canceller, EchoUnavailable
from .stage import Stage, open_engine

ENGINES = ("auto", "webrtc", "speex", "off")
WEBRTC_ARCHES = ("x86_64", "amd64", "aarch64", "arm64")

__all__ = ["ENGINES", "EchoStage", "EchoUnavailable", "resolve_engine"]


def resolve_engine(name: str) -> str:
    """ "auto" -> the best engine this machine can run ("webrtc", "speex" or "off")."""
    if name not in ENGINES:
        raise EchoUnavailable(
            f"echo canceller {name!r} does not exist; choose one of {', '.join(ENGINES)}."
        )
    if name != "auto":
        return name
    if (
        platform.machine().lower() in WEBRTC_ARCHES
        and importlib.util.find_spec("pywebrtc_audio") is not None
    ):
        return "webrtc"
    try:
        open_engine("speex", 16000).close()
    except EchoUnavailable:
        return "off"
    return "speex"


def _open_best(name: str, rate: int) -> Canceller:
    """The engine `name` names; for "auto", speex when webrtc's module is there but does not work
    (a broken or placeholder install), rather than no cancelling at all."""
    chosen = resolve_engine(name)
    if name == "auto" and chosen == "off":  # nothing runs here: said once, not a quiet "off"
        raise EchoUnavailable(
            f'echo_cancel = "auto" found no echo canceller that runs on this {platform.machine()} '
            "machine (no pywebrtc-audio, which has wheels for x86_64 and aarch64 only, and no "
            "libspeexdsp1): `apt-get install libspeexdsp1` gives one on any machine; or set "
            'echo_cancel = "off" (and mute_mic_while_playing = true for the half-duplex '
            "fallback)."
        )
    try:
        return open_engine(chosen, rate)
    except EchoUnavailable as exc:
        if name != "auto" or chosen != "webrtc":
            raise
        event(
            "echo_engine_fallback",
            logging.WARNING,
            wanted="webrtc",
            using="speex",
            detail=str(exc),
        )
        return open_engine("speex", rate)


class EchoStage(Stage):
    """Between the microphone and the uplink: cancels the far end's echo from capture frames.

    `far_end(pcm, rate, dac_time)` on the playback thread (cheap: stores bytes); `process(mic,
    adc_time)` on the loop returns the cleaned frame; `stats()` for the call summary.
    """

    def __init__(
        self,
        engine: str,
        capture_rate: int = 16000,
        *,
        duck: bool = False,
        max_delay_ms: int = 500,
    ) -> None:
        super().__init__(
            _open_best(engine, capture_rate),
            capture_rate,
            duck=duck,
            max_delay_ms=max_delay_ms,
        )
