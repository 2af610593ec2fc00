"""Virtual sound hardware for tests, the demo and benchmarks: a private PulseAudio behind ALSA.

The app sees ordinary ALSA devices through the pulse plugin, so its real PortAudio/ALSA path runs,
paced in real time by PulseAudio's null sinks:

- `speaker`: a null sink; ALSA `default` playback goes here. `record_speaker()` taps its monitor.
- `micfeed`: a null sink the test plays into; its monitor is ALSA `default` capture (the mic).

Nothing touches the machine's own sound set-up: the daemon, its socket and the asoundrc live in a
temporary directory, and `env` carries the variables a child process needs to use them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import wave
from collections.abc import Iterator
from pathlib import Path

SPEAKER_RATE = 48000  # what a real card such as the WM8960 runs at; ALSA/pulse convert for us
ASOUNDRC = """\
pcm.!default {
    type asym
    playback.pcm "sesame_speaker"
    capture.pcm "sesame_mic"
}
pcm.sesame_speaker { type pulse; device "speaker" }
pcm.sesame_mic { type pulse; device "micfeed.monitor" }
ctl.!default { type pulse }
"""


class VirtualAudioUnavailable(RuntimeError):
    pass


class VirtualAudio:
    """A running private PulseAudio daemon; use as a context manager."""

    def __init__(self, root: Path, fragment_ms: int = 5) -> None:
        self.root = root
        self.fragment_ms = fragment_ms
        self.runtime = root / "pulse"
        self.home = root / "home"
        self.socket = self.runtime / "native"
        self._daemon: subprocess.Popen[bytes] | None = None
        self._helpers: list[subprocess.Popen[bytes]] = []

    # ------------------------------------------------------------ environment

    @property
    def env(self) -> dict[str, str]:
        """Variables for a child (or this process, before PortAudio starts) to use these devices."""
        return {
            "HOME": str(self.home),
            "PULSE_SERVER": f"unix:{self.socket}",
            "PULSE_RUNTIME_PATH": str(self.runtime),
            "PULSE_STATE_PATH": str(self.runtime),
            "PULSE_COOKIE": str(self.runtime / "cookie"),
            "XDG_RUNTIME_DIR": str(self.runtime),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "ALSA_CONFIG_PATH": "/usr/share/alsa/alsa.conf",
        }

    def child_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    # ------------------------------------------------------------ lifetime

    def start(self) -> VirtualAudio:
        if shutil.which("pulseaudio") is None:
            raise VirtualAudioUnavailable("pulseaudio is not installed; run `make install`")
        self.runtime.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / ".asoundrc").write_text(ASOUNDRC)
        (self.home / ".config" / "alsa").mkdir(parents=True, exist_ok=True)
        (self.home / ".config" / "alsa" / "asoundrc").write_text(ASOUNDRC)
        (self.home / ".config" / "pulse").mkdir(parents=True, exist_ok=True)
        (self.home / ".config" / "pulse" / "daemon.conf").write_text(
            f"default-fragments = 4\ndefault-fragment-size-msec = {self.fragment_ms}\n"
            "default-sample-rate = 48000\nflat-volumes = no\n"
        )
        command = [
            "pulseaudio",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--disallow-exit",
            "--use-pid-file=no",
            "--system=no",
            "--disable-shm",
            "-n",
            "--log-target=stderr",
            "--log-level=error",
            "-L",
            f"module-native-protocol-unix auth-anonymous=1 socket={self.socket}",
            "-L",
            f"module-null-sink sink_name=speaker rate={SPEAKER_RATE} channels=2",
            "-L",
            "module-null-sink sink_name=micfeed rate=16000 channels=1",
            "-L",
            "module-always-sink",
        ]
        log = (self.root / "pulseaudio.log").open("wb")
        self._daemon = subprocess.Popen(
            command, env=self.child_env(), stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._daemon.poll() is not None:
                raise VirtualAudioUnavailable(
                    "pulseaudio exited: " + (self.root / "pulseaudio.log").read_text()[-2000:]
                )
            if self.socket.exists() and self._pactl("info").returncode == 0:
                self._pactl("set-default-sink", "speaker")
                self._pactl("set-default-source", "micfeed.monitor")
                self._keep_sinks_low_latency()
                return self
            time.sleep(0.1)
        self.stop()
        raise VirtualAudioUnavailable("pulseaudio did not come up within 15 s")

    def _keep_sinks_low_latency(self) -> None:
        """Hold a 10 ms client on each null sink for the daemon's lifetime, then let it settle.

        An idle null sink renders in 2 s blocks, and a new client's lower latency only takes hold
        after the block in progress, so a capture opened early would wait up to 2 s for its first
        frame. That is the harness, not the app, so the harness pays it once, here.
        """
        silence = [
            "pacat", "--playback", "--device=micfeed", "--latency-msec=10", "--raw",
            "--format=s16le", "--rate=16000", "--channels=1", "/dev/zero",
        ]  # fmt: skip
        tap = ["parec", "--device=speaker.monitor", "--latency-msec=10", "--raw", "/dev/null"]
        for command in (silence, tap):
            self._helpers.append(
                subprocess.Popen(command, env=self.child_env(), stdout=subprocess.DEVNULL)
            )
        time.sleep(2.2)

    def stop(self) -> None:
        for proc in [*self._helpers, self._daemon]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._helpers.clear()
        self._daemon = None

    def __enter__(self) -> VirtualAudio:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _pactl(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["pactl", *args], env=self.child_env(), capture_output=True, timeout=10, check=False
        )

    # ------------------------------------------------------------ signals in and out

    def feed_microphone(self, wav_file: Path) -> subprocess.Popen[bytes]:
        """Play a WAV into the virtual microphone in real time (returns the player process)."""
        proc = subprocess.Popen(
            [
                "pacat",
                "--playback",
                "--device=micfeed",
                "--latency-msec=10",
                "--file-format=wav",
                str(wav_file),
            ],
            env=self.child_env(),
        )
        self._helpers.append(proc)
        return proc

    def record_speaker(self, wav_file: Path, rate: int = 24000) -> subprocess.Popen[bytes]:
        """Record what the app plays, as mono s16 WAV, until `stop_recording`."""
        proc = subprocess.Popen(
            [
                "parec",
                "--device=speaker.monitor",
                "--file-format=wav",
                "--format=s16le",
                f"--rate={rate}",
                "--channels=1",
                "--latency-msec=10",
                str(wav_file),
            ],
            env=self.child_env(),
        )
        self._helpers.append(proc)
        return proc

    @staticmethod
    def stop_recording(proc: subprocess.Popen[bytes]) -> None:
        proc.terminate()  # parec finishes the WAV header on SIGTERM
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


@contextlib.contextmanager
def virtual_audio(root: Path) -> Iterator[VirtualAudio]:
    with VirtualAudio(root) as audio:
        yield audio


def write_wav(path: Path, pcm: bytes, rate: int) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    return path


def read_wav(path: Path) -> tuple[bytes, int]:
    with wave.open(str(path), "rb") as src:
        assert src.getsampwidth() == 2 and src.getnchannels() == 1
        return src.readframes(src.getnframes()), src.getframerate()
