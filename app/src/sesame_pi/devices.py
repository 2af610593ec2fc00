"""The sound devices PortAudio sees: listing, choosing one by name or index, and a fresh PortAudio.

Kept apart from the engine (see `audio`): `sesame-pi devices` and the engine's probe share it. A
PortAudio instance lists the devices once, as it starts: only a new one sees a card that was
plugged in since, so the engine takes a new one when it probes with no stream open, and during a
call's reopen when both streams are in trouble or the kernel's sound devices changed
(`sound_nodes`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config


class AudioDeviceError(RuntimeError):
    """A device is missing, busy or stopped working. The text says what to do."""


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    inputs: int
    outputs: int
    default_rate: float
    is_default_input: bool
    is_default_output: bool


# --------------------------------------------------------------------------- PortAudio set-up


SOUND_NODES_DIR = "/dev/snd"


def sound_nodes(directory: str = SOUND_NODES_DIR) -> frozenset[tuple[str, int]] | None:
    """The kernel's sound device nodes, by name and device number: they change when a card comes
    or goes, the one time a fresh PortAudio would see what the running one does not. None where
    they cannot be read (no sound hardware, a container without /dev/snd)."""
    nodes = set()
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):  # (udev removing it just now)
                    nodes.add((entry.name, entry.stat().st_rdev))
    except OSError:
        return None
    return frozenset(nodes)


_ALSA_QUIET: list[Any] = []  # keeps the ctypes callback alive


def _quiet_alsa() -> None:
    """Silence alsa-lib's probe chatter ("Unknown PCM cards.pcm.rear") on stderr, once.

    PortAudio opens every PCM alsa.conf names while it scans; the messages are harmless, but on an
    appliance they bury real errors. Our own errors are reported through exceptions and the log.
    """
    if _ALSA_QUIET:
        return
    name = ctypes.util.find_library("asound")
    if not name:
        _ALSA_QUIET.append(None)
        return
    handler_type = ctypes.CFUNCTYPE(
        None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p
    )

    def _ignore(*_args: object) -> None:
        return None

    handler = handler_type(_ignore)
    try:
        ctypes.cdll.LoadLibrary(name).snd_lib_error_set_handler(handler)
    except (OSError, AttributeError):
        _ALSA_QUIET.append(None)
        return
    _ALSA_QUIET.append(handler)


def portaudio() -> Any:
    """A fresh PyAudio instance. A new one re-scans the devices (the only way to see a replug)."""
    try:
        import pyaudio
    except ImportError as exc:  # pragma: no cover - a broken install
        raise AudioDeviceError(
            "PyAudio is not installed; run `make install` (it needs portaudio19-dev)"
        ) from exc
    _quiet_alsa()
    try:
        with _stderr_silenced():  # PortAudio's JACK and OSS probes write straight to fd 2
            return pyaudio.PyAudio()
    except OSError as exc:  # ALSA could not even start: a broken /etc/asound.conf, most often
        raise AudioDeviceError(
            f"PortAudio could not start ({exc}); check /etc/asound.conf (`aplay -L` shows what "
            "ALSA makes of it)"
        ) from None


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def device_list(pa: Any) -> list[DeviceInfo]:
    try:
        default_in = pa.get_default_input_device_info()["index"]
    except OSError:
        default_in = -1
    try:
        default_out = pa.get_default_output_device_info()["index"]
    except OSError:
        default_out = -1
    devices = []
    for index in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(index)
        devices.append(
            DeviceInfo(
                index=index,
                name=str(info["name"]),
                inputs=int(info["maxInputChannels"]),
                outputs=int(info["maxOutputChannels"]),
                default_rate=float(info["defaultSampleRate"]),
                is_default_input=index == default_in,
                is_default_output=index == default_out,
            )
        )
    return devices


def list_devices() -> list[DeviceInfo]:
    """Every device PortAudio can open (ALSA hides hw/plughw/dmix; `default` is what counts)."""
    pa = portaudio()
    try:
        return device_list(pa)
    finally:
        pa.terminate()


def format_devices(devices: list[DeviceInfo]) -> str:
    if not devices:
        return "no audio devices found; is the sound card connected and ALSA configured?"
    lines = [f"{'#':>3}  {'in':>3} {'out':>3}  {'rate':>6}  name"]
    for dev in devices:
        marks = []
        if dev.is_default_input:
            marks.append("default input")
        if dev.is_default_output:
            marks.append("default output")
        suffix = f"  ({', '.join(marks)})" if marks else ""
        lines.append(
            f"{dev.index:>3}  {dev.inputs:>3} {dev.outputs:>3}  {dev.default_rate:>6.0f}  "
            f"{dev.name}{suffix}"
        )
    lines.append("choose with --input-device/--output-device NAME or INDEX (default: `default`)")
    return "\n".join(lines)


def resolve_device(devices: list[DeviceInfo], wanted: str, direction: str) -> DeviceInfo:
    """`default`, an index, an exact name, or a unique part of a name; never a guess."""
    usable = [d for d in devices if (d.inputs if direction == "input" else d.outputs) > 0]
    hint = "`sesame-pi devices` lists them"
    if wanted == "default":
        for dev in usable:
            if dev.is_default_input if direction == "input" else dev.is_default_output:
                return dev
        raise AudioDeviceError(f"there is no default {direction} device; {hint}")
    if wanted.isdigit():
        for dev in usable:
            if dev.index == int(wanted):
                return dev
        raise AudioDeviceError(f"{direction} device #{wanted} does not exist now; {hint}")
    exact = [d for d in usable if d.name == wanted]
    if exact:
        return exact[0]
    partial = [d for d in usable if wanted.lower() in d.name.lower()]
    if len(partial) == 1:
        return partial[0]
    if partial:
        names = ", ".join(repr(d.name) for d in partial)
        raise AudioDeviceError(
            f"{direction} device {wanted!r} matches several: {names}; give the whole name or "
            "the index (`sesame-pi devices` lists them)"
        )
    raise AudioDeviceError(f"no {direction} device named {wanted!r} (is it plugged in?); {hint}")


def check_format(
    pa: Any, mic: DeviceInfo, speaker: DeviceInfo, capture_rate: int, output_channels: int = 1
) -> None:
    """Both devices can do our formats (16-bit: capture mono at our rate, play 24 kHz on
    `output_channels`, as the speaker will be opened)."""
    import pyaudio

    try:
        pa.is_format_supported(
            capture_rate,
            input_device=mic.index,
            input_channels=1,
            input_format=pyaudio.paInt16,
        )
    except ValueError as exc:
        raise AudioDeviceError(
            f"microphone {mic.name!r} cannot capture {capture_rate} Hz 16-bit mono "
            f"({exc}); use the ALSA `default` device (plug converts) or another card"
        ) from exc
    try:
        pa.is_format_supported(
            24000,
            output_device=speaker.index,
            output_channels=output_channels,
            output_format=pyaudio.paInt16,
        )
    except ValueError as exc:
        layout = "mono" if output_channels == 1 else f"on {output_channels} channels"
        fix = "set output_channels to what it has, " if output_channels != 1 else ""
        raise AudioDeviceError(
            f"speaker {speaker.name!r} cannot play 24000 Hz 16-bit {layout} ({exc}); "
            f"{fix}use the ALSA `default` device (plug converts) or another card"
        ) from exc


def configured_devices(pa: Any, cfg: Config) -> tuple[DeviceInfo, DeviceInfo]:
    """The configured microphone and speaker, checked for the formats a call opens them in."""
    devices = device_list(pa)
    mic = resolve_device(devices, cfg.input_device, "input")
    speaker = resolve_device(devices, cfg.output_device, "output")
    check_format(pa, mic, speaker, cfg.capture_rate, cfg.output_channels)
    return mic, speaker


def pa_reason(exc: OSError) -> str:
    """PyAudio raises OSError(code, text); keep the text."""
    if len(exc.args) >= 2:
        return str(exc.args[1])
    return str(exc)


# PortAudio's error codes where the usual "plugged in? used by another program?" misleads.
PA_INVALID_CHANNEL_COUNT, PA_INVALID_SAMPLE_RATE = -9998, -9997


def open_hint(exc: OSError, device: str, rate: int) -> str:
    """What to do about a device that would not open, by PortAudio's error code."""
    code = exc.args[0] if exc.args else None
    if code == PA_INVALID_SAMPLE_RATE:
        return (
            f"the {device} cannot run at {rate} Hz itself: choose a device that converts the "
            "rate (ALSA's `default`, or a `plug:` device such as the image's asound.conf sets up)"
        )
    if code == PA_INVALID_CHANNEL_COUNT:
        return f"the {device} does not take that many channels: check output_channels"
    return f"is the {device} plugged in and not used by another program?"
