"""The setup page's pure rules with a hand-moved clock: pairing, CSRF, rate limits, the window."""

from __future__ import annotations

import pytest

from sesame_pi.pairing import (
    HOLD_OPEN_S,
    MAX_PENDING,
    MAX_WRONG_CODES,
    PAIRED_UNUSED_S,
    PAIRING_ARMED_S,
    PENDING_S,
    PairingRefused,
    Pairings,
    Press,
    RateLimiter,
    Refusal,
    SetupWindow,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_code_expires_after_a_minute_even_when_pressed() -> None:
    clock = Clock()
    book = Pairings(clock)
    pending = book.begin()
    assert book.press() is Press.CONFIRMED
    clock.now += 61
    with pytest.raises(PairingRefused) as refused:
        book.finish(pending.handle, pending.code, pending.csrf)
    assert refused.value.reason is Refusal.EXPIRED
    assert book.press() is Press.NOT_MINE, "nothing waits: the press is the session's"


def test_csrf_of_the_request_is_required_and_codes_are_single_use() -> None:
    clock = Clock()
    book = Pairings(clock)
    pending = book.begin()
    book.press()
    with pytest.raises(PairingRefused) as refused:
        book.finish(pending.handle, pending.code, "")
    assert refused.value.reason is Refusal.CSRF
    paired = book.finish(pending.handle, pending.code.lower(), pending.csrf)
    assert book.paired(paired.cookie) is paired
    assert Pairings.csrf_ok(paired, paired.csrf) and not Pairings.csrf_ok(paired, None)
    with pytest.raises(PairingRefused) as refused:
        book.finish("another-handle", pending.code, pending.csrf)
    assert refused.value.reason is Refusal.REPLAYED


def test_paired_browsers_are_bounded_oldest_used_first_out() -> None:
    clock = Clock()
    book = Pairings(clock, max_paired=2)
    cookies = []
    for _ in range(3):
        pending = book.begin()
        book.press()
        cookies.append(book.finish(pending.handle, pending.code, pending.csrf).cookie)
        clock.now += 1
    assert book.count == 2 and book.paired(cookies[0]) is None
    assert book.paired(cookies[2]) is not None


def test_rate_limiter_refills_at_its_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(clock, per_s=0.5, burst=3)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b"), "each client has its own bucket"
    clock.now += 2.0
    assert limiter.allow("a") and not limiter.allow("a")


def test_auto_window_follows_the_token_and_the_hold() -> None:
    clock = Clock()
    window = SetupWindow("auto", clock)
    assert not window.should_serve()
    window.token_needed(True)
    assert window.should_serve()
    window.token_needed(False)  # the token works again: stay up 15 minutes
    clock.now += 14 * 60
    assert window.should_serve()
    clock.now += 2 * 60
    assert not window.should_serve()
    window.open_for_a_while()
    assert window.should_serve() and window.open_s_left() == 900
    assert SetupWindow("always", clock).should_serve()
    off = SetupWindow("off", clock)
    off.token_needed(True)
    assert not off.should_serve()


def test_a_second_press_with_a_new_request_beside_a_confirmed_one_pairs_neither() -> None:
    """The owner's request is confirmed but not finished; someone else opens one and the owner
    presses again (nothing seemed to happen): that press must not confirm the stranger's."""
    clock = Clock()
    pairings = Pairings(clock)
    owner = pairings.begin()
    assert pairings.press() is Press.CONFIRMED
    stranger = pairings.begin()
    assert pairings.press() is Press.AMBIGUOUS
    for pending in (owner, stranger):
        with pytest.raises(PairingRefused):
            pairings.finish(pending.handle, pending.code, pending.csrf)


def test_a_request_made_before_a_confirmed_one_finishes_spoils_both() -> None:
    """The press confirmed the owner's request; a stranger asks before the owner sends the code.
    Finishing the owner's would leave the stranger's waiting for the next press: neither pairs."""
    clock = Clock()
    pairings = Pairings(clock)
    owner = pairings.begin()
    assert pairings.press() is Press.CONFIRMED
    stranger = pairings.begin()
    with pytest.raises(PairingRefused) as refused:
        pairings.finish(owner.handle, owner.code, owner.csrf)
    assert refused.value.reason is Refusal.CONTESTED
    assert pairings.waiting == 0 and pairings.count == 0
    assert pairings.press() is Press.NOT_MINE, "the stranger's request is gone too"
    with pytest.raises(PairingRefused):
        pairings.finish(stranger.handle, stranger.code, stranger.csrf)


def test_an_expired_request_beside_a_confirmed_one_does_not_spoil_it() -> None:
    clock = Clock()
    pairings = Pairings(clock)
    pairings.begin()
    clock.now += PENDING_S + 1
    owner = pairings.begin()
    assert pairings.press() is Press.CONFIRMED
    assert pairings.finish(owner.handle, owner.code, owner.csrf).cookie


def test_presses_pair_only_after_the_long_hold() -> None:
    clock = Clock()
    window = SetupWindow("always", clock)
    assert not window.pairing_armed, "with a working token a press is a call"
    window.open_for_a_while()  # a login keeps the page up, but presses stay calls
    assert not window.pairing_armed
    window.open_for_a_while(for_pairing=True)  # the long hold
    assert window.pairing_armed
    clock.now += 60
    assert window.pairing_armed
    window.disarm_pairing()
    assert not window.pairing_armed
    window.open_for_a_while(for_pairing=True)
    clock.now += PAIRING_ARMED_S + 1
    assert not window.pairing_armed, "the hold's sign lasts minutes, not the whole window"
    assert window.should_serve() and PAIRING_ARMED_S < HOLD_OPEN_S, "the page stays open"
    window.token_needed(True)
    assert not window.pairing_armed, "without a token a press is still a person's, not a sign"


def test_a_press_while_a_token_is_needed_confirms_nothing_without_the_hold() -> None:
    """The device needs a token and beeps; someone on the network keeps one pairing request open,
    renewing it every PENDING_S. A press from the household (to try a call, or at the beeps) is
    no sign that anyone means to pair: it used to confirm the stranger's request, and the stranger
    could then hand the device their own account (and so receive the household's calls)."""
    clock = Clock()
    window, pairings = SetupWindow("auto", clock), Pairings(clock)
    window.token_needed(True)
    assert window.should_serve(), "the page is open by itself while a token is needed"
    for _ in range(30):  # half an hour of the stranger's renewed requests
        stranger = pairings.begin()
        clock.now += PENDING_S / 2  # a press at any moment in between
        assert not window.pairing_armed, "the press is the session's: the request stays open"
        with pytest.raises(PairingRefused) as refused:
            pairings.finish(stranger.handle, stranger.code, stranger.csrf)
        assert refused.value.reason is Refusal.NOT_PRESSED
        clock.now += PENDING_S / 2 + 1
    assert pairings.count == 0


def test_the_hold_then_a_press_pairs_while_a_token_is_needed_once() -> None:
    """Without a token the owner pairs as at any other time: the 5 s hold, then one press. The
    hold is good for that one pairing: the next press (at the device's beeps, say) confirms
    nobody, whoever asked meanwhile."""
    clock = Clock()
    window, pairings = SetupWindow("auto", clock), Pairings(clock)
    window.token_needed(True)
    window.open_for_a_while(for_pairing=True)  # the owner's 5 s hold
    clock.now += 3
    owner = pairings.begin()
    clock.now += 10
    assert window.pairing_armed and pairings.press() is Press.CONFIRMED
    assert pairings.finish(owner.handle, owner.code, owner.csrf).cookie
    window.disarm_pairing()  # as the page does once a pairing is made
    pairings.begin()  # someone else asks
    assert not window.pairing_armed, "one hold, one pairing, with a token or without"


def test_a_pairing_unused_for_an_hour_is_forgotten() -> None:
    """A browser left paired (a guest's phone, a shared laptop) held the device until a restart:
    the pairing's last use was kept and never looked at. Each use gives it another
    PAIRED_UNUSED_S (longer than the setup window: an owner fetching the auth record elsewhere
    must not lose what they paste)."""
    assert PAIRED_UNUSED_S > HOLD_OPEN_S
    clock = Clock()
    pairings = Pairings(clock)
    pending = pairings.begin()
    pairings.press()
    paired = pairings.finish(pending.handle, pending.code, pending.csrf)
    for _ in range(4):  # used a minute before it would be forgotten, four times over: kept
        clock.now += PAIRED_UNUSED_S - 60
        assert pairings.paired(paired.cookie) is paired
    clock.now += PAIRED_UNUSED_S + 1
    assert pairings.count == 0, "forgotten, and no longer counted as paired"
    assert pairings.paired(paired.cookie) is None
    clock.now += 1
    assert pairings.paired(paired.cookie) is None, "for good: a later use does not bring it back"


def test_a_full_table_refuses_a_new_request_and_never_pushes_one_out() -> None:
    """Someone on the network pushed the owner's request out with requests of their own, spoilt
    all but one with wrong codes, and the owner's press confirmed that one: the stranger was
    paired. A full table now refuses the newcomer; the owner's request stays, so the press is
    ambiguous and pairs nobody."""
    clock = Clock()
    book = Pairings(clock)
    owner = book.begin()
    clock.now += 1
    theirs = [book.begin() for _ in range(MAX_PENDING - 1)]
    with pytest.raises(PairingRefused) as refused:
        book.begin()
    assert refused.value.reason is Refusal.BUSY
    assert book.seconds_until_room() == pytest.approx(PENDING_S - 1)
    for spoilt in theirs[1:]:
        for _ in range(MAX_WRONG_CODES):
            with pytest.raises(PairingRefused):
                book.finish(spoilt.handle, "WRONG2", spoilt.csrf)
    assert book.waiting == 2, "the owner's request is still there"
    assert book.press() is Press.AMBIGUOUS
    for pending in (owner, theirs[0]):
        with pytest.raises(PairingRefused):
            book.finish(pending.handle, pending.code, pending.csrf)
    assert book.seconds_until_room() == 0.0


def test_a_request_that_lapses_after_the_hold_leaves_presses_to_calls() -> None:
    """The owner holds and asks, but takes more than a minute to press: their request lapses.
    A stranger's request opened after that was then the only one waiting, and the owner's press
    (for their own, they thought) confirmed the stranger's. A lapse disarms pairing: the owner
    holds again."""
    clock = Clock()
    window = SetupWindow("always", clock)
    pairings = Pairings(clock, on_lapse=window.disarm_pairing)
    window.open_for_a_while(for_pairing=True)
    pairings.begin()  # the owner's
    clock.now += PENDING_S + 1
    stranger = pairings.begin()  # (the owner's lapses as this one is made)
    assert not window.pairing_armed
    with pytest.raises(PairingRefused) as refused:
        pairings.finish(stranger.handle, stranger.code, stranger.csrf)
    assert refused.value.reason is Refusal.NOT_PRESSED
    window.open_for_a_while(for_pairing=True)  # the owner's next hold arms it again
    assert window.pairing_armed


def test_a_request_refused_as_expired_is_a_lapse_too() -> None:
    clock = Clock()
    lapses: list[None] = []
    pairings = Pairings(clock, on_lapse=lambda: lapses.append(None))
    owner = pairings.begin()
    assert pairings.press() is Press.CONFIRMED
    clock.now += PENDING_S + 1
    with pytest.raises(PairingRefused) as refused:
        pairings.finish(owner.handle, owner.code, owner.csrf)
    assert refused.value.reason is Refusal.EXPIRED and len(lapses) == 1


def test_a_request_that_lapses_at_the_press_leaves_the_strangers_unconfirmed() -> None:
    """The owner asks, a stranger asks half a minute later, the owner's request runs out, and
    the owner presses: nothing had looked at the table since, so the press itself found the
    lapse and then confirmed the one left, the stranger's."""
    clock = Clock()
    window = SetupWindow("always", clock)
    pairings = Pairings(clock, on_lapse=window.disarm_pairing)
    window.open_for_a_while(for_pairing=True)
    pairings.begin()  # the owner's
    clock.now += 35
    stranger = pairings.begin()
    clock.now += PENDING_S - 30  # the owner's lapses; the stranger's still waits
    assert pairings.press() is Press.LAPSED
    assert not window.pairing_armed
    with pytest.raises(PairingRefused) as refused:
        pairings.finish(stranger.handle, stranger.code, stranger.csrf)
    assert refused.value.reason is Refusal.UNKNOWN
