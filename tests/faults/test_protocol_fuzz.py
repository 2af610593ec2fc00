"""Whatever a server sends, the receive path survives it: 10,000 generated frames, bounded memory.

Frames go through `protocol.decode` and then through the link's own receive path
(`link.dispatch.decode` and `dispatch`, what a channel runs per frame, with no I/O) on a call's
state; the effects it returns are carried out here, replies recorded: everything but the network
is the real code. An oversize frame is refused on a real
socket, by the limit the app configures (`max_frame_bytes`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import logging
import os
import tracemalloc
import typing
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from time import monotonic as loop_time
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve

from faults.ledger import LEDGER
from sesame_pi import protocol as p
from sesame_pi.auth import TokenProvider
from sesame_pi.config import Config
from sesame_pi.link import Link, LinkDown
from sesame_pi.link.dispatch import ChannelState, Heard, HungUp, Reply, decode, dispatch
from support.credentials import make_token, write_token

FRAMES = int(os.environ.get("SESAME_PI_FUZZ_FRAMES", "10000"))
MAX_FRAME = Config().max_frame_bytes
# Every message the decoder may return (read from the union: a hand-kept list went stale).
SERVER_MESSAGES = typing.get_args(p.ServerMessage)
KNOWN_TYPES = [
    "audio", "ping_response", "ping", "initialize", "call_connect_response", "error",
    "call_disconnect", "call_disconnect_response", "chat", "webrtc_config", "home_state",
    "agent", "TimespanSessionEvent", "client_location_state",
]  # fmt: skip
PENDING = ("pending-a", "pending-b")

# ---------------------------------------------------------------- what a server could send

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=24)
)
# Shallow values for fields (cheap to draw); deep ones where a whole frame or content may be odd.
shallow = (
    json_leaf
    | st.lists(json_leaf, max_size=3)
    | st.dictionaries(st.text(max_size=6), json_leaf, max_size=3)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=6,
)  # fmt: skip
even_pcm = st.binary(max_size=960).map(lambda b: b[: len(b) - len(b) % 2])
request_ids = st.sampled_from(PENDING) | st.none() | st.text(max_size=6) | shallow
content = st.fixed_dictionaries(
    {},
    optional={
        "audio_data": even_pcm.map(lambda b: base64.b64encode(b).decode()) | st.text(max_size=40),
        "session_id": st.text(max_size=12) | shallow,
        "call_id": st.integers() | shallow,
        "sample_rate": st.sampled_from([8000, 16000, 24000, 48000, 0, -1, 10**9, True, 24000.5])
        | shallow,
        "code": st.integers() | shallow,
        "message": shallow,
        "close_connection": st.booleans() | shallow,
        "reason": shallow,
        "messages": st.lists(shallow, max_size=3) | shallow,
    },
)
message = st.fixed_dictionaries(
    {"type": st.sampled_from(KNOWN_TYPES) | st.text(max_size=16) | shallow},
    optional={
        "content": content | json_value,
        "request_id": request_ids,
        "call_id": st.integers() | shallow,
        "session_id": st.text(max_size=12) | shallow,
    },
)
likely = st.one_of(
    st.builds(
        lambda pcm, extra: {"type": "audio", "content": {"audio_data": base64.b64encode(pcm)
                                                         .decode(), **extra}},
        even_pcm, st.dictionaries(st.text(max_size=6), json_leaf, max_size=2),
    ),
    st.builds(
        lambda reason, rid: {"type": "call_disconnect", "request_id": rid,
                             "content": {"reason": reason}},
        shallow, request_ids,
    ),
    st.builds(
        lambda kind, rid, close: {"type": kind, "request_id": rid, "content": {
            "code": 5000, "message": "m", "close_connection": close}},
        st.sampled_from(["error", "call_connect_response", "call_disconnect_response",
                         "ping_response", "ping"]),
        request_ids, st.booleans(),
    ),
)  # fmt: skip


def _corrupt(data: bytes, cut: int, flip: int) -> bytes:
    if not data:
        return data
    at = flip % len(data)
    return data[: max(1, len(data) - cut)][:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


frames = st.one_of(
    likely.map(json.dumps),  # the shapes the service sends, with odd values
    message.map(json.dumps),  # well-formed JSON, shapes mostly right: the likely case
    message.map(lambda m: json.dumps(m).encode()),  # the same in a binary frame
    json_value.map(json.dumps),  # JSON that is not an object, or an object without a type
    st.text(max_size=200),  # not JSON
    st.binary(max_size=200),  # not UTF-8
    st.builds(_corrupt, message.map(lambda m: json.dumps(m).encode()), st.integers(0, 8),
              st.integers(0, 10_000)),  # a frame cut short or with a flipped byte
)  # fmt: skip


# ---------------------------------------------------------------- the receive path, socket aside


class RecordingSocket:
    """Stands where the socket would: records what the link sends back."""

    def __init__(self) -> None:
        self.sent = 0

    def send(self, frame: str) -> None:
        json.loads(frame)  # whatever the link answers is well-formed JSON
        self.sent += 1


class Listener:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.audio_bytes = 0

    def link_up(self) -> None:
        self.calls["link_up"] += 1

    def link_down(self, down: LinkDown) -> None:
        self.calls["link_down"] += 1

    def server_audio(self, pcm: bytes) -> None:
        assert len(pcm) % 2 == 0, "only whole 16-bit samples reach the speaker"
        self.audio_bytes += len(pcm)

    def server_hangup(self, reason: str) -> None:
        assert isinstance(reason, str)
        self.calls["hangup"] += 1

    def token_needed(self, detail: str) -> None:
        self.calls["token_needed"] += 1


class CountingHandler(logging.Handler):
    """Counts the app's events by name (and keeps nothing else)."""

    def __init__(self) -> None:
        super().__init__()
        self.events: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.events[str(getattr(record, "event", "log"))] += 1


@contextlib.contextmanager
def counted_events() -> Iterator[CountingHandler]:
    logger = logging.getLogger("sesame_pi")
    handler = CountingHandler()
    saved = logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate, logger.level = False, logging.INFO
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate, logger.level = saved


class Bench:
    """A Link with one open (recorded) connection in a live call, and a loop to feed it on."""

    def __init__(self, tmp: Path) -> None:
        token_file = write_token(tmp / "token", LEDGER.add(make_token()))
        self.cfg = Config(server="ws://127.0.0.1:9/x", token_file=token_file, log_file=None)
        self.listener = Listener()
        self.loop = asyncio.new_event_loop()
        self.link = Link(self.cfg, TokenProvider(self.cfg), self.listener)
        self.socket = RecordingSocket()
        self.conn = ChannelState("fuzz-session")
        self.fed = 0
        self.refused: Counter[str] = Counter()
        self.decoded: Counter[str] = Counter()

    def feed(self, *frames: str | bytes) -> None:
        """Run the frames through, in order, in one go on the bench's loop."""
        self.loop.run_until_complete(self._feed_all(frames))

    async def _feed_all(self, frames: tuple[str | bytes, ...]) -> None:
        for frame in frames:
            try:
                await self._feed(frame)
            except Exception as exc:
                raise AssertionError(
                    f"frame {frame!r:.300} broke the receive path: {exc!r}"
                ) from exc

    async def _feed(self, frame: str | bytes) -> None:
        self.fed += 1
        try:
            direct = p.decode(frame, MAX_FRAME)
        except p.FrameError as exc:
            assert exc.kind and len(str(exc)) < 400, "a short reason, never the frame itself"
            self.refused[exc.kind] += 1
            direct = None
        else:
            assert isinstance(direct, SERVER_MESSAGES)
            self.decoded[type(direct).__name__] += 1
        # The link's path: a call is live and two requests wait for answers, every time.
        self.conn.call_id = 4711
        self.conn.pending.clear()
        for request_id in PENDING:
            self.conn.expect(request_id)
        routed = decode(frame, self.link.stats, MAX_FRAME)
        assert routed == direct, "the link decodes exactly as the protocol module does"
        if routed is not None:
            for effect in dispatch(self.conn, routed, self.link.stats, loop_time()):
                match effect:
                    case Reply(frame=reply):
                        self.socket.send(reply)
                    case Heard(pcm=pcm):
                        self.listener.server_audio(pcm)
                    case HungUp(reason=reason):
                        self.listener.server_hangup(reason)

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    made = Bench(tmp_path)
    yield made
    made.close()


@pytest.fixture(scope="module")
def generated() -> list[str | bytes]:
    """FRAMES frames drawn by hypothesis once, replayed by the tests below.

    Drawing is the slow part (a few ms a frame); the replay is what is under test, so a failure
    names the exact frame, and the memory trace sees the app's code rather than hypothesis'.
    """
    drawn: list[str | bytes] = []

    @settings(
        max_examples=FRAMES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(frames)
    def draw(frame: str | bytes) -> None:
        drawn.append(frame)

    draw()
    return drawn


def replay(bench: Bench, drawn: list[str | bytes]) -> None:
    bench.feed(*drawn)


def test_ten_thousand_generated_frames_never_break_the_receive_path(
    bench: Bench, generated: list[str | bytes], figures: Any
) -> None:
    with counted_events() as log:
        replay(bench, generated)
    stats = bench.link.stats
    figures("frames fuzzed", bench.fed, "", f">= {FRAMES}")
    figures("frames refused (FrameError)", sum(bench.refused.values()), "")
    assert bench.fed == len(generated) >= FRAMES
    assert stats.frames_in == bench.fed, "every frame was counted once"
    assert sum(stats.bad_frames.values()) >= sum(bench.refused.values())
    # Every kind of answer and every kind of refusal was reached, not just the easy ones.
    assert set(bench.decoded) >= {"Audio", "Error", "CallDisconnect", "Unknown", "Ignored"}
    assert set(bench.refused) >= {"not_json", "not_object", "missing_type", "missing_field"}
    assert bench.listener.audio_bytes > 0 and bench.listener.calls["hangup"] > 0
    assert bench.socket.sent > 0, "server pings were answered"
    # One warning per kind of bad frame, not one per frame: the log cannot be flooded that way.
    assert log.events["bad_frame"] == len(stats.bad_frames)


def test_memory_stays_bounded_under_generated_frames(
    bench: Bench, generated: list[str | bytes], figures: Any
) -> None:
    """What the receive path still holds after the frames, traced to the app's own code."""
    app_code = [tracemalloc.Filter(True, "*/sesame_pi/*", all_frames=True)]
    warm = generated[: len(generated) // 5]
    with counted_events():
        tracemalloc.start(6)  # deep enough to reach protocol.py from json's C code
        try:
            replay(bench, warm)  # every path taken once: counters and caches exist
            gc.collect()
            before = tracemalloc.take_snapshot().filter_traces(app_code)
            replay(bench, generated)
            gc.collect()
            after = tracemalloc.take_snapshot().filter_traces(app_code)
        finally:
            tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    top = [str(stat) for stat in after.compare_to(before, "lineno")[:3]]
    figures("receive path memory kept per 10k frames", round(grown / 1024, 1), "KiB", "<= 64")
    assert grown <= 64 * 1024, f"{grown} bytes kept: {top}"


def test_memory_stays_bounded_under_ever_new_message_types(bench: Bench, figures: Any) -> None:
    """A server that names each message differently (a bug or an attack) must not grow us."""
    app_code = [tracemalloc.Filter(True, "*/sesame_pi/*", all_frames=True)]
    with counted_events():
        tracemalloc.start(6)
        try:
            bench.feed('{"type": "warm-up"}')
            gc.collect()
            before = tracemalloc.take_snapshot().filter_traces(app_code)
            bench.feed(*(json.dumps({"type": f"event_{i:06d}_named_anew"}) for i in range(FRAMES)))
            gc.collect()
            after = tracemalloc.take_snapshot().filter_traces(app_code)
        finally:
            tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    summary = len(json.dumps(bench.link.stats.as_dict()))
    figures("memory kept, 10k new type names", round(grown / 1024, 1), "KiB", "<= 64")
    figures("link stats in one log line after them", summary, "B", "<= 4096")
    assert grown <= 64 * 1024
    assert summary <= 4096


# ---------------------------------------------------------------- oversize frames, on a socket


def test_oversize_audio_is_refused_by_the_decoder() -> None:
    big = base64.b64encode(bytes(MAX_FRAME + 1024)).decode()
    with pytest.raises(p.FrameError) as info:
        p.decode(json.dumps({"type": "audio", "content": {"audio_data": big}}), MAX_FRAME)
    assert info.value.kind == "oversize"


async def refuse_one_oversize_frame(tmp_path: Path) -> tuple[list[str], Link]:
    """A server whose second frame is twice the client's limit; the link_down reasons seen."""
    limit = 65_536

    async def server(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "initialize", "session_id": "s", "content": {}}))
        await ws.send(json.dumps({"type": "chat", "content": {"padding": "x" * (limit * 2)}}))
        await ws.wait_closed()

    downs: list[str] = []

    class Watch(Listener):
        def link_down(self, down: LinkDown) -> None:
            downs.append(down.detail)

    async with serve(server, "127.0.0.1", 0, max_size=None) as srv:
        port = srv.sockets[0].getsockname()[1]
        token_file = write_token(tmp_path / "token", LEDGER.add(make_token()))
        cfg = Config(
            server=f"ws://127.0.0.1:{port}/x",
            token_file=token_file,
            log_file=None,
            max_frame_bytes=limit,
        )
        link = Link(cfg, TokenProvider(cfg), Watch())
        task = asyncio.create_task(link.run())
        try:
            for _ in range(100):
                if len(downs) >= 2:
                    break
                await asyncio.sleep(0.05)
        finally:
            await link.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return downs, link


async def test_oversize_frame_is_refused_on_the_socket(tmp_path: Path) -> None:
    downs, link = await refuse_one_oversize_frame(tmp_path)
    assert downs, "the link refused the frame by closing"
    assert "oversize" in downs[0], downs  # we closed with 1009 "message too big"
    assert link.stats.connects >= 2, "and came back for the next frame"


async def test_oversize_frame_is_named_as_such_in_link_down(tmp_path: Path) -> None:
    downs, _link = await refuse_one_oversize_frame(tmp_path)
    assert downs and downs[0] == "oversize frame refused", downs
