"""Who may use the setup page, and when it is served: pure rules with an injected clock.

Pairing ties a browser to physical presence. A browser asks to pair and is shown a short code;
after the owner's 5 s hold, the next press of the device's button (within PENDING_S) confirms
that one pending request; the browser then sends the code back with the request's CSRF token and
receives a random cookie. The code proves nothing (the asking browser shows it and sends it back):
the hold is what says the owner means to pair. If two browsers wait at the moment of the press,
neither is confirmed (someone else on the network could be racing the owner), and both must start
again. A code is good once: sent again, it is refused as replayed. Each pairing carries its own
CSRF token for every form it posts, and is forgotten once unused for PAIRED_UNUSED_S.

Rate limits are token buckets per client address. The setup window says when the page listens
at all: "always", "off", or "auto" (while a token is needed, and for HOLD_OPEN_S after the
long hold or after the token works again, so the owner sees the result of a login). It also
says when a press may confirm a pairing at all (`pairing_armed`): only after the long hold, until
one pairing is made, a press finds none waiting, a request lapses unfinished, a paired browser
looks at the page, or PAIRING_ARMED_S pass; so also while the device has no working token.
Otherwise the short press is a person's way to start a call (or, with no token, to try one, or
to answer the device's beeps), and a request someone else on the network keeps open would take
that press as its confirmation: the stranger, paired, could hand the device their own account,
and the household's calls would then be theirs to read.

Nothing here does I/O: the web layer (setup_page) moves requests in and answers out.
"""

from __future__ import annotations

import collections
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from .config import SETUP_MODES

Clock = Callable[[], float]

CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read aloud or typed
CODE_LENGTH = 6
PENDING_S = 60.0  # how long a shown code waits for the button
MAX_PENDING = 4
MAX_WRONG_CODES = 3  # then the pending request is dropped
MAX_PAIRED = 8  # oldest-used pairing is forgotten beyond this
USED_CODES_KEPT = 64
HOLD_OPEN_S = 15 * 60.0
# How long after the 5 s hold a press may confirm a pairing (the page stays open HOLD_OPEN_S):
# time for the owner to open the page and ask, and no more. A quarter of an hour let a request
# someone opened meanwhile take the owner's next press, meant for a call, as its confirmation.
PAIRING_ARMED_S = 3 * 60.0
# A pairing unused this long is forgotten: a browser left paired (a guest's phone, a shared
# laptop) does not keep the device's account in its hands until the next restart. An hour, not
# the window's 15 minutes: an owner fetching the auth record from the Sesame web app between two
# requests of the page lost the pasted record and had to walk back for another hold.
PAIRED_UNUSED_S = 60 * 60.0


def new_secret() -> str:
    """A cookie value or CSRF token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def new_code() -> str:
    """A pairing code: CODE_LENGTH characters from CODE_ALPHABET."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass
class Pending:
    """A browser waiting for the button. `handle` is its short-lived cookie."""

    handle: str = field(repr=False)
    code: str
    csrf: str = field(repr=False)
    created: float
    confirmed: bool = False
    wrong_codes: int = 0


@dataclass
class Paired:
    """A paired browser: `cookie` is its session cookie, `csrf` goes in each of its forms."""

    cookie: str = field(repr=False)
    csrf: str = field(repr=False)
    created: float
    last_seen: float


class Refusal(StrEnum):
    """Why finishing a pairing was refused; the web layer words them."""

    UNKNOWN = "unknown"  # no such pending request (expired, cancelled, never made)
    REPLAYED = "replayed"  # this code was used already
    WRONG_CODE = "wrong_code"
    CSRF = "csrf"
    EXPIRED = "expired"
    NOT_PRESSED = "not_pressed"  # keep waiting: the button has not been pressed yet
    BUSY = "busy"  # MAX_PENDING requests wait already: none is pushed out for a new one
    CONTESTED = "contested"  # another request came while this confirmed one was unfinished


class PairingRefused(Exception):
    def __init__(self, reason: Refusal) -> None:
        super().__init__(reason.value)
        self.reason = reason


class Press(StrEnum):
    """What a button press meant to pairing."""

    NOT_MINE = "not_mine"  # nobody waits: the press is the session's (e.g. a call)
    CONFIRMED = "confirmed"
    AMBIGUOUS = "ambiguous"  # several browsers waited: none is confirmed
    LAPSED = "lapsed"  # a request ran out just before it: none is confirmed


class Pairings:
    """Pending requests and paired browsers, in memory (a restart asks to pair again)."""

    def __init__(
        self,
        clock: Clock,
        pending_s: float = PENDING_S,
        max_paired: int = MAX_PAIRED,
        code: Callable[[], str] | None = None,
        unused_s: float = PAIRED_UNUSED_S,
        on_lapse: Callable[[], None] | None = None,
    ) -> None:
        self._clock = clock
        # Told when a request lapses unfinished (the page disarms pairing: the owner's request
        # gone, a stranger's newer one would be the only one waiting at the owner's next press).
        self._on_lapse = on_lapse
        self._pending_s = pending_s
        self._max_paired = max_paired
        self._unused_s = unused_s
        self._code = code or new_code
        self._pending: dict[str, Pending] = {}
        self._paired: collections.OrderedDict[str, Paired] = collections.OrderedDict()
        self._used: collections.deque[str] = collections.deque(maxlen=USED_CODES_KEPT)

    # ------------------------------------------------------------ pending requests

    def _prune(self) -> bool:
        """Drop the requests that ran out; True if any did."""
        now = self._clock()
        lapsed = [h for h, p in self._pending.items() if now - p.created > self._pending_s]
        for handle in lapsed:
            del self._pending[handle]
        if lapsed:
            self._lapsed()
        return bool(lapsed)

    def _lapsed(self) -> None:
        if self._on_lapse is not None:
            self._on_lapse()

    def begin(self) -> Pending:
        """A new pending request with a fresh code; PairingRefused(BUSY) while MAX_PENDING wait.

        A full table refuses rather than dropping its oldest request: someone else on the
        network could otherwise push the owner's request out with a few of their own, spoil
        those with wrong codes, and be the one request left when the owner presses. Refused, the
        owner waits for a place as long as someone keeps taking each one that frees: no worse
        than anyone on the network keeping a second request open (every press is ambiguous
        then), and it pairs nobody."""
        self._prune()
        if len(self._pending) >= MAX_PENDING:
            raise PairingRefused(Refusal.BUSY)
        code = self._code()
        while code in self._used or any(p.code == code for p in self._pending.values()):
            code = self._code()
        pending = Pending(new_secret(), code, new_secret(), self._clock())
        self._pending[pending.handle] = pending
        return pending

    def pending(self, handle: str | None) -> Pending | None:
        """The live pending request behind a browser's pairing cookie."""
        self._prune()
        return self._pending.get(handle) if handle else None

    def seconds_left(self, pending: Pending) -> float:
        return max(0.0, pending.created + self._pending_s - self._clock())

    def seconds_until_room(self) -> float:
        """How long until the oldest waiting request expires (0 with room for one now)."""
        self._prune()
        if len(self._pending) < MAX_PENDING:
            return 0.0
        return min(self.seconds_left(pending) for pending in self._pending.values())

    @property
    def waiting(self) -> int:
        self._prune()
        return len(self._pending)

    def press(self) -> Press:
        """The button was pressed: confirm the one waiting request, if there is exactly one.

        A request confirmed but not yet finished still counts as waiting: a second press with
        another request open (the owner pressing again while someone else asked meanwhile)
        is as ambiguous as two open at once, and drops them all. So does a request that ran
        out just now: the owner's, say, with a stranger's asked since the only one left."""
        if self._prune():
            self._pending.clear()
            return Press.LAPSED
        if not self._pending:
            return Press.NOT_MINE
        open_requests = [p for p in self._pending.values() if not p.confirmed]
        if len(open_requests) > 1 or (open_requests and len(self._pending) > 1):
            self._pending.clear()
            return Press.AMBIGUOUS
        for pending in open_requests:
            pending.confirmed = True
        return Press.CONFIRMED  # a second press for an already confirmed request is absorbed too

    def finish(self, handle: str | None, code: str, csrf: str) -> Paired:
        """Turn a confirmed pending request into a pairing, or raise PairingRefused."""
        code = code.strip().upper().replace("-", "").replace(" ", "")
        now = self._clock()
        pending = self._pending.get(handle) if handle else None
        if pending is None:
            used = any(_same(code, old) for old in self._used)
            raise PairingRefused(Refusal.REPLAYED if used else Refusal.UNKNOWN)
        if not _same(csrf, pending.csrf):
            raise PairingRefused(Refusal.CSRF)
        if now - pending.created > self._pending_s:
            del self._pending[pending.handle]
            self._lapsed()
            raise PairingRefused(Refusal.EXPIRED)
        if not _same(code, pending.code):
            pending.wrong_codes += 1
            if pending.wrong_codes >= MAX_WRONG_CODES:
                del self._pending[pending.handle]
            raise PairingRefused(Refusal.WRONG_CODE)
        if not pending.confirmed:
            raise PairingRefused(Refusal.NOT_PRESSED)
        others = [p for h, p in self._pending.items() if h != pending.handle]
        if any(now - p.created <= self._pending_s for p in others):
            # Someone asked between the owner's press and the owner's code: the press may have
            # been meant for either, and the stranger's request would be the one waiting at the
            # owner's next press. Neither is paired; both start again.
            self._pending.clear()
            raise PairingRefused(Refusal.CONTESTED)
        del self._pending[pending.handle]
        self._used.append(pending.code)
        paired = Paired(new_secret(), new_secret(), now, now)
        self._paired[paired.cookie] = paired
        while len(self._paired) > self._max_paired:
            self._paired.popitem(last=False)
        return paired

    # ------------------------------------------------------------ paired browsers

    def _forget_unused(self) -> None:
        now = self._clock()
        for cookie, paired in list(self._paired.items()):
            if now - paired.last_seen > self._unused_s:
                del self._paired[cookie]

    def paired(self, cookie: str | None) -> Paired | None:
        """The pairing behind a session cookie (marks it used), or None: also once it went
        unused for longer than unused_s, when it is forgotten (pair again after the hold)."""
        self._forget_unused()
        if not cookie:
            return None
        found = self._paired.get(cookie)
        if found is None:
            return None
        found.last_seen = self._clock()
        self._paired.move_to_end(cookie)
        return found

    @staticmethod
    def csrf_ok(paired: Paired, token: str | None) -> bool:
        return bool(token) and _same(token or "", paired.csrf)

    def forget(self, cookie: str) -> None:
        self._paired.pop(cookie, None)

    @property
    def count(self) -> int:
        self._forget_unused()
        return len(self._paired)


class RateLimiter:
    """A token bucket per client: `burst` requests at once, `per_s` more each second."""

    def __init__(self, clock: Clock, per_s: float, burst: int, max_clients: int = 256) -> None:
        self._clock = clock
        self._per_s = per_s
        self._burst = float(burst)
        self._max_clients = max_clients
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def allow(self, client: str) -> bool:
        now = self._clock()
        tokens, last = self._buckets.get(client, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._per_s)
        allowed = tokens >= 1.0
        self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
        self._buckets.move_to_end(client)
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        return allowed

    def retry_after_s(self, client: str) -> float:
        tokens, _last = self._buckets.get(client, (self._burst, 0.0))
        return max(0.0, (1.0 - tokens) / self._per_s)


class SetupWindow:
    """When the page listens: `always`, `off`, or `auto` (token needed, or a window is open)."""

    def __init__(self, mode: str, clock: Clock, hold_open_s: float = HOLD_OPEN_S) -> None:
        if mode not in SETUP_MODES:
            raise ValueError(f"setup_page {mode!r} is not one of auto, always, off")
        self.mode = mode
        self._clock = clock
        self._hold_open_s = hold_open_s
        self._open_until = 0.0
        self._pairing_until = 0.0
        self._token_needed = False

    def open_for_a_while(self, *, for_pairing: bool = False) -> None:
        """Keep serving for hold_open_s from now: after a login, or (for_pairing) the long hold,
        the owner's sign that the next press, within PAIRING_ARMED_S, is for the page."""
        now = self._clock()
        self._open_until = max(self._open_until, now + self._hold_open_s)
        if for_pairing:
            self._pairing_until = now + min(PAIRING_ARMED_S, self._hold_open_s)

    @property
    def pairing_armed(self) -> bool:
        """Whether a press out of a call may confirm a pairing: only after the long hold, and
        so also while no working token. A press then is still a person's (to try a call, or at
        the device's beeps), not a sign that they mean to pair whoever waits on the network."""
        return self._clock() < self._pairing_until

    def disarm_pairing(self) -> None:
        """Presses are the session's again until the next hold: a press found no pairing to
        confirm, a pairing finished (one hold, one pairing: otherwise the owner's next press,
        for a call, would confirm whatever request someone else opened meanwhile), a request
        lapsed unfinished, or a paired browser looked at the page (the hold was to see it)."""
        self._pairing_until = 0.0

    def token_needed(self, needed: bool) -> None:
        """Tell the window whether the device lacks a working token right now."""
        if self._token_needed and not needed:
            self.open_for_a_while()  # the token works again: let the owner see it on the page
        self._token_needed = needed

    def open_s_left(self) -> float:
        return max(0.0, self._open_until - self._clock())

    def should_serve(self) -> bool:
        if self.mode == "always":
            return True
        if self.mode == "off":
            return False
        return self._token_needed or self._clock() < self._open_until
