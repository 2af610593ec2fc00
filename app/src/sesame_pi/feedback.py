"""What the person sees and hears: an LED pattern per state, and short earcons.

The LED is optional (`led_pin`). gpiozero's own background machinery runs every pattern
(`blink`, `pulse`, and `source` for patterns blink cannot express), so nothing here keeps time.
A PWMLED is used where the pin can do PWM (lgpio: any pin); otherwise a plain LED with on/off
versions of the same patterns. An LED that cannot be opened is logged and skipped: feedback must
never stop a call.

| state                   | PWM LED                          | plain LED                    |
| ----------------------- | -------------------------------- | ---------------------------- |
| starting, stopping      | off                              | off                          |
| idle                    | slow breathe (1.5 s in, 1.5 out) | 50 ms blip every 3 s         |
| offline                 | 100 ms blip every 1.5 s          | same                         |
| connecting              | fast blink, 150 ms on / 150 off  | same                         |
| live                    | solid on                         | same                         |
| ending                  | fade-out ramps, 0.7 s each       | 0.5 s on / 0.5 s off         |
| reconnecting            | double blink, then 0.8 s off     | same                         |
| needs_token             | rapid blink, 80 ms on / 80 off   | same                         |
| signing_in              | long blink, 1 s on / 0.25 s off  | same                         |
| device_error            | triple rapid blink, then 0.7 off | same                         |
| call_limit              | two 0.4 s flashes, then 1 s off  | same                         |

The setup page opening (the 5 s hold) is announced apart from the states: the SETUP earcon and,
for SETUP_SHOW_S, a long-short-short flash; then the state's pattern comes back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gpiozero  # type: ignore[import-untyped]

from . import earcons
from .config import Config
from .logs import event
from .states import Earcon, State

PlayEarcon = Callable[[bytes, int], None]


@dataclass(frozen=True)
class Solid:
    """Steady brightness (0 = off)."""

    value: float


@dataclass(frozen=True)
class Blink:
    """gpiozero blink: on, off, with optional fades (PWM only)."""

    on_s: float
    off_s: float
    fade_in_s: float = 0.0
    fade_out_s: float = 0.0


@dataclass(frozen=True)
class Steps:
    """A repeating sequence of levels, one per `step_s` (gpiozero `source`)."""

    levels: tuple[float, ...]
    step_s: float = 0.1


Pattern = Solid | Blink | Steps

_DOUBLE = (1.0, 0.0, 1.0) + (0.0,) * 8  # on 0.1, off 0.1, on 0.1, off 0.8
_TRIPLE = (1.0, 0.0, 1.0, 0.0, 1.0) + (0.0,) * 7  # three 0.1 s flashes, off 0.8
_LIMIT = (1.0,) * 4 + (0.0,) * 2 + (1.0,) * 4 + (0.0,) * 10  # on 0.4, off 0.2, on 0.4, off 1
# The setup page opened: on 0.5 s, then two 0.1 s flashes, off 0.5 s (unlike any state's pattern).
SETUP_PATTERN = Steps((1.0,) * 5 + (0.0, 1.0, 0.0, 1.0) + (0.0,) * 5)
SETUP_SHOW_S = 4.0

PWM_PATTERNS: dict[State, Pattern] = {
    State.STARTING: Solid(0.0),
    State.STOPPING: Solid(0.0),
    State.IDLE: Blink(0.0, 0.0, fade_in_s=1.5, fade_out_s=1.5),
    State.OFFLINE: Blink(0.1, 1.4),
    State.CONNECTING: Blink(0.15, 0.15),
    State.LIVE: Solid(1.0),
    State.ENDING: Blink(0.0, 0.0, fade_out_s=0.7),
    State.RECONNECTING: Steps(_DOUBLE),
    State.NEEDS_TOKEN: Blink(0.08, 0.08),
    State.SIGNING_IN: Blink(1.0, 0.25),
    State.DEVICE_ERROR: Steps(_TRIPLE),
    State.CALL_LIMIT: Steps(_LIMIT),
}

# A pin without PWM cannot fade: the same meanings with on/off only.
ONOFF_PATTERNS: dict[State, Pattern] = {
    **PWM_PATTERNS,
    State.IDLE: Blink(0.05, 2.95),
    State.ENDING: Blink(0.5, 0.5),
}


def _open_led(pin: int, pin_factory: Any) -> tuple[Any, bool]:
    """A PWMLED if the pin can do PWM, else a plain LED; returns (device, has_pwm). gpiozero's
    warnings on the way (a pin library it could not use) become log lines, as the button's do:
    they went to standard error as bare Python warnings, outside the JSON log."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", gpiozero.PinWarning)
        try:
            opened = gpiozero.PWMLED(pin, pin_factory=pin_factory), True
        except gpiozero.PinPWMUnsupported:
            opened = gpiozero.LED(pin, pin_factory=pin_factory), False
    for w in caught:
        event("gpio_factory_fallback", logging.WARNING, detail=str(w.message))
    return opened


class Feedback:
    """Shows states on the LED and plays earcons through the output path."""

    def __init__(
        self,
        cfg: Config,
        play_earcon: PlayEarcon | None,
        pin_factory: Any = None,
        earcon_rate: int = 24000,
    ) -> None:
        self._cfg = cfg
        self._play = play_earcon
        self._rate = earcon_rate
        self._state: State | None = None
        self._announce_end: asyncio.TimerHandle | None = None
        self.led: Any = None
        self.has_pwm = False
        if cfg.led_pin is not None:
            try:
                self.led, self.has_pwm = _open_led(cfg.led_pin, pin_factory)
            except Exception as exc:
                event(
                    "led_unavailable",
                    logging.WARNING,
                    detail="continuing without the status LED",
                    pin=cfg.led_pin,
                    error=str(exc),
                )
        if self._earcons_audible():
            for which in Earcon:  # generate now, so the first earcon plays without delay
                earcons.render(which, self._rate, cfg.earcon_volume)

    def pattern_for(self, state: State) -> Pattern:
        """The LED pattern `show(state)` runs on this LED."""
        return (PWM_PATTERNS if self.has_pwm else ONOFF_PATTERNS)[state]

    def show(self, state: State) -> None:
        """Switch the LED to the state's pattern (no restart if it is already showing)."""
        if self.led is None or state == self._state:
            return
        self._state = state
        try:
            self._run(self.pattern_for(state))
        except Exception as exc:  # a failing LED must not break the session
            event("led_error", logging.WARNING, error=str(exc))

    def _run(self, pattern: Pattern) -> None:
        led = self.led
        led.source = None  # stops a Steps pattern's thread
        if isinstance(pattern, Solid):
            led.value = pattern.value if self.has_pwm else pattern.value > 0
        elif isinstance(pattern, Blink):
            if self.has_pwm:
                led.blink(pattern.on_s, pattern.off_s, pattern.fade_in_s, pattern.fade_out_s)
            else:
                led.blink(pattern.on_s, pattern.off_s)
        else:
            led.off()
            led.source_delay = pattern.step_s
            led.source = itertools.cycle(
                pattern.levels if self.has_pwm else [v > 0 for v in pattern.levels]
            )

    def announce_setup(self) -> None:
        """The setup page opened: its earcon, and its LED pattern for SETUP_SHOW_S (on the loop)."""
        self.earcon(Earcon.SETUP)
        if self.led is None:
            return
        try:
            self._run(SETUP_PATTERN)
        except Exception as exc:
            event("led_error", logging.WARNING, error=str(exc))
            return
        if self._announce_end is not None:
            self._announce_end.cancel()
        self._announce_end = asyncio.get_running_loop().call_later(SETUP_SHOW_S, self._restore)

    def _restore(self) -> None:
        self._announce_end = None
        state, self._state = self._state, None
        if state is not None and self.led is not None:
            self.show(state)

    def _earcons_audible(self) -> bool:
        return self._cfg.earcons and self._cfg.earcon_volume > 0 and self._play is not None

    def earcon(self, which: Earcon) -> None:
        """Play a short tone through play_earcon; nothing at all when earcons are off or silent."""
        if not self._earcons_audible() or self._play is None:
            return
        pcm = earcons.render(which, self._rate, self._cfg.earcon_volume)
        try:
            self._play(pcm, self._rate)
        except Exception as exc:  # the speaker's trouble is the audio engine's to report
            event("earcon_error", logging.WARNING, earcon=which.value, error=str(exc))

    def close(self) -> None:
        """Turn the LED off and free its pin. Safe to call twice."""
        led, self.led = self.led, None
        if self._announce_end is not None:
            self._announce_end.cancel()
        if led is not None:
            try:
                led.source = None
                led.off()
            finally:
                led.close()
