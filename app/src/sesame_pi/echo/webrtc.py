"""WebRTC's AEC3 through pywebrtc-audio (the audio processing module Chrome runs), 10 ms blocks.

Its wheels exist for x86_64 and aarch64 (CPython 3.10-3.14), not for armv7, so the dependency is
installed only where a wheel exists and this engine says so plainly elsewhere. AEC3 runs with its
high-pass filter (always on with AEC) and WebRTC noise suppression at its mildest level, as a
browser's getUserMedia would, so the service receives what it expects from a browser.
"""

from __future__ import annotations

import importlib
import platform
from typing import Any

from .engine import EchoUnavailable, Samples

MODULE = "pywebrtc_audio"
NS_LEVEL = 1  # 0..3 = 6, 12, 18, 21 dB


class WebRtcCanceller:
    """AEC3 + noise suppression on 10 ms blocks at the capture rate."""

    name = "webrtc"
    # AEC3's own delay estimator covers a couple of hundred ms; measured live (tests/bench/
    # echo_live.py), an early 68 ms shift by the stage cost it 4 s of echo while it re-learnt.
    tracks_delay_ms = 150.0

    def __init__(self, rate: int, *, noise_suppression: bool = True, module: str = MODULE) -> None:
        try:
            mod: Any = importlib.import_module(module)
            processor_type = mod.AudioProcessor
        except (ImportError, AttributeError) as exc:
            raise EchoUnavailable(
                f"echo canceller 'webrtc' is unavailable: the Python module {module} is not "
                f"installed on this {platform.machine()} machine ({exc}); install it with `pip "
                "install 'pywebrtc-audio>=0.2'` (wheels exist for x86_64 and aarch64 only) or set "
                'echo_cancel = "speex".'
            ) from exc
        self._ap: Any = processor_type(
            sample_rate=rate,
            echo_cancellation=True,
            noise_suppression=noise_suppression,
            ns_level=NS_LEVEL,
            stream_delay_ms=0,
        )

    def process(self, mic: Samples, ref: Samples) -> Samples:
        # The stage hands over contiguous int16 arrays (the binding converts anything else
        # itself): no conversion calls here, this runs for every frame.
        out: Samples = self._ap.process(mic, ref)
        return out

    def reset(self) -> None:
        if self._ap is not None:
            self._ap.reset()

    def close(self) -> None:
        self._ap = None
