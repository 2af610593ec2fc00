"""Device choice, earcon resampling and mixing: the pure parts of the audio engine."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
from array import array
from pathlib import Path
from typing import Any

import pytest

from sesame_pi.audio import (
    AudioDeviceError,
    DeviceInfo,
    format_devices,
    mix,
    resample,
    resolve_device,
    widen,
)
from sesame_pi.devices import check_format, sound_nodes


def device(
    index: int, name: str, inputs: int = 2, outputs: int = 2, default: bool = False
) -> DeviceInfo:
    return DeviceInfo(index, name, inputs, outputs, 48000.0, default, default)


DEVICES = [
    device(0, "seeed-2mic-voicecard: bcm2835-i2s-wm8960-hifi wm8960-hifi-0 (hw:1,0)"),
    device(1, "USB PnP Sound Device: Audio (hw:2,0)", outputs=0),
    device(2, "sysdefault"),
    device(3, "default", default=True),
]


def test_default_name_index_and_unique_part_of_a_name() -> None:
    assert resolve_device(DEVICES, "default", "input").index == 3
    assert resolve_device(DEVICES, "1", "input").index == 1
    assert resolve_device(DEVICES, "sysdefault", "output").index == 2
    assert resolve_device(DEVICES, "wm8960", "output").index == 0
    assert resolve_device(DEVICES, "usb pnp", "input").index == 1


@pytest.mark.parametrize(
    ("wanted", "direction", "words"),
    [
        ("usb pnp", "output", "no output device named 'usb pnp'"),  # capture-only card
        ("9", "input", "input device #9 does not exist"),
        ("default", "input", None),
        ("hw", "input", "matches several"),
        ("respeaker", "input", "is it plugged in?"),
    ],
)
def test_a_wrong_device_says_what_is_wrong(wanted: str, direction: str, words: str | None) -> None:
    if words is None:
        assert resolve_device(DEVICES, wanted, direction)
        return
    with pytest.raises(AudioDeviceError, match=words.replace("?", r"\?")):
        resolve_device(DEVICES, wanted, direction)


def test_no_default_device() -> None:
    with pytest.raises(AudioDeviceError, match="no default input device"):
        resolve_device(DEVICES[:2], "default", "input")


def test_format_devices_marks_the_defaults_and_says_how_to_choose() -> None:
    text = format_devices(DEVICES)
    assert "default input, default output" in text
    assert "--input-device" in text
    assert "no audio devices found" in format_devices([])


def test_resample_keeps_duration_and_shape() -> None:
    ramp = array("h", range(0, 16000, 10)).tobytes()  # 1600 samples
    up = array("h", resample(ramp, 16000, 24000))
    assert len(up) == 2400
    assert up[0] == 0 and all(b >= a for a, b in itertools.pairwise(up))
    assert resample(ramp, 24000, 24000) is ramp


@pytest.mark.parametrize(("src", "dst"), [(24000, 48000), (24000, 16000), (16000, 44100)])
def test_resample_is_linear_interpolation_to_the_sample(src: int, dst: int) -> None:
    """audioop's ratecv against the textbook rule it replaced (a Python loop per sample):
    the same length, each sample within one step of it."""
    rng = random.Random(src + dst)
    samples = [rng.randint(-20000, 20000) for _ in range(2400)]
    got = array("h", resample(array("h", samples).tobytes(), src, dst))
    count = len(samples) * dst // src
    assert len(got) == count
    for i, value in enumerate(got):
        pos = i * src / dst
        j = min(int(pos), len(samples) - 1)
        after = samples[min(j + 1, len(samples) - 1)]
        assert abs(value - (samples[j] + (after - samples[j]) * (pos - j))) <= 1.5, i


def test_mix_sums_and_clips() -> None:
    a = array("h", [1000, 30000, -30000, 0]).tobytes()
    b = array("h", [2000, 30000, -30000, -5]).tobytes()
    assert list(array("h", mix(a, b))) == [3000, 32767, -32768, -5]
    with pytest.raises(ValueError, match="mixing 8 bytes with 6"):
        mix(a, b[:6])


def test_widen_puts_each_sample_on_every_channel() -> None:
    mono = array("h", [1, -2, 300, -32768, 32767]).tobytes()
    stereo = array("h", widen(mono, 2))
    assert list(stereo) == [1, 1, -2, -2, 300, 300, -32768, -32768, 32767, 32767]
    assert widen(mono, 1) is mono


def test_portaudio_that_cannot_start_says_where_to_look(tmp_path: Path) -> None:
    """ALSA with a damaged configuration: `sesame-pi devices` says so in one line (exit 4)."""
    broken = tmp_path / "asound.conf"
    broken.write_text("garbage {{{\n")
    env = {**os.environ, "ALSA_CONFIG_PATH": str(broken)}
    result = subprocess.run(
        [sys.executable, "-m", "sesame_pi.cli", "devices"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 4, result.stderr
    assert "PortAudio could not start" in result.stderr and "/etc/asound.conf" in result.stderr
    assert "Traceback" not in result.stderr


class OneChannelSpeaker:
    """PortAudio's format check for a speaker with one channel (PortAudio raises ValueError)."""

    def is_format_supported(self, rate: int, **kw: Any) -> bool:
        if kw.get("output_channels", 1) > 1:
            raise ValueError("Invalid number of channels")
        return True


def test_the_speaker_is_checked_as_it_will_be_opened_and_the_setting_is_named() -> None:
    mic = DeviceInfo(1, "mic", 1, 0, 48000.0, True, False)
    speaker = DeviceInfo(2, "mono speaker", 0, 1, 48000.0, False, True)
    check_format(OneChannelSpeaker(), mic, speaker, 16000, output_channels=1)
    with pytest.raises(AudioDeviceError) as info:
        check_format(OneChannelSpeaker(), mic, speaker, 16000, output_channels=2)
    assert "cannot play 24000 Hz 16-bit on 2 channels" in str(info.value)
    assert "set output_channels to what it has" in str(info.value)


def test_the_kernels_sound_nodes_change_when_a_card_comes_and_none_where_unreadable(
    tmp_path: Path,
) -> None:
    """What tells a reopen a fresh PortAudio could see more: the nodes by name and device
    number (a card replugged into another port comes back as new nodes)."""
    snd = tmp_path / "snd"
    snd.mkdir()
    (snd / "controlC0").write_bytes(b"")
    before = sound_nodes(str(snd))
    assert before is not None and {name for name, _ in before} == {"controlC0"}
    assert sound_nodes(str(snd)) == before, "nothing changed: the same nodes"
    (snd / "pcmC1D0c").write_bytes(b"")
    after = sound_nodes(str(snd))
    assert after is not None and after != before
    assert sound_nodes(str(tmp_path / "no-such-dir")) is None
