"""The push button: a gpiozero Button on a GPIO pin, or the same Button driven by stdin lines.

gpiozero does the timing: `bounce_time` (in the pin driver: lgpio / the kernel on a Pi) and
`hold_time`/`when_held` (its own hold thread). We only forward its callbacks to the event loop and
remember whether the current press reached "held", so the session hears press, held and
release(held=...) in order, on the loop thread.

Wiring (BCM numbers), chosen with `button_pull`:

- ``down`` (default, the requirements' wiring): button between GPIO 17 and 3V3, pull-down
  resistor to GND (the Pi's internal one is enough); pressed = high.
- ``up`` (ReSpeaker 2-Mic HAT and most HATs): button between GPIO 17 and GND, pull-up to 3V3;
  pressed = low.
- ``floating``: the internal pull is switched off because an external resistor does the job. We
  then assume the external resistor pulls *down* (button to 3V3, pressed = high), like the
  requirements' wiring; with an external pull-up use ``up`` instead (the internal pull-up in
  parallel is harmless).

`--button stdin` builds the very same gpiozero Button, on a pin of a private MockFactory whose
level stdin lines set; so debounce and hold behave exactly as on the hardware.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import warnings
from typing import IO, Any, Protocol

import gpiozero  # type: ignore[import-untyped]
from gpiozero.pins.mock import MockFactory, MockPin  # type: ignore[import-untyped]

from .config import Config
from .logs import event

# How long a bare Enter on stdin keeps the button down: well past the 50 ms debounce, far below
# any hold time.
TAP_S = 0.1
# How much longer than hold_s the stdin line `hold` keeps the button down.
HOLD_MARGIN_S = 0.5
# The setup hold: this long down (begun out of a call) opens the setup page; well past hold_s, so
# it never passes for a hang-up hold. Timed on the loop from the debounced press.
SETUP_HOLD_S = 5.0


class ButtonListener(Protocol):
    """Who hears the button (the session). Every call comes on the event loop's thread."""

    def button_pressed(self) -> None: ...
    def button_held(self) -> None: ...
    def button_long_held(self) -> None: ...
    def button_released(self, held: bool) -> None: ...


class Button(Protocol):
    """What make_button returns: start forwarding events, stop and free the pin."""

    def start(self) -> None: ...
    def close(self) -> None: ...


class ButtonUnavailable(RuntimeError):
    """The GPIO button cannot be used here; the message says why and names `--button stdin`."""


def gpio_args(pull: str) -> dict[str, Any]:
    """gpiozero Button arguments for a `button_pull` value (see the module docstring)."""
    if pull == "down":
        return {"pull_up": False, "active_state": None}  # pressed = high
    if pull == "up":
        return {"pull_up": True, "active_state": None}  # pressed = low
    if pull == "floating":
        return {"pull_up": None, "active_state": True}  # external pull-down assumed: pressed = high
    raise ValueError(f"button_pull {pull!r} is not one of down, up, floating")


def pressed_level(pull: str) -> bool:
    """The pin level that means "pressed" for a `button_pull` value."""
    return pull != "up"


class DebouncedMockPin(MockPin):  # type: ignore[misc]
    """A gpiozero MockPin whose `bounce` works like the Pi's pin driver.

    gpiozero's MockPin stores `bounce` but ignores it. On a Pi, lgpio and the kernel's GPIO
    character device debounce in the driver: a level change is reported only once the line has
    stayed at the new level for the whole bounce period, so a pulse shorter than it is never seen.
    This pin does the same, so the stdin button and the tests get the hardware's behaviour.
    """

    def __init__(self, factory: Any, info: Any) -> None:
        self._line_lock = threading.Lock()
        self._line_level: bool | None = None
        self._generation = 0
        self._settle_timer: threading.Timer | None = None
        super().__init__(factory, info)

    def close(self) -> None:
        self._bounce = None  # MockPin.close re-applies the pull: let that take effect at once
        with self._line_lock:
            self._generation += 1
            if self._settle_timer is not None:
                self._settle_timer.cancel()
            self._settle_timer = None
            self._line_level = None
        super().close()

    def drive_high(self) -> None:
        self._drive(True)

    def drive_low(self) -> None:
        self._drive(False)

    def _drive(self, level: bool) -> None:
        bounce = self._bounce
        if not bounce or self._function != "input":
            with self._line_lock:
                self._generation += 1
                self._line_level = None
            self._report(level)
            return
        with self._line_lock:
            self._generation += 1
            self._line_level = level
            if self._settle_timer is not None:
                self._settle_timer.cancel()
            timer = threading.Timer(bounce, self._settle, (self._generation,))
            timer.daemon = True
            self._settle_timer = timer
        timer.start()

    def _settle(self, generation: int) -> None:
        with self._line_lock:
            if generation != self._generation or self._line_level is None:
                return  # the line moved again within the bounce period
            level = self._line_level
            self._line_level = None
            self._settle_timer = None
        self._report(level)

    def _report(self, level: bool) -> None:
        """Change the reported state and fire the edge, as MockPin's drive_* do."""
        if level:
            super().drive_high()
        else:
            super().drive_low()


def mock_factory() -> Any:
    """A private gpiozero MockFactory whose pins debounce like the Pi's (see DebouncedMockPin)."""
    return MockFactory(pin_class=DebouncedMockPin)


def _explain(exc: BaseException, cfg: Config, fallbacks: list[str]) -> str:
    """One sentence a person can act on, for a GPIO button that could not be opened."""
    pin, pull = cfg.button_pin, cfg.button_pull
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    if isinstance(exc, gpiozero.GPIOPinInUse) or "busy" in lowered:
        why = f"GPIO {pin} is already in use (another program, overlay or device holds it)"
        fix = "free it or choose another button_pin"
    elif isinstance(exc, gpiozero.PinFixedPull):
        why = f"GPIO {pin} has a fixed pull resistor, so button_pull {pull!r} cannot be set"
        fix = "set button_pull to 'up' (pressed = low: the button to GND) or another button_pin"
    elif isinstance(exc, PermissionError) or "permission" in lowered or "access" in lowered:
        why = f"no permission to open the GPIO chip for GPIO {pin} ({text})"
        fix = "run as a user in the gpio group, or pass /dev/gpiochip0 into the container"
    elif isinstance(exc, gpiozero.PinInvalidPin):
        why = f"GPIO {pin} is not a usable pin here ({text})"
        fix = "choose another button_pin"
    else:
        why = f"no usable GPIO chip for the button on GPIO {pin}, pull {pull} ({text})"
        if fallbacks:
            why += "; tried: " + "; ".join(fallbacks)
        fix = "on a Raspberry Pi install lgpio and give access to /dev/gpiochip0"
    return (
        f"{why}. {fix[0].upper()}{fix[1:]}; on a machine without GPIO run with `--button stdin` "
        "(type press / release, or Enter for a short press) or `--button none`."
    )


class GpioButton:
    """A gpiozero Button whose callbacks reach the listener on the event loop."""

    def __init__(
        self,
        cfg: Config,
        listener: ButtonListener,
        loop: asyncio.AbstractEventLoop,
        pin_factory: Any = None,
    ) -> None:
        self._cfg = cfg
        self._listener = listener
        self._loop = loop
        self._pressed = False  # loop-side: a press is under way
        self._held = False  # loop-side: the current press reached hold_s
        self._closed = False
        self._started = False
        self._long_timer: asyncio.TimerHandle | None = None
        self.device = self._open(cfg, pin_factory)

    @staticmethod
    def _open(cfg: Config, pin_factory: Any) -> Any:
        """Build the gpiozero Button; any failure becomes ButtonUnavailable."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", gpiozero.PinWarning)
            try:
                device = gpiozero.Button(
                    cfg.button_pin,
                    bounce_time=cfg.bounce_ms / 1000 if cfg.bounce_ms else None,
                    hold_time=cfg.hold_s,
                    hold_repeat=False,
                    pin_factory=pin_factory,
                    **gpio_args(cfg.button_pull),
                )
            except Exception as exc:
                fallbacks = [str(w.message) for w in caught]
                raise ButtonUnavailable(_explain(exc, cfg, fallbacks)) from exc
        for w in caught:
            event("gpio_factory_fallback", logging.WARNING, detail=str(w.message))
        return device

    @property
    def pin(self) -> Any:
        """The gpiozero pin under the button (a MockPin for the stdin button and tests)."""
        return self.device.pin

    def start(self) -> None:
        """Begin forwarding gpiozero's events to the listener."""
        self._started = True
        self.device.when_pressed = self._gz_pressed
        self.device.when_held = self._gz_held
        self.device.when_released = self._gz_released
        event(
            "button_ready",
            kind=self._cfg.button,
            pin=self._cfg.button_pin,
            pull=self._cfg.button_pull,
            bounce_ms=self._cfg.bounce_ms,
            hold_s=self._cfg.hold_s,
        )
        if self._cfg.button == "gpio" and self.device.is_pressed:
            self._say_reads_pressed()

    def _say_reads_pressed(self) -> None:
        """A button that reads pressed as the app starts is nearly always wired the other way
        from `button_pull`: every press then acts as a release (a call starts when the finger
        lifts and the hold ends it two seconds later). Said, not guessed: a finger on the button
        at power-on reads the same."""
        wanted = "up" if self._cfg.button_pull != "up" else "down"
        event(
            "button_reads_pressed",
            logging.WARNING,
            pin=self._cfg.button_pin,
            pull=self._cfg.button_pull,
            detail=f"the button on GPIO {self._cfg.button_pin} reads pressed as the app starts",
            action=f'if nobody is pressing it, set button_pull = "{wanted}": a button that '
            'connects the pin to ground (most HATs, the ReSpeaker 2-Mic) needs "up", one '
            'wired to 3V3 needs "down"',
        )

    def close(self) -> None:
        """Stop events and release the pin. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._cancel_long_hold()
        if self._started:
            self.device.when_pressed = None
            self.device.when_held = None
            self.device.when_released = None
        self.device.close()

    # gpiozero's threads (pin callback thread, hold thread): hand over to the loop, nothing else.
    def _gz_pressed(self) -> None:
        self._post(self._on_pressed)

    def _gz_held(self) -> None:
        self._post(self._on_held)

    def _gz_released(self) -> None:
        self._post(self._on_released)

    def _post(self, callback: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the app is shutting down
            self._loop.call_soon_threadsafe(callback)

    # The event loop's thread.
    def _on_pressed(self) -> None:
        if self._closed:
            return
        self._pressed, self._held = True, False
        self._cancel_long_hold()
        self._long_timer = self._loop.call_later(SETUP_HOLD_S, self._on_long_held)
        self._listener.button_pressed()

    def _on_long_held(self) -> None:
        self._long_timer = None
        if not self._closed and self._pressed:
            self._listener.button_long_held()

    def _cancel_long_hold(self) -> None:
        timer, self._long_timer = self._long_timer, None
        if timer is not None:
            timer.cancel()

    def _on_held(self) -> None:
        # A hold that raced with its own release arrives after it: drop it.
        if self._closed or not self._pressed or self._held:
            return
        self._held = True
        self._listener.button_held()

    def _on_released(self) -> None:
        if self._closed or not self._pressed:
            return
        held, self._pressed, self._held = self._held, False, False
        self._cancel_long_hold()
        self._listener.button_released(held)


class StdinButton(GpioButton):
    """The same gpiozero Button on a mock pin whose level comes from text lines.

    Lines: ``press`` (button down), ``release`` (button up), an empty line (a short press of
    TAP_S), ``hold`` (down for hold_s + HOLD_MARGIN_S, then up), ``setup`` (down for
    SETUP_HOLD_S + HOLD_MARGIN_S: the setup hold). Anything else is warned about
    and ignored. End of input stops reading; the app keeps running.
    """

    def __init__(
        self, cfg: Config, listener: ButtonListener, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._factory = mock_factory()
        super().__init__(cfg, listener, loop, pin_factory=self._factory)
        self._active_level = pressed_level(cfg.button_pull)
        self._stop = threading.Event()

    def press(self) -> None:
        """Put the line at the pressed level (as a finger on the button would)."""
        self._set_line(self._active_level)

    def release(self) -> None:
        """Put the line back at the released level."""
        self._set_line(not self._active_level)

    def _set_line(self, level: bool) -> None:
        if self._closed:
            return
        if level:
            self.pin.drive_high()
        else:
            self.pin.drive_low()

    def handle_line(self, line: str) -> None:
        """Act on one input line. Blocks for a tap or hold: call it off the event loop."""
        word = line.strip().lower()
        if word == "press":
            self.press()
        elif word == "release":
            self.release()
        elif word == "":
            self.press()
            self._stop.wait(TAP_S)
            self.release()
        elif word in ("hold", "setup"):
            self.press()
            down_s = self._cfg.hold_s if word == "hold" else SETUP_HOLD_S
            self._stop.wait(down_s + HOLD_MARGIN_S)
            self.release()
        else:
            event(
                "stdin_unknown_line",
                logging.WARNING,
                detail="unknown line ignored (use press, release, hold, setup or Enter)",
                line=line.strip()[:80],
            )

    async def run(self, stream: IO[str] | IO[bytes] | None = None) -> None:
        """Read lines until end of input, in a thread so the loop never waits for stdin.

        Cancelling this returns at once; the reader thread (a daemon) ends with its next line.
        """
        source: IO[Any] = sys.stdin if stream is None else stream
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def finish() -> None:
            if not done.done():
                done.set_result(None)

        def reader() -> None:
            try:
                while not self._stop.is_set():
                    raw = source.readline()
                    if not raw:
                        break
                    if self._stop.is_set():
                        break
                    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
                    self.handle_line(text)
            except (OSError, ValueError) as exc:  # closed or broken stream
                event("stdin_error", logging.WARNING, detail="reading stopped", error=str(exc))
            finally:
                event("stdin_closed")
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(finish)

        thread = threading.Thread(target=reader, name="stdin-button", daemon=True)
        thread.start()
        try:
            await done
        finally:
            if not done.done():  # cancelled: let the thread end at its next line
                self._stop.set()

    def close(self) -> None:
        self._stop.set()
        super().close()
        self._factory.close()


class NoButton:
    """`--button none`: no button at all (calls are placed some other way, or never)."""

    def start(self) -> None:
        event("button_ready", kind="none")

    def close(self) -> None:
        pass


def make_button(
    cfg: Config,
    listener: ButtonListener,
    loop: asyncio.AbstractEventLoop,
    pin_factory: Any = None,
) -> GpioButton | StdinButton | NoButton:
    """The button cfg.button asks for. Raises ButtonUnavailable when GPIO cannot be used.

    pin_factory: a gpiozero pin factory for the "gpio" kind (tests pass a MockFactory); None lets
    gpiozero choose (lgpio on a Pi; GPIOZERO_PIN_FACTORY is honoured).
    """
    if cfg.button == "gpio":
        return GpioButton(cfg, listener, loop, pin_factory=pin_factory)
    if cfg.button == "stdin":
        return StdinButton(cfg, listener, loop)
    if cfg.button == "none":
        return NoButton()
    raise ValueError(f"button {cfg.button!r} is not one of gpio, stdin, none")
