"""Feedback: LED patterns read back from gpiozero MockFactory pins, and earcons via play_earcon."""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import gpiozero
import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin

from sesame_pi import earcons
from sesame_pi.config import Config
from sesame_pi.feedback import Feedback
from sesame_pi.states import Earcon, State

# Pins for one LED per state, all away from the button's GPIO 17.
LED_PINS = [4, 5, 6, 12, 13, 16, 19, 20, 21, 22, 23, 24]
WATCH_S = 3.3  # longer than the slowest pattern's period (idle: 3 s)


def cfg(**changes: Any) -> Config:
    return Config().replace(**changes)


def runs(pin: Any) -> list[tuple[float, float]]:
    """The pin's history as (level, seconds at that level); the last level runs to now."""
    states = pin.states
    out = []
    for i, entry in enumerate(states):
        if i + 1 < len(states):
            length = states[i + 1].timestamp
        else:
            length = time.monotonic() - pin._last_change
        out.append((float(entry.state), length))
    return out


def pulses(history: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """On-times and off-times between the first and the last full pulse (ends dropped)."""
    inner = history[1:-1]
    on = [length for level, length in inner if level >= 0.99]
    off = [length for level, length in inner if level <= 0.01]
    return on, off


def watch_all(factory: Any) -> dict[State, list[tuple[float, float]]]:
    """Show every state at once, one LED each, and return what each pin did."""
    shown = {}
    for state, pin in zip(State, LED_PINS, strict=True):
        fb = Feedback(cfg(led_pin=pin), None, pin_factory=factory)
        fb.led.pin.clear_states()
        fb.show(state)
        shown[state] = fb
    time.sleep(WATCH_S)
    histories = {state: runs(fb.led.pin) for state, fb in shown.items()}
    for fb in shown.values():
        fb.close()
    return histories


def signature(history: list[tuple[float, float]]) -> tuple[Any, ...]:
    """A coarse fingerprint: levels seen (to 0.1) and on/off lengths (to 50 ms)."""
    on, off = pulses(history)
    levels = sorted({round(level, 1) for level, _ in history})
    return (
        tuple(levels),
        tuple(sorted({round(t / 0.05) for t in on})),
        tuple(sorted({round(t / 0.05) for t in off})),
    )


@pytest.fixture(scope="module")
def pwm_histories() -> dict[State, list[tuple[float, float]]]:
    return watch_all(MockFactory(pin_class=MockPWMPin))


@pytest.fixture(scope="module")
def onoff_histories() -> dict[State, list[tuple[float, float]]]:
    return watch_all(MockFactory())


def test_pwm_patterns(pwm_histories: dict[State, list[tuple[float, float]]]) -> None:
    h = pwm_histories
    tol = 0.035
    # Off, and solid on.
    for state in (State.STARTING, State.STOPPING):
        assert {level for level, _ in h[state]} == {0.0}
    assert [level for level, _ in h[State.LIVE]] == [0.0, 1.0]
    # Idle breathes: a smooth ramp up then down over ~3 s, many levels in between.
    idle_levels = [level for level, _ in h[State.IDLE]]
    assert len({round(v, 2) for v in idle_levels if 0 < v < 1}) >= 20
    peak = idle_levels.index(max(idle_levels))
    assert idle_levels[1:peak] == sorted(idle_levels[1:peak])
    assert 1.3 < sum(length for _, length in h[State.IDLE][1:peak]) < 1.7
    # Ending fades out repeatedly: levels only fall within each ramp.
    ending = [level for level, _ in h[State.ENDING]]
    assert len({round(v, 2) for v in ending if 0 < v < 1}) >= 10
    rises = sum(1 for a, b in itertools.pairwise(ending) if b > a)
    assert 3 <= rises <= 6  # one jump to full per 0.7 s ramp, nothing else goes up
    # Blinks: on/off lengths.
    on, off = pulses(h[State.CONNECTING])
    assert len(on) >= 8 and all(abs(t - 0.15) < tol for t in on + off)
    on, off = pulses(h[State.NEEDS_TOKEN])
    assert len(on) >= 15 and all(abs(t - 0.08) < tol for t in on + off)
    on, off = pulses(h[State.SIGNING_IN])
    assert on and all(abs(t - 1.0) < 0.06 for t in on) and all(abs(t - 0.25) < tol for t in off)
    on, off = pulses(h[State.OFFLINE])
    assert on and all(abs(t - 0.1) < tol for t in on) and all(abs(t - 1.4) < 0.06 for t in off)
    # Double blink: short gaps (0.1) alternate with long ones (0.8).
    on, off = pulses(h[State.RECONNECTING])
    assert all(abs(t - 0.1) < tol for t in on)
    short = [t for t in off if t < 0.3]
    long_ = [t for t in off if t >= 0.3]
    assert all(abs(t - 0.1) < tol for t in short) and all(abs(t - 0.8) < 0.06 for t in long_)
    assert len(long_) >= 2 and abs(len(short) - len(long_)) <= 1
    # Triple blink: two short gaps per long one.
    on, off = pulses(h[State.DEVICE_ERROR])
    short = [t for t in off if t < 0.3]
    long_ = [t for t in off if t >= 0.3]
    assert len(long_) >= 2 and 2 * len(long_) - 2 <= len(short) <= 2 * len(long_) + 2


def test_every_state_that_matters_looks_different(
    pwm_histories: dict[State, list[tuple[float, float]]],
    onoff_histories: dict[State, list[tuple[float, float]]],
) -> None:
    """idle, offline, connecting, live, ending, reconnecting, signing in and both error states
    are distinct."""
    distinct = [
        State.IDLE,
        State.OFFLINE,
        State.CONNECTING,
        State.LIVE,
        State.ENDING,
        State.RECONNECTING,
        State.NEEDS_TOKEN,
        State.SIGNING_IN,
        State.DEVICE_ERROR,
        State.CALL_LIMIT,
    ]
    for histories in (pwm_histories, onoff_histories):
        prints = {state: signature(histories[state]) for state in distinct}
        assert len(set(prints.values())) == len(distinct), prints
        for state in distinct:
            assert prints[state] != signature(histories[State.STARTING])


def test_onoff_patterns_without_pwm(
    onoff_histories: dict[State, list[tuple[float, float]]],
) -> None:
    """A pin without PWM gets on/off versions: nothing but 0 and 1, idle a blip every 3 s."""
    for history in onoff_histories.values():
        assert {level for level, _ in history} <= {0.0, 1.0}
    idle = onoff_histories[State.IDLE]
    assert [level for level, _ in idle[:3]] == [0.0, 1.0, 0.0]
    assert abs(idle[1][1] - 0.05) < 0.03
    on, off = pulses(onoff_histories[State.ENDING])
    assert on and all(abs(t - 0.5) < 0.04 for t in on + off)


def test_same_state_again_does_not_restart_the_pattern() -> None:
    factory = MockFactory(pin_class=MockPWMPin)
    fb = Feedback(cfg(led_pin=4), None, pin_factory=factory)
    fb.show(State.CONNECTING)
    time.sleep(0.07)
    fb.show(State.CONNECTING)  # mid-pulse: must not cut it short
    time.sleep(0.5)
    history = runs(fb.led.pin)
    fb.close()
    assert history[1][0] == 1.0 and abs(history[1][1] - 0.15) < 0.035


def test_leaving_a_step_pattern_stops_it() -> None:
    factory = MockFactory(pin_class=MockPWMPin)
    fb = Feedback(cfg(led_pin=4), None, pin_factory=factory)
    fb.show(State.RECONNECTING)
    time.sleep(0.35)
    fb.show(State.LIVE)
    pin = fb.led.pin
    pin.clear_states()
    time.sleep(1.0)
    assert [s.state for s in pin.states] == [1.0]
    fb.close()


def test_close_turns_off_and_frees_the_pin() -> None:
    factory = MockFactory(pin_class=MockPWMPin)
    fb = Feedback(cfg(led_pin=4), None, pin_factory=factory)
    fb.show(State.LIVE)
    pin = fb.led.pin
    fb.close()
    fb.close()
    assert pin.state == 0
    fb.show(State.CONNECTING)  # after close: nothing, no error
    gpiozero.PWMLED(4, pin_factory=factory).close()


def test_no_led_pin_means_no_led() -> None:
    fb = Feedback(cfg(), None, pin_factory=MockFactory(pin_class=MockPWMPin))
    assert fb.led is None
    fb.show(State.LIVE)
    fb.close()


@pytest.fixture
def no_global_factory() -> Iterator[None]:
    saved = Device.pin_factory
    Device.pin_factory = None
    yield
    Device.pin_factory = saved


def test_led_without_gpio_is_skipped_with_a_warning(
    no_global_factory: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if any(name.startswith("gpiochip") for name in os.listdir("/dev")):
        pytest.skip("this machine has a GPIO chip, so the missing-LED path cannot be observed")
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "native")
    caplog.set_level(logging.WARNING, logger="sesame_pi.feedback")
    fb = Feedback(cfg(led_pin=27), None)
    assert fb.led is None
    fb.show(State.LIVE)
    assert [getattr(r, "event", "") for r in caplog.records] == ["led_unavailable"]
    fb.close()


# ---------------------------------------------------------------- earcons through play_earcon


class Player:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[bytes, int]] = []
        self.fail = fail

    def __call__(self, pcm: bytes, rate: int) -> None:
        self.calls.append((pcm, rate))
        if self.fail:
            raise OSError("output stream closed")


def test_earcon_plays_the_generated_tone_at_the_configured_volume() -> None:
    player = Player()
    fb = Feedback(cfg(earcon_volume=0.6), player, earcon_rate=16000)
    for which in Earcon:
        fb.earcon(which)
    assert [rate for _, rate in player.calls] == [16000] * len(Earcon)
    for (pcm, _), which in zip(player.calls, Earcon, strict=True):
        assert pcm == earcons.render(which, 16000, 0.6)
        peak = max(
            abs(int.from_bytes(pcm[i : i + 2], "little", signed=True))
            for i in range(0, len(pcm), 2)
        )
        assert peak == pytest.approx(0.6 * earcons.FULL_SCALE, rel=0.02)


def test_louder_setting_gives_a_louder_earcon() -> None:
    quiet, loud = Player(), Player()
    Feedback(cfg(earcon_volume=0.1), quiet).earcon(Earcon.LIVE)
    Feedback(cfg(earcon_volume=0.9), loud).earcon(Earcon.LIVE)

    def peak(pcm: bytes) -> int:
        return max(
            abs(int.from_bytes(pcm[i : i + 2], "little", signed=True))
            for i in range(0, len(pcm), 2)
        )

    assert peak(loud.calls[0][0]) == pytest.approx(9 * peak(quiet.calls[0][0]), rel=0.03)


@pytest.mark.parametrize("changes", [{"earcons": False}, {"earcon_volume": 0.0}])
def test_earcons_off_or_silent_make_no_call(changes: dict[str, Any]) -> None:
    player = Player()
    fb = Feedback(cfg(**changes), player)
    for which in Earcon:
        fb.earcon(which)
    assert player.calls == []


def test_no_player_is_fine() -> None:
    Feedback(cfg(), None).earcon(Earcon.ERROR)


def test_a_failing_player_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="sesame_pi.feedback")
    player = Player(fail=True)
    Feedback(cfg(), player).earcon(Earcon.END)
    assert len(player.calls) == 1
    assert [getattr(r, "event", "") for r in caplog.records] == ["earcon_error"]


def test_earcons_are_ready_before_the_first_one() -> None:
    earcons.render.cache_clear()
    Feedback(cfg(earcon_volume=0.42), Player())
    assert earcons.render.cache_info().currsize == len(Earcon)


class FallingBackFactory(MockFactory):  # type: ignore[misc]
    """A pin library that warns on the way, as gpiozero's does when it falls back to another."""

    def pin(self, spec: Any, **kwargs: Any) -> Any:
        import warnings

        warnings.warn(gpiozero.PinFactoryFallback("Falling back from lgpio: no chip"), stacklevel=1)
        return super().pin(spec, **kwargs)


def test_gpiozero_warnings_at_the_led_become_log_lines(
    caplog: pytest.LogCaptureFixture, recwarn: pytest.WarningsRecorder
) -> None:
    """They went to standard error as bare Python warnings, outside the JSON log (the button's
    were already log lines)."""
    caplog.set_level(logging.INFO)
    feedback = Feedback(Config(led_pin=22), None, pin_factory=FallingBackFactory())
    try:
        lines = [r for r in caplog.records if getattr(r, "event", "") == "gpio_factory_fallback"]
        assert lines and "Falling back from lgpio" in str(lines[0].__dict__["detail"])
        assert not [w for w in recwarn if issubclass(w.category, gpiozero.PinWarning)]
    finally:
        feedback.close()
