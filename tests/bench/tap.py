"""Microphone and speaker on one clock: both virtual devices become two channels of one sink.

Two separately started recorders would differ by an unknown start offset of a few milliseconds,
as large as what we measure, and `module-loopback`s from the two monitors drift apart as each
adapts its own rate (tried: the skew wandered between -9 and +70 ms). So the benchmark rewires the
private PulseAudio instead: it replaces the `micfeed` and `speaker` null sinks of `VirtualAudio`
with two `module-remap-sink`s of the same names onto one stereo null sink, `bench`, whose left
channel is the microphone and right channel the speaker. The app still opens `micfeed.monitor` and
`speaker` through ALSA, unaware; one `parec` of `bench.monitor` holds both copies of every burst,
each stamped at the moment the one sink clock rendered it: the microphone copy when the app's
capture stream could first see it, the speaker copy when the app's playback reached the device.
A `module-loopback` from microphone to speaker, on that same clock, checks the tap: at 20 ms it
measures 20.0 ms; at its minimum (about 7 ms) it is the harness floor.
"""

from __future__ import annotations

import contextlib
import subprocess
import wave
from pathlib import Path

import numpy as np

from support.virtual_audio import VirtualAudio

TAP_RATE = 48000


class DuplexTap:
    """Rewires the devices on `open`; they stay so for the daemon's life."""

    def __init__(self, sound: VirtualAudio) -> None:
        self.sound = sound
        self._helpers: list[subprocess.Popen[bytes]] = []

    def _pactl(self, *args: str) -> str:
        done = subprocess.run(
            ["pactl", *args],
            env=self.sound.child_env(),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pactl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip()

    def open(self) -> DuplexTap:
        for line in self._pactl("list", "short", "modules").splitlines():
            index, name, *args = line.split("\t")
            if name == "module-null-sink" and any(
                f"sink_name={sink}" in " ".join(args) for sink in ("micfeed", "speaker")
            ):
                self._pactl("unload-module", index)
        self._pactl(
            "load-module", "module-null-sink", "sink_name=bench", f"rate={TAP_RATE}",
            "channels=2", "channel_map=front-left,front-right",
        )  # fmt: skip
        for sink, side in (("micfeed", "front-left"), ("speaker", "front-right")):
            self._pactl(
                "load-module", "module-remap-sink", f"sink_name={sink}", "master=bench",
                "channels=1", "channel_map=mono", f"master_channel_map={side}", "remix=no",
            )  # fmt: skip
        self._pactl("set-default-sink", "speaker")
        self._pactl("set-default-source", "micfeed.monitor")
        # As VirtualAudio does for its own sinks: a 10 ms client keeps the sink rendering in small
        # blocks, so nothing the benchmark opens waits for a 2 s block.
        self._helpers.append(
            subprocess.Popen(
                ["parec", "--device=bench.monitor", "--latency-msec=10", "--raw", "/dev/null"],
                env=self.sound.child_env(),
                stdout=subprocess.DEVNULL,
            )
        )
        return self

    def close(self) -> None:
        for proc in self._helpers:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        self._helpers.clear()

    def __enter__(self) -> DuplexTap:
        return self.open()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ recording

    def record(self, wav_file: Path, rate: int = TAP_RATE) -> subprocess.Popen[bytes]:
        """Record `bench.monitor` (left: microphone, right: speaker) until `stop_recording`."""
        proc = subprocess.Popen(
            [
                "parec",
                "--device=bench.monitor",
                "--file-format=wav",
                "--format=s16le",
                f"--rate={rate}",
                "--channels=2",
                "--latency-msec=10",
                str(wav_file),
            ],
            env=self.sound.child_env(),
        )
        self._helpers.append(proc)  # stopped with the tap if we fail first
        return proc

    def loopback(self, latency_ms: int) -> str:
        """Microphone straight to speaker inside PulseAudio (no client): returns the module id.

        On the one sink clock it keeps its latency exactly (a 20 ms loopback measures 20.0 ms),
        which makes it both the harness floor (at its minimum) and a check of the tap itself.
        """
        return self._pactl(
            "load-module", "module-loopback", "source=micfeed.monitor", "sink=speaker",
            f"latency_msec={latency_ms}", "source_dont_move=true", "sink_dont_move=true",
        )  # fmt: skip

    def unload(self, module: str) -> None:
        self._pactl("unload-module", module)


def read_stereo(wav_file: Path) -> tuple[np.ndarray, int]:
    """A 16-bit stereo WAV as floats in -1..1, shape (frames, 2)."""
    with wave.open(str(wav_file), "rb") as src:
        if src.getnchannels() != 2 or src.getsampwidth() != 2:
            raise ValueError(f"{wav_file} is not 16-bit stereo")
        raw = src.readframes(src.getnframes())
        rate = src.getframerate()
    data = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768
    return data.reshape(-1, 2), rate
