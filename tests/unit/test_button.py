"""The button, with real timings: gpiozero Buttons on MockFactory pins, and the stdin button.

Pins are driven from a worker thread with time.sleep, as a finger (or bouncing contacts) would;
the listener records what reaches the event loop and when. Every pulse width that must be below
the 50 ms debounce is measured and checked, so a slow machine cannot turn a test into a lie.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import gpiozero
import pytest
from gpiozero import Device

from sesame_pi.button import (
    ButtonUnavailable,
    DebouncedMockPin,
    GpioButton,
    NoButton,
    StdinButton,
    make_button,
    mock_factory,
)
from sesame_pi.config import Config

PIN = 17


@dataclass
class Recorder:
    """A ButtonListener that notes each call, its time and its thread."""

    loop: asyncio.AbstractEventLoop
    events: list[tuple[str, float]] = field(default_factory=list)
    threads: set[int] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def _note(self, name: str) -> None:
        self.events.append((name, time.monotonic()))
        self.threads.add(threading.get_ident())
        self.changed.set()

    def button_pressed(self) -> None:
        self._note("pressed")

    def button_held(self) -> None:
        self._note("held")

    def button_released(self, held: bool) -> None:
        self._note(f"released(held={held})")

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def at(self, name: str) -> float:
        return next(t for n, t in self.events if n == name)

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.events) < count:
                self.changed.clear()
                await self.changed.wait()


def cfg(**changes: Any) -> Config:
    return Config().replace(**changes)


def _pulse_train(pin: Any, active: bool, widths: list[float]) -> list[float]:
    """Toggle the pin active/inactive for each width in turn; return the measured widths."""
    measured = []
    for i, width in enumerate(widths):
        level = active if i % 2 == 0 else not active
        start = time.monotonic()
        pin.drive_high() if level else pin.drive_low()
        time.sleep(width)
        measured.append(time.monotonic() - start)
    return measured


def _hold(pin: Any, active: bool, seconds: float) -> float:
    """Press for `seconds` (measured), then release."""
    start = time.monotonic()
    pin.drive_high() if active else pin.drive_low()
    time.sleep(seconds)
    pin.drive_low() if active else pin.drive_high()
    return time.monotonic() - start


@pytest.fixture
def gpio_button() -> Iterator[Callable[..., tuple[GpioButton, Recorder]]]:
    """Build started GPIO buttons on a fresh debouncing MockFactory; close them afterwards."""
    made: list[GpioButton] = []

    def build(**changes: Any) -> tuple[GpioButton, Recorder]:
        loop = asyncio.get_running_loop()
        rec = Recorder(loop)
        button = make_button(cfg(**changes), rec, loop, pin_factory=mock_factory())
        assert isinstance(button, GpioButton)
        button.start()
        made.append(button)
        return button, rec

    yield build
    for button in made:
        button.close()


# ---------------------------------------------------------------- GPIO button on MockFactory pins


@pytest.mark.asyncio
async def test_bounce_pulses_shorter_than_debounce_do_not_press(
    gpio_button: Any,
) -> None:
    button, rec = gpio_button()
    widths = await asyncio.to_thread(_pulse_train, button.pin, True, [0.015] * 10)
    assert max(widths) < 0.05, f"the machine was too slow to make sub-50 ms pulses: {widths}"
    await asyncio.sleep(0.3)
    assert rec.events == []
    assert not button.device.is_pressed


@pytest.mark.asyncio
async def test_bouncy_press_counts_once(gpio_button: Any) -> None:
    button, rec = gpio_button()
    # Contacts chatter (15 ms pulses), then stay closed 0.4 s, then chatter open again.
    widths = await asyncio.to_thread(_pulse_train, button.pin, True, [0.015] * 6 + [0.4])
    assert max(widths[:-1]) < 0.05, widths
    await asyncio.to_thread(_pulse_train, button.pin, False, [0.015] * 5)
    await asyncio.sleep(0.2)
    assert rec.names() == ["pressed", "released(held=False)"]


@pytest.mark.asyncio
async def test_hold_of_1_9_s_is_not_held(gpio_button: Any) -> None:
    button, rec = gpio_button()
    held_for = await asyncio.to_thread(_hold, button.pin, True, 1.9)
    assert held_for < 1.95
    await rec.wait_for(2)
    await asyncio.sleep(0.3)
    assert rec.names() == ["pressed", "released(held=False)"]


@pytest.mark.asyncio
async def test_hold_of_2_1_s_is_held(gpio_button: Any) -> None:
    button, rec = gpio_button()
    started = time.monotonic()
    await asyncio.to_thread(_hold, button.pin, True, 2.1)
    await rec.wait_for(3)
    assert rec.names() == ["pressed", "held", "released(held=True)"]
    # The press is reported once the 50 ms debounce settles; held hold_s later (gpiozero's timing).
    # (Never early; late by a busy machine's scheduling at most: the loop stamps each callback.)
    assert 0.04 <= rec.at("pressed") - started < 0.4
    assert 1.95 <= rec.at("held") - rec.at("pressed") < 2.3


@pytest.mark.asyncio
async def test_short_press_then_hold_each_report_held_correctly(
    gpio_button: Any,
) -> None:
    button, rec = gpio_button(hold_s=0.5)
    await asyncio.to_thread(_hold, button.pin, True, 0.2)
    await asyncio.sleep(0.2)  # released long enough to count (a 0 ms gap would be bounce)
    await asyncio.to_thread(_hold, button.pin, True, 0.8)
    await rec.wait_for(5)
    assert rec.names() == [
        "pressed",
        "released(held=False)",
        "pressed",
        "held",
        "released(held=True)",
    ]


@pytest.mark.asyncio
async def test_pull_up_is_active_low(gpio_button: Any) -> None:
    """ReSpeaker 2-Mic wiring: internal pull-up, the button pulls GPIO 17 to ground."""
    button, rec = gpio_button(button_pull="up")
    assert button.pin.pull == "up"
    assert button.pin.state is True and not button.device.is_pressed
    await asyncio.to_thread(_hold, button.pin, False, 2.1)  # low = pressed
    await rec.wait_for(3)
    assert rec.names() == ["pressed", "held", "released(held=True)"]
    # Driving the idle line high again is no press at all.
    await asyncio.to_thread(_pulse_train, button.pin, True, [0.2])
    await asyncio.sleep(0.2)
    assert len(rec.events) == 3


@pytest.mark.asyncio
async def test_pull_down_and_floating_are_active_high(gpio_button: Any) -> None:
    down, rec_down = gpio_button(button_pull="down")
    floating, rec_float = gpio_button(button_pull="floating", button_pin=27)
    assert down.pin.pull == "down" and floating.pin.pull == "floating"
    await asyncio.gather(
        asyncio.to_thread(_hold, down.pin, True, 0.3),
        asyncio.to_thread(_hold, floating.pin, True, 0.3),
    )
    await rec_down.wait_for(2)
    await rec_float.wait_for(2)
    assert rec_down.names() == rec_float.names() == ["pressed", "released(held=False)"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("pull", "idle_level", "wanted"), [("down", True, "up"), ("up", False, "down")]
)
async def test_a_button_wired_against_its_pull_is_said_at_start(
    pull: str, idle_level: bool, wanted: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A HAT's button with its own pull-up under the default pull-down reads pressed at rest:
    each press then acted as a release (the call started as the finger lifted, and the hold
    ended it 2 s later), with no word of why."""
    loop = asyncio.get_running_loop()
    rec = Recorder(loop)
    button = make_button(cfg(button_pull=pull), rec, loop, pin_factory=mock_factory())
    assert isinstance(button, GpioButton)
    try:
        button.pin.drive_high() if idle_level else button.pin.drive_low()
        await asyncio.sleep(0.15)  # past the debounce: the pin's level is settled
        with caplog.at_level(logging.WARNING):
            button.start()
        (said,) = [r for r in caplog.records if getattr(r, "event", "") == "button_reads_pressed"]
        assert f'button_pull = "{wanted}"' in said.action
    finally:
        button.close()


@pytest.mark.asyncio
async def test_a_button_at_rest_says_nothing(
    gpio_button: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        gpio_button(button_pull="up")
        gpio_button(button_pull="down", button_pin=27)
    assert not [r for r in caplog.records if getattr(r, "event", "") == "button_reads_pressed"]


@pytest.mark.asyncio
async def test_callbacks_arrive_on_the_event_loop_thread(gpio_button: Any) -> None:
    button, rec = gpio_button(hold_s=0.5)
    await asyncio.to_thread(_hold, button.pin, True, 0.7)
    await rec.wait_for(3)
    assert rec.threads == {threading.get_ident()}


@pytest.mark.asyncio
async def test_close_stops_events_and_frees_the_pin() -> None:
    loop = asyncio.get_running_loop()
    rec = Recorder(loop)
    factory = mock_factory()
    button = make_button(cfg(), rec, loop, pin_factory=factory)
    assert isinstance(button, GpioButton)
    button.start()
    pin = button.pin
    button.close()
    button.close()
    pin.drive_high()
    await asyncio.sleep(0.2)
    assert rec.events == []
    again = make_button(cfg(), rec, loop, pin_factory=factory)  # the pin is free again
    again.close()


@pytest.mark.asyncio
async def test_button_none_is_no_button() -> None:
    loop = asyncio.get_running_loop()
    button = make_button(cfg(button="none"), Recorder(loop), loop)
    assert isinstance(button, NoButton)
    button.start()
    button.close()


def test_debounced_mock_pin_reports_only_stable_levels() -> None:
    """The pin driver emulation on its own: edges only after the level stayed put."""
    factory = mock_factory()
    pin = factory.pin(PIN)
    assert isinstance(pin, DebouncedMockPin)
    pin.function = "input"
    pin.pull = "down"
    pin.bounce = 0.05
    seen: list[bool] = []

    def changed(ticks: float, state: bool) -> None:
        seen.append(state)

    pin.when_changed = changed  # held strongly here: the pin keeps only a weak reference
    pin.drive_high()
    time.sleep(0.02)
    pin.drive_low()
    time.sleep(0.1)
    assert seen == [] and pin.state is False
    pin.drive_high()
    time.sleep(0.1)
    assert seen == [True] and pin.state is True
    pin.when_changed = None
    factory.close()


# ---------------------------------------------------------------- no GPIO here: ButtonUnavailable


@pytest.fixture
def no_global_factory() -> Iterator[None]:
    """Let gpiozero choose its real pin factory afresh, and put things back afterwards."""
    saved = Device.pin_factory
    Device.pin_factory = None
    yield
    if Device.pin_factory is not None and Device.pin_factory is not saved:
        Device.pin_factory.close()
    Device.pin_factory = saved


def _has_gpio_chip() -> bool:
    return any(name.startswith("gpiochip") for name in os.listdir("/dev"))


@pytest.mark.asyncio
@pytest.mark.parametrize("factory_name", [None, "native", "lgpio"])
async def test_no_gpio_chip_names_button_stdin(
    factory_name: str | None, no_global_factory: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real pin factory on a machine with no GPIO: a clear error naming `--button stdin`."""
    if _has_gpio_chip():
        pytest.skip("this machine has a GPIO chip, so the no-GPIO error cannot be observed")
    if factory_name is None:
        monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)  # gpiozero's own choice
    else:
        monkeypatch.setenv("GPIOZERO_PIN_FACTORY", factory_name)
    loop = asyncio.get_running_loop()
    with pytest.raises(ButtonUnavailable) as caught:
        make_button(cfg(), Recorder(loop), loop)
    message = str(caught.value)
    assert "`--button stdin`" in message
    assert "GPIO 17" in message and "pull down" in message
    assert isinstance(caught.value.__cause__, Exception)


@pytest.mark.asyncio
async def test_pin_in_use_is_explained() -> None:
    loop = asyncio.get_running_loop()
    factory = mock_factory()
    other = gpiozero.LED(PIN, pin_factory=factory)
    try:
        with pytest.raises(ButtonUnavailable, match=r"GPIO 17 is already in use.*--button stdin"):
            make_button(cfg(), Recorder(loop), loop, pin_factory=factory)
    finally:
        other.close()


@pytest.mark.asyncio
async def test_wrong_pull_on_a_fixed_pull_pin_is_explained() -> None:
    """GPIO 2 and 3 have fixed pull-ups (I2C): a pull-down there cannot work."""
    loop = asyncio.get_running_loop()
    with pytest.raises(ButtonUnavailable, match=r"GPIO 2 has a fixed pull.*'down'.*button_pull"):
        make_button(cfg(button_pin=2), Recorder(loop), loop, pin_factory=mock_factory())


# ---------------------------------------------------------------- the stdin button: same logic


@contextlib.asynccontextmanager
async def stdin_button(**changes: Any) -> Any:
    """A started stdin button reading a pipe; yields (button, recorder, write_line, task)."""
    loop = asyncio.get_running_loop()
    rec = Recorder(loop)
    button = make_button(cfg(button="stdin", **changes), rec, loop)
    assert isinstance(button, StdinButton)
    button.start()
    read_fd, write_fd = os.pipe()
    stream = os.fdopen(read_fd, "r", encoding="utf-8")
    task = asyncio.create_task(button.run(stream))

    def write(line: str) -> float:
        os.write(write_fd, (line + "\n").encode())
        return time.monotonic()

    try:
        yield button, rec, write, task, write_fd
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(OSError):
            os.close(write_fd)
        button.close()
        stream.close()


def _script(write: Callable[[str], float], steps: list[tuple[str, float]]) -> list[float]:
    """Write each line, then wait; return the measured gap after each line."""
    gaps = []
    for line, wait in steps:
        start = write(line)
        time.sleep(wait)
        gaps.append(time.monotonic() - start)
    return gaps


@pytest.mark.asyncio
async def test_stdin_bounce_lines_do_not_press() -> None:
    async with stdin_button() as (_button, rec, write, _task, _fd):
        steps = [("press", 0.015), ("release", 0.015)] * 5
        gaps = await asyncio.to_thread(_script, write, steps)
        assert max(gaps[0::2]) < 0.05, f"pulses were not shorter than 50 ms: {gaps}"
        await asyncio.sleep(0.3)
        assert rec.events == []


@pytest.mark.asyncio
async def test_stdin_hold_1_9_s_is_not_held_and_2_1_s_is() -> None:
    async with stdin_button() as (_button, rec, write, _task, _fd):
        await asyncio.to_thread(_script, write, [("press", 1.9), ("release", 0.3)])
        await rec.wait_for(2)
        assert rec.names() == ["pressed", "released(held=False)"]
        await asyncio.to_thread(_script, write, [("press", 2.1), ("release", 0.1)])
        await rec.wait_for(5)
        assert rec.names()[2:] == ["pressed", "held", "released(held=True)"]
        assert 1.95 <= rec.events[3][1] - rec.events[2][1] < 2.3  # never early; late if busy


@pytest.mark.asyncio
async def test_stdin_pull_up_drives_the_line_low() -> None:
    async with stdin_button(button_pull="up") as (button, rec, write, _task, _fd):
        assert button.pin.state is True
        write("press")
        await rec.wait_for(1)
        assert button.pin.state is False and rec.names() == ["pressed"]
        write("release")
        await rec.wait_for(2)
        assert button.pin.state is True
        assert rec.names() == ["pressed", "released(held=False)"]


@pytest.mark.asyncio
async def test_stdin_enter_is_a_short_press_and_hold_line_holds() -> None:
    async with stdin_button(hold_s=0.5) as (_button, rec, write, _task, _fd):
        write("")
        await rec.wait_for(2)
        assert rec.names() == ["pressed", "released(held=False)"]
        assert 0.08 <= rec.events[1][1] - rec.events[0][1] < 0.3
        write("hold")
        await rec.wait_for(5)
        assert rec.names()[2:] == ["pressed", "held", "released(held=True)"]


@pytest.mark.asyncio
async def test_stdin_unknown_line_warns_and_is_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="sesame_pi.button")
    async with stdin_button() as (_button, rec, write, _task, _fd):
        write("  PrEsS now  ")
        await asyncio.sleep(0.2)
        assert rec.events == []
        warned = [r for r in caplog.records if getattr(r, "event", "") == "stdin_unknown_line"]
        assert len(warned) == 1 and warned[0].line == "PrEsS now"  # type: ignore[attr-defined]
        write(" PRESS ")  # case and spaces do not matter for known words
        await rec.wait_for(1)
        assert rec.names() == ["pressed"]


@pytest.mark.asyncio
async def test_stdin_eof_stops_reading_and_the_button_stays_usable() -> None:
    async with stdin_button() as (button, rec, write, task, write_fd):
        write("press")
        await rec.wait_for(1)
        os.close(write_fd)
        async with asyncio.timeout(2):
            await task  # run() ends by itself at end of input
        assert task.done() and task.exception() is None
        await asyncio.sleep(0.1)  # the loop carries on
        button.release()  # the same pin can still be driven (the app keeps running)
        await rec.wait_for(2)
        assert rec.names() == ["pressed", "released(held=False)"]


@pytest.mark.asyncio
async def test_stdin_reading_never_blocks_the_loop() -> None:
    """While the reader waits for a line, the loop keeps ticking on time."""
    async with stdin_button() as (_button, _rec, _write, task, _fd):
        late = 0.0
        for _ in range(20):
            start = time.monotonic()
            await asyncio.sleep(0.01)
            late = max(late, time.monotonic() - start - 0.01)
        assert not task.done()
        assert late < 0.05
