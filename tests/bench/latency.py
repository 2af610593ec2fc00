"""Round-trip latency through a client, with its CPU and memory on the same call.

A burst train goes into the virtual microphone; the echoing stand-in sends each frame straight
back; the client plays it. `DuplexTap` records microphone and speaker on one clock, and
`impulses.pair` finds each burst's two copies. The same train through a PulseAudio loopback from
microphone to speaker (no client, no server) gives the harness floor, and checks the tap.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from impulses import Pairing, impulse_train, pair
from procstat import Usage, UsageMeter
from service import HOLD_S, wait_warm
from tap import DuplexTap, read_stereo

from support.app_process import AppProcess
from support.virtual_audio import VirtualAudio, write_wav

MIC_RATE = 16000
PERIOD_S = 0.25
SETTLE_S = 1.5  # after call_live: the start and live earcons are over, the buffers are primed
HERE = Path(__file__).resolve().parent


@dataclass
class Probe:
    """The devices, the tap and a place for files; one per benchmark run."""

    sound: VirtualAudio
    tap: DuplexTap
    work: Path

    def train(self, name: str, seconds: float) -> tuple[Path, int]:
        count = max(40, int(seconds / PERIOD_S))
        wav = write_wav(
            self.work / f"{name}-mic.wav", impulse_train(count, PERIOD_S, MIC_RATE), MIC_RATE
        )
        return wav, count

    def feed(self, wav: Path) -> None:
        """Play the train into the microphone and wait until it has all been played."""
        player = self.sound.feed_microphone(wav)
        player.wait()
        time.sleep(0.6)  # the last burst's copy is still on its way

    def analyse(self, recording: Path) -> Pairing:
        stereo, rate = read_stereo(recording)
        return pair(stereo, rate)


def harness_floor(probe: Probe, seconds: float, latency_ms: int) -> Pairing:
    """The train through a PulseAudio loopback from microphone to speaker: no client at all."""
    wav, _ = probe.train(f"loopback-{latency_ms}", seconds)
    recording = probe.work / f"loopback-{latency_ms}-tap.wav"
    module = probe.tap.loopback(latency_ms)
    recorder = probe.tap.record(recording)
    try:
        time.sleep(1.0)
        probe.feed(wav)
    finally:
        probe.sound.stop_recording(recorder)
        probe.tap.unload(module)
    return probe.analyse(recording)


@dataclass
class CallFigures:
    pairing: Pairing
    usage: Usage
    extra: dict[str, Any]


def app_call(probe: Probe, app: AppProcess, seconds: float) -> CallFigures:
    """One call by the real app: press, settle, the train (CPU/RSS meter running), hold to end."""
    wav, _ = probe.train("app", seconds)
    recording = probe.work / "app-tap.wav"
    recorder = probe.tap.record(recording)
    try:
        mark = app.mark()
        app.press()
        app.wait_event("call_live", after=mark)
        time.sleep(SETTLE_S)
        meter = UsageMeter(app.pid).start()
        probe.feed(wav)
        usage = meter.stop()
        mark = app.mark()
        app.hold(HOLD_S)
        ended = app.wait_event("call_ended", after=mark)
        wait_warm(app, mark)
    finally:
        probe.sound.stop_recording(recorder)
    return CallFigures(probe.analyse(recording), usage, {"call_ended": ended})


def naive_call(
    probe: Probe,
    server_url: str,
    token_file: Path,
    seconds: float,
    name: str = "naive",
    prefix: tuple[str, ...] = (),
) -> CallFigures:
    """The same call by `naive_client.py`, metered the same way (`prefix`: e.g. a network
    namespace to run it in). `extra` holds its exit code and its underrun count."""
    wav, _ = probe.train(name, seconds)
    recording = probe.work / f"{name}-tap.wav"
    out = probe.work / f"{name}-stdout.txt"
    recorder = probe.tap.record(recording)
    command = [
        *prefix, sys.executable, str(HERE / "naive_client.py"),
        "--server", server_url, "--token-file", str(token_file),
        "--seconds", str(seconds + SETTLE_S + 4),
    ]  # fmt: skip
    with out.open("w") as stdout, (probe.work / f"{name}-stderr.txt").open("w") as stderr:
        client = subprocess.Popen(
            command, env=probe.sound.child_env(), stdout=stdout, stderr=stderr
        )
    try:
        _wait_for_line(out, "naive_live", client, timeout=20)
        time.sleep(SETTLE_S)
        meter = UsageMeter(client.pid).start()
        probe.feed(wav)
        usage = meter.stop()
        code = client.wait(30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        probe.sound.stop_recording(recorder)
    # alsa-lib reports each underrun it recovers the client's stream from on stderr; the naive
    # client does nothing else about them (asking PyAudio to raise instead stops its playback).
    stderr_text = (probe.work / f"{name}-stderr.txt").read_text(errors="replace")
    underruns = stderr_text.count("underrun occurred")
    return CallFigures(probe.analyse(recording), usage, {"exit_code": code, "underruns": underruns})


def _wait_for_line(path: Path, marker: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker in path.read_text():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited ({proc.returncode}) before {marker}")
        time.sleep(0.05)
    raise TimeoutError(f"no {marker} within {timeout} s")
