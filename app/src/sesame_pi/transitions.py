"""The session's state machine as data: every (phase, event) pair the session acts on.

    STARTING ─link up─► IDLE;  STARTING/IDLE/CALL_LIMIT ─link down─► OFFLINE ─link up─► IDLE
    IDLE/OFFLINE/STARTING/CALL_LIMIT ─press─► CONNECTING ─placed─► LIVE ─hold─► ENDING ─ended─► IDLE
      (OFFLINE if it ended in an outage: AFTER_CALL)
    CONNECTING ─hold─► ENDING (the placement is cancelled: its socket closes, no call stays up)
    CONNECTING ─call failed─► IDLE or OFFLINE (REST: whichever the link says)
    LIVE ─link down─► RECONNECTING ─link up─► (resume placed) ─placed─► LIVE
    RECONNECTING ─resume window out─► REST
    LIVE/RECONNECTING ─token needed─► RESUME_NEEDS_TOKEN ─link up (new token)─► RECONNECTING
    RESUME_NEEDS_TOKEN ─resume window out, or hold─► NEEDS_TOKEN (shown the same: no flapping)
    any quiet phase ─token needed─► NEEDS_TOKEN ─link up─► IDLE;  NEEDS_TOKEN ─link down─► OFFLINE
    LIVE ─server hangup─► IDLE;  LIVE ─length limit─► CALL_LIMIT ─press/redial─► CONNECTING
    CALL_LIMIT ─limit shown (60 s)─► REST
    any but STOPPING ─device error─► DEVICE_ERROR ─device back─► REST
    (one problem is shown at a time: while a device is gone, IDLE and OFFLINE are shown as
    DEVICE_ERROR; REST is NEEDS_TOKEN while a token is needed: see Session._resolve)
    any ─stop─► STOPPING

A pair not in `TRANSITIONS` is ignored: nothing changes and nothing is done. A short press in a
call is in the table (it logs why it was ignored: only a hold ends a call, the safeguard).
`Step.to` None keeps the phase; REST is IDLE when the link is up, OFFLINE when it is not. The
actions in `Step.does` run in order before the phase changes (so call_ended is logged before the
state_changed that follows it); the session maps each `Do` to one method.

Phases are the session's own states; each is shown as a `State` (LED, heartbeat, the log's
state_changed). They differ in one place: a lost call waiting for a new token is its own phase
(RESUME_NEEDS_TOKEN), shown as NEEDS_TOKEN, so a resume is a state and not a flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

from .states import State


class Phase(StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    OFFLINE = "offline"
    CONNECTING = "connecting"
    LIVE = "live"
    ENDING = "ending"
    RECONNECTING = "reconnecting"
    NEEDS_TOKEN = "needs_token"
    RESUME_NEEDS_TOKEN = "resume_needs_token"  # a lost call waits for a new token to resume
    DEVICE_ERROR = "device_error"
    CALL_LIMIT = "call_limit"
    STOPPING = "stopping"

    @property
    def shown(self) -> State:
        """What the LED, the heartbeat and the log call this phase."""
        if self is Phase.RESUME_NEEDS_TOKEN:
            return State.NEEDS_TOKEN
        return State(self.value)


class Event(StrEnum):
    PRESS = "press"  # a short press the setup page did not claim
    HOLD = "hold"  # the 2 s hold: end the call
    LONG_HOLD = "long_hold"  # the 5 s hold: open the setup page
    LINK_UP = "link_up"
    LINK_DOWN = "link_down"  # not routine (routine closes reconnect at once and are no event)
    PLACED = "placed"  # call_connect_response arrived and the audio started
    CALL_FAILED = "call_failed"  # refused, no answer, or the service could not be reached
    HANGUP = "hangup"  # the server ended the call
    LIMIT = "limit"  # the server ended the call at its length limit
    REDIAL = "redial"  # redial_on_limit: a new call without a press
    LIMIT_SHOWN = "limit_shown"  # the LED said "the limit ended it" long enough
    TOKEN_NEEDED = "token_needed"
    DEVICE_ERROR = "device_error"
    DEVICE_BACK = "device_back"
    RESUME_EXPIRED = "resume_expired"  # call_resume_window_s ran out
    ENDED = "ended"  # our call_disconnect was answered (or timed out) and the socket closed
    STOP = "stop"


class Do(StrEnum):
    """Side effects; the session has one method per member (`Session._do_<value>`)."""

    PLACE = "place"  # start placing a call
    RESUME = "resume"  # start placing the lost call again (call_connect with reconnect)
    END = "end"  # end the call on the server (a placement still connecting is cancelled)
    CANCEL_PLACING = "cancel_placing"
    GO_LIVE = "go_live"  # uplink running, counters, call_live
    LOSE = "lose"  # audio stopped, the resume window opens
    FINISH = "finish"  # the call's summary (call_ended), audio stopped, resume window closed
    FORGET = "forget"  # tell the link the call is over (no more haste to resume it)
    FAIL = "fail"  # call_failed logged
    LIMIT_REACHED = "limit_reached"  # call_limit_reached logged; a redial or a timer follows
    GIVE_UP = "give_up"  # call_resume_gave_up logged
    TOKEN_ALERT = "token_alert"  # token_needed logged with what to do
    DEVICE_FAILED = "device_failed"  # audio_device_error logged; the device is retried
    DROP_FOR_DEVICE = "drop_for_device"  # the call's summary, then it is ended on the server
    DEVICE_OK = "device_ok"
    SETUP = "setup"  # the setup page opens (if the press began out of a call)
    REFUSE_IN_CALL = "refuse_in_call"  # press_ignored: hold to end the call
    REFUSE_ENDING = "refuse_ending"  # press_ignored: the last call is still ending
    REFUSE_TOKEN = "refuse_token"  # press_ignored: a new token first (and the link retries)
    REFUSE_DEVICE = "refuse_device"  # press_ignored: the audio device is gone
    SOUND_START = "sound_start"  # earcons: one per transition, so none cuts another off
    SOUND_LIVE = "sound_live"
    SOUND_END = "sound_end"
    SOUND_ERROR = "sound_error"
    SOUND_LIMIT = "sound_limit"
    SOUND_READY = "sound_ready"  # when owed and landing in idle (the session decides)


REST: Final = "rest"
# After a call: IDLE, or OFFLINE while an outage the session was told of lasts. Not REST: the
# call's own socket closes as it ends (a fresh one follows at once), so "the link is down" then
# says nothing; but the link reports each outage once, and a call hung up in one showed idle for
# all of it, where the next press waited and failed.
AFTER_CALL: Final = "after_call"
Target = Phase | Literal["rest", "after_call"] | None


@dataclass(frozen=True)
class Step:
    to: Target
    does: tuple[Do, ...] = ()


P = Phase
QUIET = (P.STARTING, P.IDLE, P.OFFLINE, P.CALL_LIMIT)  # no call, nothing wrong: a press calls
IN_CALL = (P.CONNECTING, P.LIVE, P.RECONNECTING)  # a hold ends these

_PLACE = Step(P.CONNECTING, (Do.PLACE, Do.SOUND_START))
# The server ended the call: the link stops hurrying to resume it (a later outage backs off fully).
_END_BY_SERVER = Step(P.IDLE, (Do.FINISH, Do.FORGET, Do.SOUND_END))
_LIMIT = Step(P.CALL_LIMIT, (Do.LIMIT_REACHED, Do.FINISH, Do.FORGET, Do.SOUND_LIMIT))
_TOKEN = Step(P.NEEDS_TOKEN, (Do.TOKEN_ALERT, Do.SOUND_ERROR))
_DEVICE = Step(P.DEVICE_ERROR, (Do.DEVICE_FAILED, Do.SOUND_ERROR))
_DEVICE_IN_CALL = Step(P.DEVICE_ERROR, (Do.DROP_FOR_DEVICE, Do.DEVICE_FAILED, Do.SOUND_ERROR))

TRANSITIONS: dict[tuple[Phase, Event], Step] = {
    # a press: call, or say why not
    **{(p, Event.PRESS): _PLACE for p in QUIET},
    **{(p, Event.PRESS): Step(None, (Do.REFUSE_IN_CALL,)) for p in IN_CALL},
    # (ending takes up to several seconds on a dying link: a press then was lost without a word)
    (P.ENDING, Event.PRESS): Step(None, (Do.REFUSE_ENDING, Do.SOUND_ERROR)),
    (P.NEEDS_TOKEN, Event.PRESS): Step(None, (Do.REFUSE_TOKEN, Do.SOUND_ERROR)),
    (P.RESUME_NEEDS_TOKEN, Event.PRESS): Step(None, (Do.REFUSE_TOKEN, Do.SOUND_ERROR)),
    (P.DEVICE_ERROR, Event.PRESS): Step(None, (Do.REFUSE_DEVICE, Do.SOUND_ERROR)),
    (P.CALL_LIMIT, Event.REDIAL): _PLACE,
    # a hold ends the call, wherever it is
    **{(p, Event.HOLD): Step(P.ENDING, (Do.END,)) for p in IN_CALL},
    (P.RESUME_NEEDS_TOKEN, Event.HOLD): Step(P.NEEDS_TOKEN, (Do.FINISH, Do.FORGET, Do.SOUND_END)),
    **{
        (p, Event.LONG_HOLD): Step(None, (Do.SETUP,))
        for p in Phase
        if p not in (P.CONNECTING, P.LIVE)
    },
    # the link
    # (a device without an LED is otherwise silent until a press: the first time it is ready,
    # and when a sign-in made it ready, it says so)
    **{
        (p, Event.LINK_UP): Step(P.IDLE, (Do.SOUND_READY,))
        for p in (P.STARTING, P.OFFLINE, P.NEEDS_TOKEN)
    },
    (P.RECONNECTING, Event.LINK_UP): Step(None, (Do.RESUME,)),
    (P.RESUME_NEEDS_TOKEN, Event.LINK_UP): Step(P.RECONNECTING, (Do.RESUME,)),
    (P.LIVE, Event.LINK_DOWN): Step(P.RECONNECTING, (Do.LOSE,)),
    **{(p, Event.LINK_DOWN): Step(P.OFFLINE) for p in (P.STARTING, P.IDLE, P.CALL_LIMIT)},
    # the link tries only a new token while one is needed: that try met a dead network, and
    # whether the token is good is the network's to say (offline, not "needs a token")
    (P.NEEDS_TOKEN, Event.LINK_DOWN): Step(P.OFFLINE),
    # the call's own course
    (P.CONNECTING, Event.PLACED): Step(P.LIVE, (Do.GO_LIVE, Do.SOUND_LIVE)),
    (P.RECONNECTING, Event.PLACED): Step(P.LIVE, (Do.GO_LIVE, Do.SOUND_LIVE)),
    (P.CONNECTING, Event.CALL_FAILED): Step(REST, (Do.FAIL, Do.SOUND_ERROR)),
    (P.RECONNECTING, Event.CALL_FAILED): Step(REST, (Do.FAIL, Do.FINISH, Do.SOUND_ERROR)),
    **{(p, Event.HANGUP): _END_BY_SERVER for p in IN_CALL},
    **{(p, Event.LIMIT): _LIMIT for p in IN_CALL},
    # A call ended as it was being placed: the placement itself fails with the reason
    # ("the server ended the call as it began"), so the person hears one error, not an end.
    (P.CONNECTING, Event.HANGUP): Step(None),
    (P.CONNECTING, Event.LIMIT): Step(None),
    (P.CALL_LIMIT, Event.LIMIT_SHOWN): Step(REST),
    (P.ENDING, Event.ENDED): Step(AFTER_CALL, (Do.FINISH, Do.SOUND_END)),
    (P.NEEDS_TOKEN, Event.ENDED): Step(None, (Do.FINISH,)),  # the token went while ending
    (P.DEVICE_ERROR, Event.ENDED): Step(None, (Do.FINISH,)),  # the device went while ending
    (P.RECONNECTING, Event.RESUME_EXPIRED): Step(
        REST, (Do.GIVE_UP, Do.FINISH, Do.FORGET, Do.SOUND_ERROR)
    ),
    # the error was heard when the token was refused: now only that the call is over
    (P.RESUME_NEEDS_TOKEN, Event.RESUME_EXPIRED): Step(
        P.NEEDS_TOKEN, (Do.GIVE_UP, Do.FINISH, Do.FORGET, Do.SOUND_END)
    ),
    # the token
    **{(p, Event.TOKEN_NEEDED): _TOKEN for p in (*QUIET, P.ENDING, P.DEVICE_ERROR)},
    (P.CONNECTING, Event.TOKEN_NEEDED): Step(
        P.NEEDS_TOKEN, (Do.TOKEN_ALERT, Do.CANCEL_PLACING, Do.SOUND_ERROR)
    ),
    (P.LIVE, Event.TOKEN_NEEDED): Step(
        P.RESUME_NEEDS_TOKEN, (Do.TOKEN_ALERT, Do.LOSE, Do.SOUND_ERROR)
    ),
    (P.RECONNECTING, Event.TOKEN_NEEDED): Step(
        P.RESUME_NEEDS_TOKEN, (Do.TOKEN_ALERT, Do.SOUND_ERROR)
    ),
    # refused again (a new token that did not work either): the tone was heard on the way in
    # and the LED still says it; a tone at every try would beep on for an account the service
    # will not serve
    (P.NEEDS_TOKEN, Event.TOKEN_NEEDED): Step(None, (Do.TOKEN_ALERT,)),
    (P.RESUME_NEEDS_TOKEN, Event.TOKEN_NEEDED): Step(None, (Do.TOKEN_ALERT,)),
    # the audio device
    **{(p, Event.DEVICE_ERROR): _DEVICE for p in (*QUIET, P.ENDING, P.NEEDS_TOKEN)},
    **{
        (p, Event.DEVICE_ERROR): _DEVICE_IN_CALL
        for p in (P.LIVE, P.RECONNECTING, P.RESUME_NEEDS_TOKEN)
    },
    (P.CONNECTING, Event.DEVICE_ERROR): Step(
        P.DEVICE_ERROR, (Do.CANCEL_PLACING, *_DEVICE_IN_CALL.does)
    ),
    (P.DEVICE_ERROR, Event.DEVICE_BACK): Step(REST, (Do.DEVICE_OK, Do.SOUND_READY)),
    **{
        (p, Event.DEVICE_BACK): Step(None, (Do.DEVICE_OK,))
        for p in Phase
        if p is not P.DEVICE_ERROR
    },
    # stopping
    **{(p, Event.STOP): Step(P.STOPPING) for p in Phase if p is not P.STOPPING},
}
