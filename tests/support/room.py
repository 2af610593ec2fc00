"""A synthetic room for the echo canceller: speech made with espeak-ng, a speaker that clips
softly, a decaying-noise room response, a little clock drift and a noise floor.

A purely linear, drift-free echo flatters any canceller; this room has what real boxes have. The
far end (the agent) is played at 24 kHz and stamped with DAC times that account for only part of
the real delay, so the stage's delay estimator must find the rest, as it must on a HAT whose
playback-to-capture path is hundreds of milliseconds longer than PortAudio reports.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Pcm = npt.NDArray[np.int16]

FAR_RATE = 24000
MIC_RATE = 16000
FRAME_MS = 20

FAR_VOICE = "en-us+f3"
NEAR_VOICE = "en-gb-x-rp+m3"
FAR_TEXT = (
    "Hello there, it is good to hear from you again. I was thinking about what you said "
    "yesterday about the garden. Tomatoes like a lot of sun and a little water every morning. "
    "If the leaves turn yellow, the soil may be too wet. Would you like me to explain how to "
    "build a small raised bed? It takes an afternoon and a few boards of untreated wood."
)
NEAR_TEXT = (
    "Wait, I have a question about the boards. How long should they be, and do I need screws "
    "or nails? Also my neighbour said that marigolds keep the insects away. Is that true?"
)


def speech(text: str, voice: str, rate: int, workdir: Path) -> Pcm:
    """Speech from espeak-ng, converted to `rate` with sox, as int16 samples."""
    espeak = shutil.which("espeak-ng")
    sox = shutil.which("sox")
    if espeak is None or sox is None:
        raise RuntimeError("the echo tests need espeak-ng and sox: apt-get install espeak-ng sox")
    wav = workdir / f"{voice}-{abs(hash(text)) % 10**8}.wav"
    raw = wav.with_suffix(f".{rate}.raw")
    subprocess.run([espeak, "-v", voice, "-s", "165", "-w", str(wav), text], check=True)
    subprocess.run(
        [sox, str(wav), "-r", str(rate), "-b", "16", "-e", "signed", "-c", "1", str(raw)],
        check=True,
    )
    return np.fromfile(raw, np.int16)


def at_level(x: Floats, dbfs: float) -> Floats:
    """Scale so that the active part (10 ms blocks within 30 dB of the loudest) sits at dbfs."""
    blocks = x[: len(x) // 160 * 160].reshape(-1, 160)
    power = np.mean(blocks**2, axis=1)
    active = power > power.max() * 1e-3
    rms = np.sqrt(np.mean(power[active]))
    return x * (32768 * 10 ** (dbfs / 20) / rms)


def fit(x: Floats, n: int) -> Floats:
    """x looped or cut to n samples."""
    reps = -(-n // len(x))
    return np.tile(x, reps)[:n]


def room_response(
    rt60_s: float, rate: int, rng: np.random.Generator, drr_db: float = 0.0
) -> Floats:
    """A direct path, then exponentially decaying noise (60 dB down after rt60_s) carrying
    drr_db less energy than the direct path (0 dB: as much sound comes from the walls)."""
    n = int(rt60_s * rate)
    t = np.arange(n) / rate
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60_s)
    tail[: int(0.002 * rate)] = 0.0  # the first reflection comes a couple of ms after the direct
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail**2))
    tail[0] = 1.0
    return tail


def convolve(x: Floats, h: Floats) -> Floats:
    n = len(x) + len(h) - 1
    size = 1 << (n - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)
    return y[: len(x)]


def to_mic_clock(far24: Floats, drift_ppm: float) -> Floats:
    """The far signal at the microphone's 16 kHz, the speaker's clock `drift_ppm` fast."""
    from sesame_pi.echo.resample import Resampler

    x16 = Resampler(FAR_RATE, MIC_RATE).process(far24.astype(np.float32)).astype(np.float64)
    t = np.arange(len(x16)) * (1 + drift_ppm * 1e-6)
    return np.interp(t, np.arange(len(x16)), x16, right=0.0)


@dataclass
class Scene:
    """One recording: what the far end sent, what the microphone heard, and its components."""

    far: Pcm  # 24 kHz, what the playback callback handed the device
    mic: Pcm  # 16 kHz
    near: Floats  # the person's voice as it reaches the microphone
    echo: Floats  # the agent's voice as it reaches the microphone
    stamp_delay_ms: float
    delays_ms: list[tuple[float, float]] = field(default_factory=list)  # (from s, delay)

    @property
    def seconds(self) -> float:
        return len(self.mic) / MIC_RATE


def build(
    far_voice: Floats,
    near_voice: Floats,
    *,
    seconds: float,
    far_spans: list[tuple[float, float]],
    near_spans: list[tuple[float, float]],
    delay_ms: float,
    change: tuple[float, float] | None = None,  # (at s, new delay ms): the room changes
    rt60_s: float = 0.3,
    echo_db: float = -9.0,
    far_dbfs: float = -20.0,
    near_dbfs: float = -28.0,
    noise_dbfs: float = -65.0,
    drift_ppm: float = 80.0,
    clip_drive: float = 1.5,
    stamp_delay_ms: float = 20.0,
    far_noise_dbfs: float | None = None,
    seed: int = 1,
) -> Scene:
    """The far end talks during far_spans, the person during near_spans (seconds)."""
    rng = np.random.default_rng(seed)
    n24, n16 = int(seconds * FAR_RATE), int(seconds * MIC_RATE)
    far = np.zeros(n24)
    voice = at_level(far_voice, far_dbfs)
    cursor = 0
    for a, b in far_spans:
        i, j = int(a * FAR_RATE), int(b * FAR_RATE)
        far[i:j] = fit(np.roll(voice, -cursor), j - i)
        cursor += j - i
    if far_noise_dbfs is not None:  # the service's comfort noise, always there
        far += rng.standard_normal(n24) * 32768 * 10 ** (far_noise_dbfs / 20)
    far = np.clip(far, -32768, 32767)
    played = np.tanh(clip_drive * far / 32768) / np.tanh(clip_drive) * 32768  # the speaker
    at_mic = to_mic_clock(played, drift_ppm)[:n16]
    at_mic = np.pad(at_mic, (0, n16 - len(at_mic)))

    def echo_for(delay: float, response_seed: int) -> Floats:
        h = room_response(rt60_s, MIC_RATE, np.random.default_rng(response_seed))
        shift = int(delay * MIC_RATE / 1000)
        y = convolve(np.concatenate((np.zeros(shift), at_mic))[:n16], h)
        return y * 10 ** (echo_db / 20) / np.sqrt(np.sum(h**2))

    echo = echo_for(delay_ms, seed + 100)
    delays = [(0.0, delay_ms)]
    if change is not None:
        at, new_delay = change
        k = int(at * MIC_RATE)
        echo[k:] = echo_for(new_delay, seed + 200)[k:]
        delays.append((at, new_delay))
    near = np.zeros(n16)
    nvoice = at_level(near_voice, near_dbfs)
    cursor = 0
    for a, b in near_spans:
        i, j = int(a * MIC_RATE), int(b * MIC_RATE)
        near[i:j] = fit(np.roll(nvoice, -cursor), j - i)
        cursor += j - i
    noise = rng.standard_normal(n16) * 32768 * 10 ** (noise_dbfs / 20)
    mic = np.clip(np.rint(echo + near + noise), -32768, 32767).astype(np.int16)
    return Scene(far.astype(np.int16), mic, near, echo, stamp_delay_ms, delays)


class Processor(Protocol):
    """What the audio engine does, as far as the echo stage can tell: the playback callback hands
    20 ms of far end with its DAC time a little ahead of the loop; the loop processes each capture
    frame with its ADC time."""

    def far_end(self, pcm: bytes, rate: int, dac_time: float) -> None: ...

    def process(self, mic: bytes, adc_time: float) -> bytes: ...


def run(stage: Processor, scene: Scene, *, lead_ms: float = 40.0) -> Pcm:
    """Feed the scene through the stage in real-time order; returns the uplink at 16 kHz."""
    far_step = FAR_RATE * FRAME_MS // 1000
    mic_step = MIC_RATE * FRAME_MS // 1000
    far_bytes, mic_bytes = scene.far.tobytes(), scene.mic.tobytes()
    out = []
    k = 0
    far_frames = len(scene.far) // far_step
    for j in range(len(scene.mic) // mic_step):
        now = (j + 1) * FRAME_MS / 1000  # the loop runs once the frame is complete
        while k < far_frames:
            dac = k * FRAME_MS / 1000 + scene.stamp_delay_ms / 1000
            if dac - lead_ms / 1000 > now:
                break
            stage.far_end(far_bytes[2 * k * far_step : 2 * (k + 1) * far_step], FAR_RATE, dac)
            k += 1
        frame = mic_bytes[2 * j * mic_step : 2 * (j + 1) * mic_step]
        out.append(stage.process(frame, j * FRAME_MS / 1000))
    return np.frombuffer(b"".join(out), np.int16)


# ------------------------------------------------------------------ measures


def block_power(x: npt.ArrayLike, block: int = 160) -> Floats:
    a = np.asarray(x, np.float64)
    a = a[: len(a) // block * block].reshape(-1, block)
    return np.mean(a * a, axis=1)


def db(ratio: float | Floats) -> Floats:
    return np.asarray(10 * np.log10(np.maximum(ratio, 1e-20)))


def span_mask(n_blocks: int, a: float, b: float, block_s: float = 0.01) -> npt.NDArray[np.bool_]:
    m = np.zeros(n_blocks, bool)
    m[int(a / block_s) : int(b / block_s)] = True
    return m


def erle_blocks(scene: Scene, out: Pcm, a: float, b: float, window: int = 10) -> Floats:
    """ERLE (dB) over windows of `window` 10 ms blocks between a and b (s) where the echo is
    loud (within 25 dB of its peak) and the person silent."""
    mic_p, out_p = block_power(scene.mic), block_power(out)
    echo_p, near_p = block_power(scene.echo), block_power(scene.near)
    n = min(len(mic_p), len(out_p))
    loud = (echo_p[:n] > echo_p.max() * 10**-2.5) & (near_p[:n] == 0)
    keep = span_mask(n, a, b) & loud
    idx = np.flatnonzero(keep)
    idx = idx[: len(idx) // window * window].reshape(-1, window)
    return np.asarray(db(mic_p[idx].sum(axis=1) / (out_p[idx].sum(axis=1) + 1e-9)))


def near_gain_db(scene: Scene, out: Pcm, a: float, b: float) -> float:
    """Uplink level over the person's speech between a and b, against the person alone (dB)."""
    out_p, near_p = block_power(out), block_power(scene.near)
    n = min(len(out_p), len(near_p))
    talk = span_mask(n, a, b) & (near_p[:n] > near_p.max() * 10**-2.5)
    return float(db(out_p[:n][talk].sum() / near_p[:n][talk].sum()))


def converged_after(scene: Scene, out: Pcm, a: float, b: float, target_db: float) -> float:
    """Seconds from a until the ERLE of every following 0.5 s window stays above target_db."""
    mic_p, out_p = block_power(scene.mic), block_power(out)
    echo_p = block_power(scene.echo)
    n = min(len(mic_p), len(out_p))
    loud = echo_p[:n] > echo_p.max() * 10**-2.5
    times = np.arange(a, b - 0.5, 0.1)
    values = []
    for t in times:
        m = span_mask(n, t, t + 0.5) & loud
        values.append(
            float(db(mic_p[m].sum() / (out_p[m].sum() + 1e-9))) if m.sum() > 10 else np.inf
        )
    ok = np.array(values) >= target_db
    for i in range(len(ok)):
        if ok[i:].all():
            return float(times[i] - a)
    return float(b - a)
