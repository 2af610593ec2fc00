"""The receive path's rules for one socket (`dispatch`), frame by frame, with no network: what
belongs to a call once its answer is read."""

from __future__ import annotations

import asyncio

from sesame_pi import protocol as p
from sesame_pi.link.dispatch import ChannelState, Heard, HungUp, dispatch
from sesame_pi.link.stats import LinkStats


async def test_the_frames_read_with_the_answer_belong_to_the_call() -> None:
    """The answer to call_connect, the agent's first words and a hang-up can come in one read,
    all dispatched before the start_call waiting for the answer runs again. The call was up
    only once it ran: the words were dropped and the hang-up lost."""
    state, stats = ChannelState("session-1"), LinkStats()
    answer = state.expect("req-1")
    answered = p.CallConnectResponse(7, 24000, "none", "req-1")
    assert dispatch(state, answered, stats, 0.0) == []
    assert answer.done() and state.call_id == 7, "the call is up as its answer is read"
    assert dispatch(state, p.Audio(b"\x01\x02" * 480), stats, 0.0) == [Heard(b"\x01\x02" * 480)]
    assert dispatch(state, p.CallDisconnect("agent_hangup", "theirs-9"), stats, 0.0) == [
        HungUp("agent_hangup")
    ]
    assert state.call_id is None and state.hung_up == "agent_hangup"
    await asyncio.sleep(0)


async def test_a_late_answer_to_a_call_given_up_does_not_raise_a_call() -> None:
    """An answer whose waiter is gone (the placement timed out or was cancelled) places no call
    on the socket: nobody would hear it."""
    state, stats = ChannelState("session-1"), LinkStats()
    answer = state.expect("req-1")
    answer.cancel()
    dispatch(state, p.CallConnectResponse(7, 24000, "none", "req-1"), stats, 0.0)
    assert state.call_id is None


async def test_an_unusable_answer_answers_only_a_call_being_placed() -> None:
    """Without a request id, an unusable call_connect_response fails the call being placed; in
    a call it is a counted bad frame, and the call's own hang-up still waits for its answer."""
    state, stats = ChannelState("session-1"), LinkStats()
    placing = state.expect("req-1")
    assert dispatch(state, p.BadAnswer("sample_rate 1", None), stats, 0.0) == []
    assert placing.result() == p.BadAnswer("sample_rate 1", None)
    state.call_id = 7
    ending = state.expect("req-2")
    dispatch(state, p.BadAnswer("without call_id", None), stats, 0.0)
    assert not ending.done(), "the call_disconnect's answer is still to come"
    assert stats.bad_frames["bad_answer"] == 2


async def test_an_unusable_answer_to_another_request_leaves_the_placement_waiting() -> None:
    state, stats = ChannelState("session-1"), LinkStats()
    placing = state.expect("req-1")
    dispatch(state, p.BadAnswer("sample_rate 1", "someone-else"), stats, 0.0)
    assert not placing.done() and stats.bad_frames["bad_answer"] == 1


async def test_answers_without_a_request_id_answer_the_request_they_can_only_be_for() -> None:
    """A good call_connect_response without its request id was counted as unexpected and
    dropped: the call the server had placed was abandoned after the whole handshake timeout.
    Without one, a call answer answers the call being placed, and a disconnect answer the
    hang-up of the call; neither answers the other."""
    state, stats = ChannelState("session-1"), LinkStats()
    placing = state.expect("req-1")
    dispatch(state, p.CallDisconnectResponse(None), stats, 0.0)
    assert not placing.done(), "a disconnect's answer is no answer to a call being placed"
    assert dispatch(state, p.CallConnectResponse(7, 24000, "none", None), stats, 0.0) == []
    assert placing.done() and state.call_id == 7
    ending = state.expect("req-2")
    dispatch(state, p.CallConnectResponse(8, 24000, "none", None), stats, 0.0)
    assert not ending.done() and state.call_id == 7, "in a call, a call answer answers nothing"
    dispatch(state, p.CallDisconnectResponse(None), stats, 0.0)
    assert ending.result() == p.CallDisconnectResponse(None)
    assert stats.bad_frames["unexpected_response"] == 2
