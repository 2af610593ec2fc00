"""The engine rides out a device hiccup: against a fake PortAudio whose microphone stops and comes
back, or whose devices vanish, with the watchdog's times scaled down (the rules, not the clock).
And, on the same fakes, the echo reference lines up with a card's time stamps in writer mode.

Also the grace books and the silence pacer on a hand-moved clock.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sesame_pi import audio, hiccup
from sesame_pi.audio import AudioDeviceError, AudioEngine
from sesame_pi.config import Config
from sesame_pi.hiccup import DeviceGrace, SilencePacer
from sesame_pi.speaker import DrySpell, Speaker

FRAME = 320 * 2  # 20 ms at 16 kHz, s16le


class FakeStream:
    """An input (callback) or blocking output stream; `closed_by` says how it was closed."""

    def __init__(self, kind: str, callback: Callable[..., Any] | None) -> None:
        self.kind = kind
        self.callback = callback
        self.active = True
        self.stopped = False
        self.closed = False

    def is_active(self) -> bool:
        return self.active and not self.closed

    def stop_stream(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.closed = True

    def get_write_available(self) -> int:
        return 480

    def write(self, _pcm: bytes, exception_on_underflow: bool = False) -> None: ...


class PlayingOutput(FakeStream):
    """A blocking output that plays what it holds in real time (a card): its fill is the truth.
    (FakeStream takes everything at once and always has room, as a sound server's plugin may.)"""

    CAPACITY = 1440

    def __init__(self, rate: int) -> None:
        super().__init__("output", None)
        self.rate = rate
        self.held = 0.0
        self.at = time.monotonic()

    def get_write_available(self) -> int:
        now = time.monotonic()
        self.held = max(0.0, self.held - (now - self.at) * self.rate)
        self.at = now
        return self.CAPACITY - int(self.held)

    def write(self, pcm: bytes, exception_on_underflow: bool = False) -> None:
        self.get_write_available()
        self.held += len(pcm) // 2


class FakePortAudio:
    """One 'default' device for both directions; `gone` makes every open fail as PortAudio does
    for a device that vanished."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.terminated = False

    def get_default_input_device_info(self) -> dict[str, Any]:
        return {"index": 0}

    def get_default_output_device_info(self) -> dict[str, Any]:
        return {"index": 0}

    def get_device_count(self) -> int:
        return 1

    def get_device_info_by_index(self, index: int) -> dict[str, Any]:
        return {
            "name": "default",
            "maxInputChannels": 2,
            "maxOutputChannels": 2,
            "defaultSampleRate": 48000.0,
        }

    def is_format_supported(self, *_args: Any, **_kw: Any) -> bool:
        return True

    def open(self, **kw: Any) -> FakeStream:
        self.world.before_open()
        if self.world.gone or (kw.get("input") and self.world.microphone_gone):
            raise OSError(-9996, "Invalid device")
        if kw.get("output") and self.world.speaker_gone:
            raise OSError(-9996, "Invalid device")
        if kw.get("output") and kw["rate"] not in self.world.output_rates:
            raise OSError(-9997, "Invalid sample rate")
        blocking_output = kw.get("output") and kw.get("stream_callback") is None
        if blocking_output and self.world.output_busy:
            raise OSError(-9985, "Device unavailable")
        stream = (
            PlayingOutput(0 if self.world.output_frozen else kw["rate"])
            if blocking_output and self.world.output_plays
            else FakeStream("input" if kw.get("input") else "output", kw.get("stream_callback"))
        )
        self.world.streams.append(stream)
        return stream

    def terminate(self) -> None:
        self.terminated = True


class World:
    """What the fake devices do: `mic_alive` feeds the newest input stream every 20 ms."""

    def __init__(self) -> None:
        self.gone = False
        self.mic_alive = True
        self.output_plays = False  # blocking outputs play in real time, as a card does
        self.output_frozen = False  # and those it opens take nothing (a frozen USB DAC)
        self.output_busy = False  # another program holds the speaker
        self.speaker_gone = False  # the speaker alone is unplugged: it cannot be opened
        self.microphone_gone = False  # the microphone alone is unplugged: it cannot be opened
        self.before_open: Callable[[], None] = lambda: None  # (where a stalled device hangs)
        self.output_rates: set[int] = {16000, 24000, 44100, 48000}  # what the speaker runs at
        self.instances: list[FakePortAudio] = []
        self.streams: list[FakeStream] = []
        self.time_info: Callable[[], dict[str, float]] = dict  # what each callback is told

    def factory(self) -> FakePortAudio:
        pa = FakePortAudio(self)
        self.instances.append(pa)
        return pa

    def inputs(self) -> list[FakeStream]:
        return [s for s in self.streams if s.kind == "input"]

    async def pump(self) -> None:
        import pyaudio

        while True:
            await asyncio.sleep(0.02)
            if not self.mic_alive:
                continue  # the whole device stalls: neither direction calls back
            for stream in [s for s in self.streams if not s.closed and s.callback is not None]:
                # on another thread, as PortAudio's: the capture callback hands over with
                # call_soon_threadsafe
                data = b"\x01\x00" * 320 if stream.kind == "input" else None
                stamps = self.time_info()
                await asyncio.to_thread(stream.callback, data, 320, stamps, pyaudio.paContinue * 0)


@pytest.fixture(autouse=True)
def quick_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio, "WATCHDOG_PERIOD_S", 0.05)
    monkeypatch.setattr(audio, "STALL_AFTER_S", 0.15)
    monkeypatch.setattr(hiccup, "RETRY_S", 0.1)


class Kernel:
    """The kernel's sound device nodes as the engine reads them: a card plugged in or pulled out
    changes them; None where they cannot be read (this machine has no /dev/snd)."""

    def __init__(self) -> None:
        self.nodes: frozenset[tuple[str, int]] | None = frozenset({("controlC0", 0x7400)})

    def read(self) -> frozenset[tuple[str, int]] | None:
        return self.nodes


@pytest.fixture(autouse=True)
def kernel(monkeypatch: pytest.MonkeyPatch) -> Kernel:
    nodes = Kernel()
    monkeypatch.setattr(audio, "sound_nodes", nodes.read)
    return nodes


class Call:
    """An engine in a call, an uplink reading it, and the device errors it reported."""

    def __init__(
        self, grace_s: float, output_mode: str = "writer", echo: str = "off", prebuffer_ms: int = 60
    ) -> None:
        self.world = World()
        self.errors: list[str] = []
        self.frames: list[bytes] = []
        self.uplink_error: AudioDeviceError | None = None
        cfg = Config().replace(
            echo_cancel=echo,
            device_grace_s=grace_s,
            output_mode=output_mode,
            prebuffer_ms=prebuffer_ms,
        )
        self.engine = AudioEngine(
            cfg, asyncio.get_running_loop(), self.errors.append, self.world.factory
        )

    async def uplink(self) -> None:
        try:
            while True:
                self.frames.append(await self.engine.next_frame())
        except AudioDeviceError as exc:
            self.uplink_error = exc

    def silence(self) -> int:
        return sum(1 for f in self.frames if not any(f))


@pytest.fixture
def tasks() -> Iterator[list[asyncio.Task[None]]]:
    running: list[asyncio.Task[None]] = []
    yield running
    for task in running:
        task.cancel()


@pytest.mark.parametrize("output_mode", ["writer", "callback"])
async def test_a_stalled_device_is_reopened_and_the_call_goes_on(
    tasks: list[asyncio.Task[None]], output_mode: str
) -> None:
    call = Call(grace_s=2.0, output_mode=output_mode)
    call.engine.start_call(24000)
    tasks += [asyncio.create_task(call.world.pump()), asyncio.create_task(call.uplink())]
    await asyncio.sleep(0.3)
    real_before = len(call.frames)
    assert real_before >= 8 and call.silence() == 0

    call.world.mic_alive = False  # the device stalls
    await asyncio.sleep(0.8)
    assert call.errors == [], "a hiccup within the grace is no device error"
    if output_mode == "writer":  # the writer plays on: the microphone alone is reopened
        assert len(call.world.instances) == 1, "no card came or went: the same PortAudio"
    else:  # both stalled (callback mode): a rescan closes nothing that worked
        assert len(call.world.instances) >= 2, "a fresh PortAudio was taken to reopen"
    old = call.world.inputs()[0]
    assert old.closed and not old.stopped, "a stalled stream is closed without draining"
    silent = call.silence()
    # silence starts once the stall is seen (0.15 s + a watchdog turn) and is paced: 20 ms each
    assert 15 <= silent <= 0.8 / 0.02, silent

    call.world.mic_alive = True  # it comes back
    await asyncio.sleep(0.4)
    # (a frame of silence may still go out before the first real one lands)
    assert call.silence() <= silent + 2, "real frames replace the silence"
    assert all(any(f) for f in call.frames[-10:]), "microphone audio flows again"
    figures = call.engine.stats()
    assert figures["device_hiccups"] == 1
    assert 800 <= figures["device_gap_ms"] <= 1300, figures
    assert figures["device_reopens"] >= 1
    assert figures["silence_frames"] == call.silence()
    assert call.errors == [] and call.uplink_error is None
    call.engine.stop_call()
    call.engine.close()


async def writer_call_on_a_card(tasks: list[asyncio.Task[None]]) -> tuple[Call, PlayingOutput]:
    """A call in writer mode whose speaker plays in real time as a card does, running. Its
    prebuffer is lean: a first call's start waits for the prebuffer (the link is not measured
    yet), and these calls are about the device, not about where the agent's audio starts."""
    call = Call(grace_s=3.0, output_mode="writer", prebuffer_ms=20)
    call.world.output_plays = True
    call.engine.start_call(24000)
    tasks += [asyncio.create_task(call.world.pump()), asyncio.create_task(call.uplink())]
    await asyncio.sleep(0.2)
    device = call.engine._output
    assert isinstance(device, PlayingOutput)
    return call, device


async def test_a_microphone_pulled_out_alone_leaves_the_speaker_playing(
    tasks: list[asyncio.Task[None]],
) -> None:
    """A USB microphone beside a speaker on another card, pulled out mid-call: each reopen used
    to close the working speaker too and take a fresh PortAudio (a rescan), once a second for the
    whole grace, so the agent's voice broke up while the person found the plug. Only the
    microphone is tried again now, on the running PortAudio (its card keeps its name when it
    comes back in the same port)."""
    call, device = await writer_call_on_a_card(tasks)  # grace 3 s
    call.world.mic_alive = False
    call.world.microphone_gone = True
    for _ in range(30):  # the agent talks on for 1.5 s, 50 ms every 50 ms
        call.engine.play(b"\x00\x10" * 1200)
        await asyncio.sleep(0.05)
    figures = call.engine.stats()
    assert figures["device_reopens"] >= 2 and figures["device_reopen_failures"] >= 2, figures
    assert call.engine._output is device and not device.closed, "the speaker played on"
    assert len(call.world.instances) == 1 and figures.get("device_rescans", 0) == 0, figures
    call.world.microphone_gone = False  # plugged back in
    call.world.mic_alive = True
    for _ in range(40):
        if not call.engine._grace.active:
            break
        await asyncio.sleep(0.05)
    assert call.errors == [] and call.engine._grace.hiccups == 1
    await asyncio.sleep(0.2)  # (a frame of silence may still go out before the first real one)
    assert all(any(frame) for frame in call.frames[-5:]), "the microphone is heard again"
    assert call.engine._output is device and not device.closed
    call.engine.stop_call()
    call.engine.close()


@pytest.mark.parametrize("seen", ["a card came or went", "nodes unreadable, a reopen failed"])
async def test_a_reopen_takes_a_fresh_portaudio_when_only_a_rescan_can_help(
    tasks: list[asyncio.Task[None]], kernel: Kernel, seen: str
) -> None:
    """PortAudio lists the devices once, as it starts: a card that came back under another
    name is seen only by a fresh one, and that means closing both sides. The engine rescans
    when the kernel's sound nodes changed, or, where it cannot read them, after a reopen on the
    running PortAudio failed."""
    call, device = await writer_call_on_a_card(tasks)
    if seen == "a card came or went":
        kernel.nodes = frozenset({("controlC0", 0x7400), ("controlC1", 0x7420)})
    else:
        kernel.nodes = None
        call.world.microphone_gone = True  # the first reopen, on the same PortAudio, fails
    call.world.mic_alive = False
    for _ in range(30):
        await asyncio.sleep(0.05)
        if call.engine.stats().get("device_rescans"):
            break
    call.world.microphone_gone = False
    call.world.mic_alive = True
    await asyncio.sleep(0.3)
    figures = call.engine.stats()
    assert figures.get("device_rescans", 0) >= 1, figures
    assert len(call.world.instances) >= 2 and call.world.instances[0].terminated
    assert device.closed and call.engine._output is not device, "both sides were reopened"
    assert call.errors == []
    call.engine.stop_call()
    call.engine.close()


async def test_a_call_after_the_speaker_closed_keeps_the_device_target_the_last_one_earned(
    tasks: list[asyncio.Task[None]],
) -> None:
    """The speaker closes a few seconds after a call. On a machine whose writer had to widen the
    device's target, the next call's new speaker starts on that target (and the playout margin
    counts it): started lean again, a busy Pi ran dry in every call."""
    call, device = await writer_call_on_a_card(tasks)
    speaker = call.engine._speaker
    assert speaker is not None
    speaker._widen()
    speaker._widen()  # as after two dry spells: two periods more in the device
    widened = speaker.target_frames
    assert widened == speaker.base_target_frames + 2 * speaker.period_frames
    call.engine.stop_call()
    call.engine._close_idle()  # the output's idle close, come early
    assert call.engine._output is None and device.closed
    assert not device.stopped, "closed without draining (a stalled one held the loop)"
    assert call.engine._learnt_for("another card") is None, "another speaker starts lean"
    call.engine.start_call(24000)
    await asyncio.sleep(0.2)
    after = call.engine._speaker
    assert after is not None and after is not speaker
    assert after.target_frames == widened
    jitter = call.engine._jitter
    assert jitter is not None and jitter.device == widened * 2
    call.engine.stop_call()
    call.engine.close()


async def test_the_app_stopping_closes_the_speaker_without_draining_it(
    tasks: list[asyncio.Task[None]],
) -> None:
    """At shutdown (SIGTERM) the speaker was stopped, which on a stalled device waits about
    20 s: Docker kills a container 10 s after asking it to stop, and the last log lines went."""
    call, device = await writer_call_on_a_card(tasks)
    call.engine.stop_call()
    call.engine.close()
    assert device.closed and not device.stopped


@pytest.mark.parametrize("failure", ["stops taking audio", "reports an error"])
async def test_a_writer_beside_a_speaker_that_fails_quietly_is_seen_by_the_watchdog(
    tasks: list[asyncio.Task[None]], failure: str
) -> None:
    """Writer mode (what `auto` picks on a Pi). A speaker that holds audio and takes none (a
    frozen USB DAC, a stalled server), or one that answers PyAudio's look with PortAudio's error
    code (-9999 for a USB speaker pulled out; PyAudio returns it as the count, it does not
    raise): the writer used to turn on beside it, stamping itself alive, so the watchdog never
    reopened it and the agent's audio piled up unheard."""
    call, broken = await writer_call_on_a_card(tasks)
    if failure == "stops taking audio":
        broken.rate = 0
    else:
        broken.get_write_available = lambda: -9999  # type: ignore[method-assign]
    for _ in range(10):  # the agent talks on, 50 ms every 50 ms (a link that keeps up)
        call.engine.play(b"\x00\x10" * 1200)
        await asyncio.sleep(0.05)
    figures = call.engine.stats()
    assert figures["device_hiccups"] == 1 and figures["device_reopens"] >= 1, figures
    assert broken.closed and call.engine._output is not broken
    assert call.errors == [], "reopened within the grace: the call goes on"
    call.engine.stop_call()
    call.engine.close()


async def test_the_person_is_heard_while_an_unplugged_speaker_is_waited_for(
    tasks: list[asyncio.Task[None]],
) -> None:
    """A USB speaker pulled out mid-call: each reopen failed at the speaker and returned before
    the microphone, so the working microphone stayed closed and the agent heard silence for the
    whole grace while the person talked."""
    call, broken = await writer_call_on_a_card(tasks)  # grace 3 s
    broken.get_write_available = lambda: -9999  # type: ignore[method-assign]
    call.world.speaker_gone = True
    await asyncio.sleep(0.5)  # the hiccup is seen and the first reopens fail at the speaker
    heard_from = len(call.frames)
    await asyncio.sleep(1.5)
    assert call.engine.stats()["device_reopen_failures"] >= 1
    spoken = call.frames[heard_from:]
    real = sum(1 for frame in spoken if any(frame))
    assert real >= len(spoken) // 2, f"{real} of {len(spoken)} frames carried the microphone"
    call.world.speaker_gone = False  # plugged back in: the call goes on
    await asyncio.sleep(0.5)
    assert call.errors == [] and call.engine._output is not None
    call.engine.stop_call()
    call.engine.close()


async def test_a_speaker_reopened_alone_leaves_the_microphone_s_audio_unmixed_with_silence(
    tasks: list[asyncio.Task[None]],
) -> None:
    """While the speaker alone was reopened, the uplink's silence pacer ran too: its frames went
    up between the working microphone's, the person's speech cut up by silence."""
    call, broken = await writer_call_on_a_card(tasks)  # grace 3 s
    broken.get_write_available = lambda: -9999  # type: ignore[method-assign]
    call.world.speaker_gone = True
    await asyncio.sleep(1.5)  # reopens of the speaker come and fail
    figures = call.engine.stats()
    assert figures["device_reopens"] >= 2 and figures["device_reopen_failures"] >= 1, figures
    assert call.silence() == 0 and figures.get("silence_frames", 0) == 0, call.silence()
    call.world.speaker_gone = False
    await asyncio.sleep(0.5)
    assert call.errors == [] and call.engine._output is not None
    call.engine.stop_call()
    call.engine.close()


async def test_a_speaker_that_stays_frozen_after_each_reopen_ends_the_call_after_the_grace(
    tasks: list[asyncio.Task[None]],
) -> None:
    """The microphone works, so each reopen looked like a recovery; the speaker it opened took
    nothing again, and the next hiccup started a fresh grace: the call went on unheard for ever."""
    call, broken = await writer_call_on_a_card(tasks)  # grace 3 s
    broken.rate = 0
    call.world.output_frozen = True  # and every speaker opened from now on
    for _ in range(80):  # the agent talks on, 50 ms every 50 ms, for 4 s
        call.engine.play(b"\x00\x10" * 1200)
        await asyncio.sleep(0.05)
        if call.errors:
            break
    assert call.errors and "still gone after 3 s" in call.errors[0], call.errors
    assert call.engine.stats()["device_reopens"] >= 2
    call.engine.stop_call()
    call.engine.close()


async def test_a_microphone_hiccup_beside_a_playing_speaker_drops_none_of_the_agents_speech(
    tasks: list[asyncio.Task[None]],
) -> None:
    """The microphone stops and comes back; the speaker played on all along (a card's own
    clock), while the server sent ahead of real time. The recovery used to drop the whole gap's
    worth of the agent's audio as late, mid-word; only the reopen's moment was unheard."""
    call, _ = await writer_call_on_a_card(tasks)
    jitter = call.engine._jitter
    assert jitter is not None
    call.world.mic_alive = False
    for _ in range(14):  # the agent talks, 100 ms every 50 ms: the server runs ahead
        call.engine.play(b"\x00\x10" * 2400)
        await asyncio.sleep(0.05)
    call.world.mic_alive = True
    for _ in range(40):
        if call.engine._grace.hiccups and not call.engine._grace.active:
            break
        await asyncio.sleep(0.05)
    figures = call.engine.stats()
    assert figures["device_hiccups"] == 1 and figures["device_gap_ms"] >= 400, figures
    assert jitter.stale_bytes <= 24000 * 2 * 0.1, jitter.stale_bytes  # the reopen: ms, not 400
    call.engine.stop_call()
    call.engine.close()


async def test_a_tail_a_sound_server_keeps_unplayed_while_the_agent_is_silent_is_no_fault(
    tasks: list[asyncio.Task[None]],
) -> None:
    """A sound server that ran dry keeps what it is given unplayed until its prebuffer fills. A
    short burst of the agent's audio after a late network, then silence again: the device holds
    that tail and plays nothing, and that is no fault while no audio comes (it used to read as a
    dead speaker: a reopen, the uplink silent meanwhile). Audio that comes and still is not
    taken is."""
    call, device = await writer_call_on_a_card(tasks)
    device.rate = 0  # from now on it plays nothing of what it holds
    call.engine.play(b"\x00\x10" * 1200)  # a burst of 50 ms, then the agent is silent
    await asyncio.sleep(0.6)  # four times the (scaled) watchdog's limit
    assert device.held > 0, "the tail is held"
    assert call.engine.stats()["device_hiccups"] == 0 and not device.closed
    for _ in range(10):  # the agent talks again, and the device takes none of it
        call.engine.play(b"\x00\x10" * 1200)
        await asyncio.sleep(0.05)
    assert call.engine.stats()["device_hiccups"] == 1 and device.closed
    call.engine.stop_call()
    call.engine.close()


async def test_a_speaker_kept_open_from_the_last_call_brings_none_of_its_figures(
    tasks: list[asyncio.Task[None]],
) -> None:
    """The speaker stays open a few seconds after a call (and the start tone opens it), so the
    next call often reuses it: that call's summary counts only what the speaker went through
    since it began (it repeated the last call's underflows and kicks)."""
    call = Call(grace_s=2.0, output_mode="writer")
    engine = call.engine
    engine.start_call(24000)
    tasks.append(asyncio.create_task(call.world.pump()))
    await asyncio.sleep(0.1)
    speaker = engine._speaker
    assert speaker is not None
    speaker.underflows += 7  # what the first call's speaker went through
    speaker.kicks += 3
    first = engine.stats()
    assert (first["output_underflows"], first["device_kicks"]) == (7, 3)
    engine.stop_call()
    engine.start_call(24000)  # a redial, within the speaker's idle time
    assert engine._speaker is speaker, "the same speaker serves the second call"
    speaker.underflows += 1
    second = engine.stats()
    assert (second["output_underflows"], second["device_kicks"]) == (1, 0), second
    engine.stop_call()
    engine.close()


async def test_a_grace_shorter_than_the_watchdog_still_gets_one_reopen(
    tasks: list[asyncio.Task[None]],
) -> None:
    """`device_grace_s` below what the watchdog needs to see a device gone (its last sound plus
    STALL_AFTER_S and a turn; 1 s against 1.5-2 s on the real clock) acts as that floor: the
    stream that stalled is reopened and the call goes on. It used to run out at the first look
    and end the call with no reopen, saying it had waited."""
    assert audio.effective_grace_s(0.0) == 0.0, "0 still ends the call at once"
    floor = audio.STALL_AFTER_S + 2 * audio.WATCHDOG_PERIOD_S
    assert audio.effective_grace_s(floor / 3) == floor
    assert audio.effective_grace_s(floor * 4) == floor * 4
    call = Call(grace_s=floor / 3)
    call.engine.start_call(24000)
    tasks += [asyncio.create_task(call.world.pump()), asyncio.create_task(call.uplink())]
    await asyncio.sleep(0.3)
    call.world.inputs()[0].callback = None  # that stream stalls for good; a reopened one works
    await asyncio.sleep(0.8)
    figures = call.engine.stats()
    assert call.errors == [] and figures["device_reopens"] >= 1, (call.errors, figures)
    assert all(any(f) for f in call.frames[-5:]), "the microphone is heard again"
    call.engine.stop_call()
    call.engine.close()


async def test_echo_stage_is_reset_after_the_reopen(
    tasks: list[asyncio.Task[None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    call = Call(grace_s=2.0, echo="speex")
    call.engine.start_call(24000)
    echo = call.engine._echo
    assert echo is not None
    realigned = threading.Event()
    kept: list[bool] = []
    realign = echo.realign

    def spy(keep_path: bool = False) -> None:
        kept.append(keep_path)
        realigned.set()
        realign(keep_path)

    monkeypatch.setattr(echo, "realign", spy)
    tasks += [asyncio.create_task(call.world.pump()), asyncio.create_task(call.uplink())]
    await asyncio.sleep(0.2)
    frames_before = echo.stats()["frames"]
    assert frames_before >= 5
    call.world.mic_alive = False
    await asyncio.sleep(0.5)
    assert realigned.is_set()
    # the microphone alone, on the same PortAudio: the room and its delay are kept
    assert kept and all(kept), kept
    # aligned afresh, but the call's figures go on: its summary speaks of the whole call
    assert echo.stats()["frames"] >= frames_before
    call.engine.close()


async def test_a_device_gone_past_the_grace_is_reported_once(
    tasks: list[asyncio.Task[None]],
) -> None:
    call = Call(grace_s=0.6)
    call.engine.start_call(24000)
    tasks += [asyncio.create_task(call.world.pump()), asyncio.create_task(call.uplink())]
    await asyncio.sleep(0.2)
    call.world.mic_alive = False
    call.world.gone = True  # unplugged: every reopen fails
    await asyncio.sleep(0.5)
    assert call.errors == [], "still within the grace"
    assert call.silence() > 0, "the uplink gets silence while the device is gone"
    await asyncio.sleep(0.6)
    assert len(call.errors) == 1
    assert "microphone" in call.errors[0] and "0.6 s" in call.errors[0]
    assert isinstance(call.uplink_error, AudioDeviceError)
    figures = call.engine.stats()
    assert figures["device_failures"] == 1
    assert figures["device_reopen_failures"] >= 2
    assert figures["device_gap_ms"] >= 600
    await asyncio.sleep(0.3)
    assert len(call.errors) == 1, "reported once"
    call.engine.stop_call()
    call.engine.close()


async def test_no_grace_ends_at_the_first_stall_as_before(
    tasks: list[asyncio.Task[None]],
) -> None:
    call = Call(grace_s=0.0)
    call.engine.start_call(24000)
    tasks += [asyncio.create_task(call.world.pump()), asyncio.create_task(call.uplink())]
    await asyncio.sleep(0.2)
    call.world.mic_alive = False
    await asyncio.sleep(0.4)
    assert len(call.errors) == 1
    assert len(call.world.instances) == 1, "no reopen"
    assert call.silence() == 0
    call.engine.stop_call()
    call.engine.close()


@pytest.mark.parametrize("held_s", [0.2, 2.0])
async def test_a_hang_up_during_a_reopen_neither_waits_for_it_nor_leaves_a_stream_open(
    tasks: list[asyncio.Task[None]], held_s: float
) -> None:
    """The worker holds the PortAudio lock while it reopens (seconds, behind a stalled device):
    the hang-up must not freeze the event loop behind it, and the microphone the worker opened
    for the call that ended is closed."""
    call = Call(grace_s=5.0)
    call.engine.start_call(24000)
    tasks += [asyncio.create_task(call.world.pump())]
    await asyncio.sleep(0.1)
    slow = SlowReopen(call, hang_s=5.0)
    call.world.mic_alive = False
    await slow.started()  # the worker is inside the reopen, holding the PortAudio lock
    threading.Timer(held_s, slow.released.set).start()
    began = time.monotonic()
    call.engine.stop_call()  # the person hangs up while the devices are being reopened
    assert time.monotonic() - began < 1.0, "the loop waited for the reopen worker"
    await asyncio.sleep(held_s + 0.3)
    assert len(call.world.inputs()) == 2, "the worker did open a new microphone"
    assert all(s.closed for s in call.world.inputs()), "and it was closed"
    assert call.errors == []
    call.engine.close()


# ------------------------------------------------------------------ the books, by hand


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_grace_counts_from_when_the_device_was_last_seen() -> None:
    clock = Clock()
    grace = DeviceGrace(10.0, clock)
    grace.begin("the microphone stopped", since=98.5)  # seen 1.5 s ago
    assert grace.active and grace.should_try()
    grace.tried()
    assert not grace.should_try()
    clock.now += hiccup.RETRY_S
    assert grace.should_try()
    clock.now = 108.4
    assert not grace.expired()
    clock.now = 108.5
    assert grace.expired()


def test_hiccups_add_up() -> None:
    clock = Clock()
    grace = DeviceGrace(10.0, clock)
    grace.begin("stall", since=clock.now)
    clock.now += 2.5
    assert grace.end() == pytest.approx(2.5)
    clock.now += hiccup.RELAPSE_S  # back for good: the next stop is a hiccup of its own
    grace.begin("stall", since=clock.now - 1.0)
    clock.now += 0.5
    assert grace.figures() == {"device_hiccups": 2, "device_gap_ms": 4000, "device_reopens": 0}
    assert not grace.expired()


def test_a_device_that_stops_again_soon_after_it_seemed_back_goes_on_using_the_grace() -> None:
    """A reopened speaker that plays nothing looks alive for a moment: counted afresh at each
    stop, a frozen DAC beside a working microphone never used up the grace."""
    clock = Clock()
    grace = DeviceGrace(10.0, clock)
    grace.begin("the speaker stopped", since=98.5)
    clock.now = 102.0
    assert grace.end() == pytest.approx(3.5)  # "recovered": the reopen made it look alive
    clock.now = 104.0
    grace.begin("the speaker stopped", since=101.6)  # no life since the reopen made it look alive
    assert grace.since == 98.5 and grace.gone_s() == pytest.approx(5.5)
    assert grace.figures() == {"device_hiccups": 1, "device_gap_ms": 5500, "device_reopens": 0}
    clock.now = 108.5
    assert grace.expired()
    # one that worked after its recovery and stops again soon is a new hiccup, with a new grace
    # (seeing a stop takes 1.5 s: the time it worked is not charged to the first one's grace)
    soon = DeviceGrace(3.0, clock)
    soon.begin("the microphone stopped", since=clock.now)
    clock.now += 2.5
    soon.end()
    clock.now += 4.0
    soon.begin("the speaker stopped", since=clock.now - 1.5)  # it played until 2.5 s after
    assert soon.hiccups == 2 and soon.gone_s() == pytest.approx(1.5) and not soon.expired()
    # and one that comes back for good and stops again later is a new hiccup too
    later = DeviceGrace(10.0, clock)
    later.begin("stall", since=clock.now)
    clock.now += 1.0
    later.end()
    clock.now += hiccup.RELAPSE_S
    later.begin("stall", since=clock.now - 0.5)
    assert later.gone_s() == pytest.approx(0.5) and later.hiccups == 2


def test_silence_is_paced_and_never_bursts() -> None:
    pacer = SilencePacer(0.02)
    pacer.start(10.0)
    assert pacer.wait_s(10.0) == 0.0
    pacer.took(10.0)
    assert pacer.wait_s(10.0) == pytest.approx(0.02)
    # the loop was busy for a second: the frame that was due, MAX_LAG_FRAMES of catch-up and the
    # one due now, not the 50 a second holds; then real-time pace again
    now = 11.0
    sent = 0
    while pacer.wait_s(now) == 0.0:
        pacer.took(now)
        sent += 1
    assert sent == hiccup.MAX_LAG_FRAMES + 2
    assert pacer.wait_s(now) == pytest.approx(0.02)


async def test_with_the_canceller_off_no_stage_stands_in_the_way() -> None:
    call = Call(grace_s=2.0)  # echo_cancel = "off", no ducking
    call.engine.start_call(24000)
    assert call.engine._echo is None, "off: the microphone goes up untouched, numpy not loaded"
    call.engine.close()


async def test_playout_underruns_are_logged_by_the_loop_a_few_times_a_call(
    tasks: list[asyncio.Task[None]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each underrun is a line to read when a call stuttered, but the writer thread never writes
    a log file itself (a slow SD card would stall the speaker), and a bad link cannot flood it."""
    monkeypatch.setattr(audio, "PLAYOUT_NOTES_PER_CALL", 3)
    caplog.set_level(logging.INFO)
    call = Call(grace_s=2.0)
    call.engine.start_call(24000)
    tasks += [asyncio.create_task(call.world.pump()), asyncio.create_task(call.uplink())]
    for _ in range(8):  # talk spurts with gaps: each gap runs the playout buffer dry
        for _ in range(10):
            call.engine.play(b"\x10\x00" * 480)
        await asyncio.sleep(0.3)
    notes = [r for r in caplog.records if getattr(r, "event", None) == "playout_underrun"]
    assert len(notes) == 3, [r.getMessage() for r in notes]
    assert {r.threadName for r in notes} == {threading.current_thread().name}
    assert notes[-1].underruns == 3 and notes[0].lateness_target_ms >= 0  # type: ignore[attr-defined]
    figures = call.engine.stats()
    assert figures["underruns"] > 3 and figures["playout_notes"] == 3, figures
    call.engine.stop_call()
    call.engine.close()


async def test_a_speaker_that_ran_dry_is_a_line_with_its_cause(
    tasks: list[asyncio.Task[None]], caplog: pytest.LogCaptureFixture
) -> None:
    """The device's own dry spells (the gaps a person hears that the playout buffer does not
    count) are said with their cause: a busy machine (the writer woke late) or a late network."""
    caplog.set_level(logging.INFO)
    call = Call(grace_s=2.0)
    call.engine.start_call(24000)
    speaker = call.engine._speaker
    assert speaker is not None
    spell = DrySpell(
        writer_late=True, target_ms=30.0, empty_ms=47.34, nap_over_ms=45.06, look_ms=0.21,
        write_ms=0.33,
    )  # fmt: skip
    writer = threading.Thread(target=speaker.on_dry, args=(spell,))  # as the writer does
    writer.start()
    writer.join()
    await asyncio.sleep(0.05)
    [note] = [r for r in caplog.records if getattr(r, "event", None) == "speaker_ran_dry"]
    assert note.threadName == threading.current_thread().name  # the loop wrote it
    assert (note.cause, note.device_target_ms) == ("the writer woke late", 30)  # type: ignore[attr-defined]
    assert note.empty_for_ms == 47.3  # type: ignore[attr-defined]
    assert (note.nap_over_ms, note.look_ms, note.write_ms) == (45.1, 0.2, 0.3)  # type: ignore[attr-defined]
    call.engine.stop_call()
    call.engine.close()


async def test_a_device_quiet_between_two_earcons_has_not_run_dry(
    tasks: list[asyncio.Task[None]], caplog: pytest.LogCaptureFixture
) -> None:
    """The call's start earcon, a moment's quiet, the live earcon: the device emptied between
    two sounds, not in the middle of one (a ten-minute bench call counted that quiet as its
    first underrun)."""
    caplog.set_level(logging.INFO)
    call, _ = await writer_call_on_a_card(tasks)
    speaker = call.engine._speaker
    assert speaker is not None
    tone = b"\x00\x10" * 7200  # 300 ms at 24 kHz
    call.engine.play_earcon(tone, 24000)
    await asyncio.sleep(0.4)  # played, the device quiet for about 80 ms (one stream of writes)
    call.engine.play_earcon(tone[:2400], 24000)
    await asyncio.sleep(0.3)
    assert speaker.underflows == 0
    assert not [r for r in caplog.records if getattr(r, "event", None) == "speaker_ran_dry"]
    call.engine.stop_call()
    call.engine.close()


class SlowEchoStage:
    """An echo stage whose every frame costs `cost_s` of the loop's time (a CPU that cannot keep
    up: twice a frame's length here)."""

    engine_name = "slow"

    def __init__(self, cost_s: float) -> None:
        self.cost_s = cost_s
        self.frames = 0
        self.played: list[tuple[float, bool]] = []  # (dac_time, after_gap) handed over

    def process(self, mic: bytes, _adc_time: float) -> bytes:
        time.sleep(self.cost_s)  # blocks the loop as the work would
        self.frames += 1
        return mic

    def far_end(self, _pcm: bytes, _rate: int, dac_time: float, after_gap: bool = False) -> None:
        self.played.append((dac_time, after_gap))

    def reset(self) -> None: ...

    def stats(self) -> dict[str, int]:
        return {"frames": self.frames}

    def close(self) -> None: ...


async def test_the_echo_stage_hears_when_the_speaker_ran_dry_in_either_mode() -> None:
    """Callback mode: PortAudio's output underflow flag on a callback; writer mode: the writer's
    word that the device held nothing. Either way the stage is told, so it places that audio
    by its stamp (test_echo_parts.py), not where counting on from the last piece would."""
    import pyaudio

    call = Call(grace_s=2.0)
    call.engine.start_call(24000)
    stage = SlowEchoStage(0.0)
    call.engine._echo = stage  # type: ignore[assignment]
    for status, dac in ((0, 10.0), (pyaudio.paOutputUnderflow, 10.1), (0, 10.12)):
        call.engine._playback_callback(None, 480, {"output_buffer_dac_time": dac}, status)
    call.engine._played(bytes(960), 10.2, True)
    call.engine._played(bytes(960), 10.22, False)
    assert [gap for _, gap in stage.played] == [False, True, False, True, False]
    call.engine.stop_call()


async def test_an_overloaded_loop_sheds_old_microphone_audio_and_stays_responsive(
    tasks: list[asyncio.Task[None]],
) -> None:
    """The input thread keeps its 20 ms pace while each frame's work takes 40 ms: the loop takes
    only the newest frames, so what else waits for it (a hold that ends the call) waits at most
    CAPTURE_BACKLOG_FRAMES frames' work. Handing over one callback per frame buried it: after 3 s
    the loop ran 17 s behind in the run that showed it, and further behind every second."""
    call = Call(grace_s=5.0)
    call.engine.start_call(24000)
    slow = SlowEchoStage(0.04)
    call.engine._echo = slow  # type: ignore[assignment]
    mic = call.world.inputs()[-1]
    assert mic.callback is not None
    stop = threading.Event()

    def portaudio_input_thread() -> None:
        while not stop.wait(0.02):
            mic.callback(b"\x01\x00" * 320, 320, {}, 0)

    feeder = threading.Thread(target=portaudio_input_thread, daemon=True)
    feeder.start()
    tasks.append(asyncio.create_task(call.uplink()))
    try:
        await asyncio.sleep(3.0)
        asked = time.monotonic()
        await asyncio.sleep(0)  # resumes once the loop has run what was ready before it
        lag = time.monotonic() - asked
    finally:
        stop.set()
        feeder.join()
    figures = call.engine.stats()
    call.engine.stop_call()
    call.engine.close()
    assert lag < audio.CAPTURE_BACKLOG_FRAMES * slow.cost_s + 0.5, f"the loop ran {lag:.2f} s late"
    assert figures["frames_shed"] > 0, figures
    assert slow.frames == figures["frames_captured"] > 20, "the newest frames still go up"
    assert len(call.frames) > 20


@pytest.mark.parametrize(
    ("plays", "mode", "period_ms"),
    [(True, "writer", 10), (False, "callback", 20)],
    ids=["a card: the writer", "a sound server: callback"],
)
async def test_auto_tries_the_speaker_once_and_opens_it_in_the_mode_it_found(
    caplog: pytest.LogCaptureFixture, plays: bool, mode: str, period_ms: int
) -> None:
    """The default: the writer where the speaker's fill level is what it holds, callback mode
    (with 20 ms periods) where something takes the audio faster than it plays."""
    world = World()
    world.output_plays = plays
    engine = AudioEngine(Config(), asyncio.get_running_loop(), lambda _reason: None, world.factory)
    assert Config().output_mode == "auto" and engine.output_mode == "callback", "until it knows"
    with caplog.at_level(logging.INFO, logger="sesame_pi"):
        engine.probe()
        engine.probe()  # the device retry loop probes again: the speaker is not tried twice
    tried = [s for s in world.streams if s.kind == "output"]
    assert len(tried) == 1 and tried[0].closed
    assert (engine.output_mode, engine.output_period_ms) == (mode, period_ms)
    chosen = [r for r in caplog.records if r.getMessage() == "output_mode_chosen"]
    assert len(chosen) == 1
    engine.start_call(24000)
    assert (engine._speaker is not None) == (mode == "writer")
    engine.stop_call()
    engine.close()


async def test_a_speaker_busy_at_start_is_tried_again_at_the_next_probe(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World()
    world.output_plays = world.output_busy = True
    engine = AudioEngine(Config(), asyncio.get_running_loop(), lambda _reason: None, world.factory)
    with caplog.at_level(logging.INFO, logger="sesame_pi"):
        engine.probe()
        assert engine.output_mode == "callback", "what it can do meanwhile"
        world.output_busy = False
        engine.probe()
    assert engine.output_mode == "writer"
    chosen = [r for r in caplog.records if r.getMessage() == "output_mode_chosen"]
    assert [r.levelno for r in chosen] == [logging.WARNING, logging.INFO]
    assert "could not be tried (Device unavailable)" in chosen[0].reason  # type: ignore[attr-defined]
    engine.close()


async def test_auto_chooses_once_the_speaker_an_earcon_held_at_the_probe_is_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A microphone late at boot: the start's probe failed, the error earcon opened the speaker
    (callback, as "auto" plays until it knows), and the retry's probe found the speaker open, so
    nothing was chosen, and nothing tried again: every call of the uptime ran in callback mode,
    some 50 ms behind the writer."""
    monkeypatch.setattr(audio, "IDLE_OUTPUT_CLOSE_S", 0.1)
    world = World()
    world.output_plays = True
    engine = AudioEngine(Config(), asyncio.get_running_loop(), lambda _reason: None, world.factory)
    engine.play_earcon(b"\x00\x10" * 240, 24000)  # a short tone opens the speaker
    engine.probe()  # the device retry's probe: the speaker is open, the choice waits
    assert engine.output_mode == "callback" and engine._auto_device is None
    for _ in range(20):  # the tone plays out (its callbacks), and the speaker closes when idle
        if engine._output is not None and engine._output.callback is not None:
            engine._output.callback(None, 480, {}, 0)
        await asyncio.sleep(0.05)
    for _ in range(40):
        if engine._auto_device is not None:
            break
        await asyncio.sleep(0.05)
    assert engine.output_mode == "writer", "chosen as soon as the speaker was free"
    engine.start_call(24000)
    assert engine._speaker is not None
    engine.stop_call()
    engine.close()


async def test_a_speaker_that_cannot_run_the_servers_rate_says_so() -> None:
    """A hw: device without rate conversion, and a service that speaks at 22050 Hz: the error
    asked whether the speaker was plugged in, and the owner looked at cables."""
    call = Call(grace_s=3.0)
    call.world.output_rates = {48000}
    with pytest.raises(AudioDeviceError) as failed:
        call.engine.start_call(22050)
    text = str(failed.value)
    assert "cannot run at 22050 Hz" in text and "plug" in text
    assert "plugged in" not in text
    call.engine.close()


async def test_the_next_call_keeps_the_links_lateness_and_the_audio_goes_on() -> None:
    """Each call gets a fresh playout buffer, with the lateness the last call learnt."""
    call = Call(grace_s=2.0)
    call.engine.start_call(24000)
    first = call.engine._jitter
    assert first is not None
    first.lateness.arrived(0.0)
    call.engine.play(bytes(960))
    call.engine.stop_call()
    call.engine.start_call(24000)
    second = call.engine._jitter
    assert second is not None and second is not first
    assert second.lateness is first.lateness
    assert second.buffered_ms == 0, "the last call's audio is not carried"
    call.engine.close()


async def writer_stuck_in_a_write() -> tuple[Call, FakeStream, Speaker, threading.Event]:
    """A call whose writer is inside a write that does not return (a stalled device) until the
    event is set, then ended: the call, its output, the writer and that event."""
    call = Call(grace_s=2.0)
    call.world.output_plays = True
    call.engine.start_call(24000)
    call.engine.play(bytes(24000 * 2))  # a second of the agent: the writer keeps writing
    output = next(s for s in call.world.streams if s.kind == "output")
    inside, release = threading.Event(), threading.Event()
    real_write = output.write

    def stuck_write(pcm: bytes, exception_on_underflow: bool = False) -> None:
        inside.set()
        release.wait(5.0)
        real_write(pcm)

    output.write = stuck_write  # type: ignore[method-assign]
    assert await asyncio.to_thread(inside.wait, 2.0)
    writer = call.engine._speaker
    assert writer is not None
    call.engine.stop_call()
    return call, output, writer, release


async def test_a_writer_stuck_in_a_write_closes_its_own_stream_and_portaudio(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing a stream (or terminating its PortAudio) while the writer is inside a write on a
    stalled device would free what the write still uses: the engine leaves both to the writer."""
    monkeypatch.setattr(audio, "STOP_WAIT_S", 0.1)
    call, output, writer, release = await writer_stuck_in_a_write()
    with caplog.at_level(logging.WARNING, logger="sesame_pi"):
        call.engine.close()
    pa = call.world.instances[0]
    assert not output.closed and not pa.terminated, "nothing freed under the write"
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == ["speaker_slow_to_stop"]
    release.set()
    await asyncio.to_thread(writer._thread.join, 2.0)
    assert output.closed and pa.terminated, "closed and terminated by the writer as it left"


async def test_the_loop_does_not_wait_seconds_for_a_writer_stuck_in_a_write(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The idle close after a call (and a failure, and a call at a new rate) stopped the writer
    on the event loop and waited up to 2 s for it to leave a write on a stalled device: the
    button and the LED froze, with no line saying why. The loop waits a moment and leaves the
    stream to the writer, as a worker's longer wait does."""
    call, output, writer, release = await writer_stuck_in_a_write()
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="sesame_pi"):
        call.engine._close_idle()
    held_s = time.monotonic() - began
    assert held_s < audio.STOP_WAIT_S / 2, f"the loop waited {held_s:.2f} s"
    (slow,) = [r for r in caplog.records if r.getMessage() == "speaker_slow_to_stop"]
    assert slow.__dict__["waited_s"] == audio.LOOP_STOP_WAIT_S
    assert not output.closed, "nothing freed under the write"
    release.set()
    await asyncio.to_thread(writer._thread.join, 2.0)
    assert output.closed, "closed by the writer as it left"
    call.engine.close()


@pytest.mark.parametrize("output_mode", ["writer", "callback"])
async def test_a_failed_speaker_reopened_for_an_earcon_is_not_drained_first(
    output_mode: str,
) -> None:
    """An earcon (or a call) reopening a speaker that had failed first stopped the old stream,
    which drains it: on a stalled device that waits about 20 s, on the event loop. It is closed
    without draining, as every other close of a speaker in trouble is."""
    call = Call(grace_s=2.0, output_mode=output_mode)
    engine = call.engine
    engine.play_earcon(b"\x00\x10" * 2400, 24000)
    failed = next(s for s in call.world.streams if s.kind == "output")
    if output_mode == "writer":

        def broken_write(pcm: bytes, exception_on_underflow: bool = False) -> None:
            raise OSError(-9999, "Unanticipated host error")

        failed.write = broken_write  # type: ignore[method-assign]
        speaker = engine._speaker
        assert speaker is not None
        speaker.notify()
        async with asyncio.timeout(2):
            while speaker.failure is None:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    else:
        failed.active = False  # PortAudio stopped the stream after an error
    engine.play_earcon(b"\x00\x10" * 2400, 24000)
    reopened = [s for s in call.world.streams if s.kind == "output"]
    assert len(reopened) == 2, "a new stream for the earcon"
    assert failed.closed and not failed.stopped, "closed without draining"
    engine.close()


@pytest.mark.parametrize("output_mode", ["writer", "callback"])
async def test_a_tone_a_frozen_speaker_never_plays_does_not_keep_it_open(
    output_mode: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The error tone after a frozen speaker ended a call reopens the same frozen device, which
    takes none of it: the idle close was put off every 3 s for as long as the tone waited, for
    good, and the device retry never took a fresh PortAudio while a speaker stayed open. The
    tone is dropped (said once) and the speaker closed; the next look rescans."""
    monkeypatch.setattr(audio, "IDLE_OUTPUT_CLOSE_S", 0.2)
    call = Call(grace_s=2.0, output_mode=output_mode)
    call.world.output_plays = call.world.output_frozen = True  # a card that takes nothing
    engine = call.engine
    engine.play_earcon(b"\x00\x10" * 12000, 24000)  # half a second
    with caplog.at_level(logging.WARNING, logger="sesame_pi"):
        async with asyncio.timeout(3):
            while engine._output is not None:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    assert not engine._earcon
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert said.count("earcon_unplayable") == 1
    engine.probe()
    assert len(call.world.instances) == 2, "the device retry's look took a fresh PortAudio"
    engine.close()


async def _lateness_after(pattern: str, output_mode: str) -> float:
    """The call summary's lateness target after 2 s of 20 ms agent frames, sent in real time
    (`steady`) or held back and sent five at a time every 100 ms (`bursty`: up to 80 ms late)."""
    call = Call(grace_s=5.0, output_mode=output_mode)
    call.engine.start_call(24000)
    frame, each = b"\x10\x00" * 480, 5 if pattern == "bursty" else 1
    start = time.monotonic()
    try:
        for turn in range(100 // each):
            # on a fixed timetable: sleeps that each overslept a little would add up to lateness
            await asyncio.sleep(max(0.0, start + turn * each * 0.02 - time.monotonic()))
            for _ in range(each):
                call.engine.play(frame)
        return float(call.engine.stats()["lateness_target_ms"])
    finally:
        call.engine.stop_call()
        call.engine.close()


@pytest.mark.parametrize("output_mode", ["writer", "callback"])
async def test_the_call_summary_says_how_late_the_links_audio_came(output_mode: str) -> None:
    """Whether a jittery link ran the buffer dry is chance; how late its frames came is not:
    the summary carries the lateness the playout measured (its 95th percentile) in either mode,
    so a stutter report can tell a bad link from a slow device."""
    steady = await _lateness_after("steady", output_mode)
    bursty = await _lateness_after("bursty", output_mode)
    assert bursty >= 60, (steady, bursty)
    assert bursty - steady >= 40, (steady, bursty)


class HeardReference:
    """An echo engine that keeps the reference it is handed with each frame (and cancels
    nothing): what the canceller would have to work with."""

    name = "heard"
    tracks_delay_ms = 150.0

    def __init__(self) -> None:
        self.refs: list[Any] = []

    def process(self, mic: Any, ref: Any) -> Any:
        self.refs.append(ref.copy())
        return mic

    def reset(self) -> None:
        self.refs.clear()

    def close(self) -> None:
        return None


@pytest.mark.parametrize("clock", ["monotonic", "wall"])
async def test_the_writer_s_reference_lines_up_with_the_microphone_s_stamps(
    tasks: list[asyncio.Task[None]], clock: str
) -> None:
    """A card, and dmix or dsnoop over it (the Pi), stamp PortAudio's times with the monotonic
    clock; the pulse plugin with the wall clock. The writer's stamps must land on the same
    axis as the microphone's either way, or the canceller is handed silence for a reference
    and cancels nothing (what a wall-clock writer beside a card's stamps did, silently)."""
    import numpy as np

    call = Call(grace_s=5.0, output_mode="writer", echo="speex")
    call.world.output_plays = True  # a card: plays what it holds in real time
    now = time.monotonic if clock == "monotonic" else time.time
    call.world.time_info = lambda: {"input_buffer_adc_time": now() - 0.02, "current_time": now()}
    call.engine.start_call(24000)
    stage = call.engine._echo
    assert stage is not None
    heard = HeardReference()
    stage.engine, stage.engine_name = heard, heard.name
    tasks += [asyncio.create_task(call.world.pump()), asyncio.create_task(call.uplink())]
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(24000) / 24000)).astype(np.int16)
    call.engine.play(tone.tobytes())  # a second of the agent's voice
    await asyncio.sleep(0.8)
    refs = heard.refs[-15:]  # the last 0.3 s, all while the tone plays
    assert len(refs) >= 10, len(heard.refs)
    level = float(np.sqrt(np.mean(np.concatenate(refs).astype(np.float64) ** 2)))
    assert level > 3000, f"the canceller's reference is {level:.1f} RMS: not what was played"
    assert stage.stats()["ref_stale"] == 0
    call.engine.stop_call()
    call.engine.close()


class SlowReopen:
    """The reopen's next open hangs inside the device (a stalled USB card) until released."""

    def __init__(self, call: Call, hang_s: float) -> None:
        self.entered, self.released = threading.Event(), threading.Event()

        def hang() -> None:
            self.entered.set()
            self.released.wait(hang_s)

        call.world.before_open = hang

    async def started(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 5), "no reopen began"


async def stalled_into_a_slow_reopen(
    tasks: list[asyncio.Task[None]],
    grace_s: float,
    hang_s: float,
    card_changes: Kernel | None = None,
) -> tuple[Call, SlowReopen]:
    """A call whose device stalls, and whose reopen then hangs inside PortAudio for `hang_s`
    (after closing both sides, for a rescan, when `card_changes`)."""
    call = Call(grace_s=grace_s)
    call.engine.start_call(24000)
    tasks.append(asyncio.create_task(call.world.pump()))
    await asyncio.sleep(0.1)
    if card_changes is not None:
        card_changes.nodes = frozenset({("controlC1", 0x7420)})
    slow = SlowReopen(call, hang_s=hang_s)
    call.world.mic_alive = False
    await slow.started()
    return call, slow


async def longest_loop_stall(seconds: float) -> float:
    """How long the event loop went without turning, ticking every 20 ms for `seconds`."""
    worst, last = 0.0, time.monotonic()
    for _ in range(int(seconds / 0.02)):
        await asyncio.sleep(0.02)
        now = time.monotonic()
        worst, last = max(worst, now - last), now
    return worst


async def test_the_grace_running_out_during_a_slow_reopen_does_not_freeze_the_loop(
    tasks: list[asyncio.Task[None]],
) -> None:
    """The LED, the button and the link run on the loop: a device lost while its reopen hangs
    inside PortAudio is reported at once, without the loop waiting for the worker."""
    call, slow = await stalled_into_a_slow_reopen(tasks, grace_s=0.5, hang_s=3.0)
    worst = await longest_loop_stall(1.5)
    assert len(call.errors) == 1 and "still gone" in call.errors[0], call.errors
    assert worst < 1.0, f"the loop froze for {worst:.2f} s behind the reopen worker"
    slow.released.set()
    await asyncio.sleep(0.2)
    call.engine.stop_call()
    call.engine.close()


async def test_a_speaker_a_reopen_opens_after_the_call_ended_is_closed_as_after_any_call(
    tasks: list[asyncio.Task[None]], monkeypatch: pytest.MonkeyPatch, kernel: Kernel
) -> None:
    """The grace ran out while the reopen worker was between closing the old speaker and
    opening a new one: the call's end found no speaker to close later. The one the worker then
    opened is closed after the usual idle time (it stayed open for good, and the next probe kept
    the PortAudio that could not see a replugged card)."""
    monkeypatch.setattr(audio, "IDLE_OUTPUT_CLOSE_S", 0.3)
    call, slow = await stalled_into_a_slow_reopen(
        tasks, grace_s=0.5, hang_s=3.0, card_changes=kernel
    )
    engine = call.engine

    def ends_the_call(detail: str) -> None:  # what the session does with a lost device
        call.errors.append(detail)
        engine.stop_call()

    engine.on_device_error = ends_the_call
    for _ in range(40):
        if call.errors:
            break
        await asyncio.sleep(0.05)
    assert call.errors and engine._output is None and engine._idle_close is None
    slow.released.set()
    for _ in range(100):
        if not engine._reopening:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.8)  # past the idle time
    assert engine._output is None and engine._speaker is None, "the speaker was closed"
    assert all(s.closed for s in call.world.streams), "nothing is left open"
    engine.close()


async def test_a_press_while_the_device_retry_rescans_does_not_freeze_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The device retry's probe rescans PortAudio holding the devices (2 s here, a scan stuck
    behind a stalled USB device); a press then (refused, with the error tone) played the tone
    after waiting for the lock: the loop, the LED and the button froze for the whole scan."""
    call = Call(grace_s=2.0)
    engine = call.engine
    plain = call.world.factory
    scanning = threading.Event()

    def slow_scan() -> Any:
        scanning.set()
        time.sleep(2.0)
        return plain()

    engine._factory = slow_scan
    probe = asyncio.create_task(asyncio.to_thread(engine.probe))
    await asyncio.to_thread(scanning.wait, 5)
    began = time.monotonic()
    with caplog.at_level("WARNING", logger="sesame_pi"):
        engine.play_earcon(b"\x00\x10" * 2400, 24000)
    assert time.monotonic() - began < 0.5, "the loop waited for the rescan"
    said = [r for r in caplog.records if r.getMessage() == "earcon_unplayable"]
    assert len(said) == 1 and not engine._earcon, "skipped and said so, not kept for later"
    await probe
    engine.play_earcon(b"\x00\x10" * 2400, 24000)  # the devices free again: the speaker opens
    assert engine._output is not None
    engine.close()


async def test_hanging_up_during_a_slow_reopen_plays_the_end_tone_without_waiting(
    tasks: list[asyncio.Task[None]],
) -> None:
    """A hang-up closes the call and plays its tone at once (the session does both in one
    turn); a new call refused meanwhile says why; once the worker is done all works again."""
    call, slow = await stalled_into_a_slow_reopen(tasks, grace_s=5.0, hang_s=5.0)
    began = time.monotonic()
    call.engine.stop_call()
    call.engine.play_earcon(b"\x00\x10" * 2400, 24000)
    with pytest.raises(AudioDeviceError, match="still being reopened"):
        call.engine.start_call(24000)
    assert time.monotonic() - began < 1.0, "the loop waited for the reopen worker (5 s)"
    call.world.mic_alive = True
    slow.released.set()
    for _ in range(100):  # the worker finishes (a loaded machine takes longer)
        if not call.engine._reopening:
            break
        await asyncio.sleep(0.05)
    assert not call.engine._reopening
    assert all(s.closed for s in call.world.inputs()), "the worker's microphone is closed after it"
    call.engine.start_call(24000)  # and the next call opens as usual
    await asyncio.sleep(0.2)
    assert not call.world.inputs()[-1].closed
    call.engine.stop_call()
    call.engine.close()


@pytest.mark.parametrize("echo", ["auto", "off"])
async def test_the_probe_at_start_makes_the_echo_canceller_the_first_call_needs(
    tasks: list[asyncio.Task[None]], echo: str
) -> None:
    """The echo stage (numpy and an engine) was made at the first call's start, on the loop:
    109 ms of the first press on this machine, with the button, the earcons and the link held.
    The probe, on its worker thread at start, makes it now; with echo control off, nothing."""
    call = Call(grace_s=3.0, echo=echo)
    await asyncio.to_thread(call.engine.probe)
    made = call.engine._echo
    assert (made is not None) == (echo == "auto")
    call.engine.start_call(24000)
    assert call.engine._echo is made, "the call takes the stage the probe made"
    call.engine.stop_call()
    call.engine.close()


async def test_a_reopen_that_never_returns_asks_for_a_restart_once_and_says_where(
    tasks: list[asyncio.Task[None]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A USB card that never answers keeps the worker inside PortAudio: every later press said
    the devices were still being reopened, until someone restarted the app by hand. Past
    REOPEN_WEDGED_S the engine names where the worker is stuck and asks for a restart."""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(audio, "REOPEN_WEDGED_S", 0.6)
    call, slow = await stalled_into_a_slow_reopen(tasks, grace_s=0.3, hang_s=5.0)
    restarts: list[str] = []
    call.engine.on_wedged = restarts.append
    await asyncio.sleep(0.2)
    assert restarts == [], "a reopen a few hundred milliseconds long is no wedge"
    with pytest.raises(AudioDeviceError, match="still being reopened"):
        call.engine.start_call(24000)
    await asyncio.sleep(0.6)
    assert len(restarts) == 1 and "stuck" in restarts[0], restarts
    wedged = [r for r in caplog.records if getattr(r, "event", "") == "audio_device_wedged"]
    assert len(wedged) == 1 and wedged[0].levelno == logging.CRITICAL
    assert any(" hang" in frame for frame in wedged[0].where), wedged[0].where
    slow.released.set()
    await asyncio.sleep(0.3)
    assert len(restarts) == 1
    call.engine.close()


async def test_a_wedged_reopen_with_restarts_off_says_to_restart_by_hand(
    tasks: list[asyncio.Task[None]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`loop_stall_exit_s = 0` (the app gives no `on_wedged`): the line must not promise a
    restart that never comes."""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(audio, "REOPEN_WEDGED_S", 0.4)
    call, slow = await stalled_into_a_slow_reopen(tasks, grace_s=0.3, hang_s=5.0)
    await asyncio.sleep(0.6)
    (wedged,) = [r for r in caplog.records if getattr(r, "event", "") == "audio_device_wedged"]
    assert wedged.action.startswith("restart the app"), wedged.action
    slow.released.set()
    await asyncio.sleep(0.3)
    call.engine.close()


async def test_a_reopen_that_returns_in_time_asks_for_no_restart(
    tasks: list[asyncio.Task[None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audio, "REOPEN_WEDGED_S", 0.6)
    call, slow = await stalled_into_a_slow_reopen(tasks, grace_s=2.0, hang_s=5.0)
    restarts: list[str] = []
    call.engine.on_wedged = restarts.append
    slow.released.set()  # the device answers after a moment, as a slow one does
    call.world.mic_alive = True
    await asyncio.sleep(1.0)
    assert restarts == [] and not call.engine.reopening
    call.engine.stop_call()
    call.engine.close()


@pytest.mark.parametrize("returns", [False, True])
async def test_a_writer_that_never_leaves_its_write_asks_for_a_restart(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, returns: bool
) -> None:
    """A writer stuck for good keeps its PortAudio alive, and PortAudio's set-up is process-wide:
    no later rescan saw the card again until someone restarted the app. One whose write comes
    back in time (a slow device) closes its stream and asks for nothing."""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(audio, "REOPEN_WEDGED_S", 0.5)
    call, _output, writer, release = await writer_stuck_in_a_write()
    restarts: list[str] = []
    call.engine.on_wedged = restarts.append
    call.engine._close_idle()  # the speaker's idle close finds the writer inside its write
    if returns:
        release.set()
    await asyncio.sleep(0.8)
    wedged = [r for r in caplog.records if getattr(r, "event", "") == "audio_device_wedged"]
    if returns:
        assert restarts == [] and wedged == []
    else:
        assert len(restarts) == 1 and "speaker's last write" in restarts[0], restarts
        assert any("stuck_write" in frame for frame in wedged[0].where), wedged[0].where
    release.set()
    await asyncio.to_thread(writer._thread.join, 2.0)
    call.engine.close()


async def test_play_out_says_how_long_the_agents_last_words_have_left() -> None:
    """What the session waits for when the service ends a call: the playout buffer and what the
    device holds, and running dry from then on is the end of the audio, not an underrun."""
    call = Call(grace_s=2.0)
    call.world.output_plays = True
    engine = call.engine
    assert engine.play_out() == 0.0, "no call: nothing to play"
    engine.start_call(24000)
    engine.play(bytes(24000 * 2))  # one second of the agent
    await asyncio.sleep(0.2)
    left = engine.play_out()
    assert 0.6 <= left <= 1.0, left
    await asyncio.sleep(left + 0.3)
    assert engine.stats()["underruns"] == 0, engine.stats()
    engine.stop_call()
    engine.close()
