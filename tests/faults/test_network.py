"""Network faults between the appliance and the service, in namespaces the tests create.

The app runs in one namespace, `sesame-pi standin` in another, with a router namespace between them
(see netlab.py). Each fault is real: a SIGKILLed server, the router's uplink set down, packets
dropped in the router by iptables, random loss there, a name that resolves nowhere. Every test
asserts what a person would notice: the call comes back by itself, once, and quickly enough.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from faults.figures import FIGURES
from faults.ledger import LEDGER
from faults.netlab import ROUTER_APP_SIDE, SERVER_ADDR, NetLab
from faults.processes import (
    STANDIN_PORT,
    JsonLinesProcess,
    event_time,
    in_namespace,
    relay_process,
    standin_process,
)
from sesame_pi.config import Config
from sesame_pi.standin import PATH
from support.app_process import AppProcess
from support.credentials import make_token, write_token
from support.virtual_audio import VirtualAudio

DEFAULTS = Config()
# A live call notices a dead link after this many unanswered pings (link/channel.py, _ping_loop).
PING_DEADLINE_S = DEFAULTS.ping_interval_s * (DEFAULTS.ping_misses_allowed + 1)
PARTITION_S = float(os.environ.get("SESAME_PI_PARTITION_S", "30"))
JITTER_CALL_S = 20.0


def server_url(port: int = STANDIN_PORT, host: str = SERVER_ADDR) -> str:
    return f"ws://{host}:{port}{PATH}"


class Scene:
    """One app and its stand-in(s), on either side of the lab's router."""

    def __init__(self, lab: NetLab, tmp: Path, sound: VirtualAudio, token_file: Path) -> None:
        self.lab, self.tmp, self.sound, self.token_file = lab, tmp, sound, token_file
        self.servers: list[JsonLinesProcess] = []
        self.apps: list[AppProcess] = []

    def standin(self, *options: str, port: int = STANDIN_PORT) -> JsonLinesProcess:
        wrap = NetLab.wrap(self.lab.server_ns)
        n = len(self.servers)
        server = standin_process(
            wrap, SERVER_ADDR, port, self.tmp / f"standin-{n}.jsonl", "--greeting-ms", "0", *options
        ).start()
        self.servers.append(server)
        server.wait_event("standin_listening", timeout=20)
        return server

    def app(self, url: str, **env: str) -> AppProcess:
        app = AppProcess(self.tmp, url, self.token_file, env={**self.sound.env, **env})
        in_namespace(app, NetLab.wrap(self.lab.app_ns)).start()
        self.apps.append(app)
        return app

    def live_call(self, app: AppProcess) -> dict[str, Any]:
        app.wait_state("idle", timeout=30)
        mark = app.mark()
        app.press()
        live = app.wait_event("call_live", after=mark, resumed=False)
        app.wait_event("uplink_started", after=mark)
        return live

    def close(self) -> None:
        for app in self.apps:
            app.kill()
        for server in self.servers:
            server.kill()


@pytest.fixture
def scene(lab: NetLab, tmp_path: Path, sound: VirtualAudio, token_file: Any) -> Iterator[Scene]:
    _token, path = token_file()
    made = Scene(lab, tmp_path, sound, path)
    yield made
    made.close()


def calls_after(app: AppProcess, mark: int, **fields: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in app.events()[mark:]
        if e.get("event") == "call_live" and all(e.get(k) == v for k, v in fields.items())
    ]


def hang_up(app: AppProcess) -> dict[str, Any]:
    mark = app.mark()
    app.hold(2.5)
    ended = app.wait_event("call_ended", after=mark)
    app.wait_state("idle", after=mark)
    return ended


# ---------------------------------------------------------------- the server dies and comes back


def test_server_killed_mid_call_comes_back_within_2_s(scene: Scene, figures: Any) -> None:
    server = scene.standin()
    app = scene.app(server_url())
    first = scene.live_call(app)
    time.sleep(2.0)

    mark = app.mark()
    server.kill()  # SIGKILL: no close frame, the kernel resets the socket
    app.wait_state("reconnecting", after=mark, timeout=10)
    time.sleep(3.0)  # the service is away for a while; the app keeps trying
    retries = [e for e in app.events()[mark:] if e.get("event") == "link_retry"]
    assert retries, "the app retried while the server was away"

    back = scene.standin()
    returned_at = back.wait_event("standin_listening")["_at"]
    live = app.wait_event("call_live", after=mark, timeout=15, resumed=True)
    recovery = event_time(live) - returned_at
    figures("server kill: server back -> call live", recovery, "s", "<= 2.0")

    assert recovery <= 2.0, f"the call came back {recovery:.2f} s after the server"
    assert live["call_id"] != first["call_id"], "a new call on the new server"
    assert not [e for e in app.events()[mark:] if e.get("event") == "button_pressed"]
    assert back.count("standin_call_connect") == 1
    ended = hang_up(app)
    assert ended["reason"] == "user_request"
    assert app.proc is not None and app.proc.poll() is None


# ---------------------------------------------------------------- the link dies without closing


def wait_link_loss(app: AppProcess, mark: int, since: float, figures: Any, label: str) -> float:
    """Seconds from the fault to the app's link_down; fails past the ping deadline (+1.5 s)."""
    limit = PING_DEADLINE_S + 1.5
    try:
        down = app.wait_event("link_down", after=mark, timeout=limit + 1.0)
    except TimeoutError:
        figures(f"{label} -> link_down", f">{limit + 1.0:.1f}", "s", f"<= {limit:.1f}")
        raise AssertionError(f"no link_down within {limit + 1.0:.1f} s of the fault") from None
    took = event_time(down) - since
    figures(f"{label} -> link_down", took, "s", f"<= {limit:.1f}")
    assert took <= limit, f"a dead link went unnoticed for {took:.1f} s"
    return took


def test_partition_recovers_with_exactly_one_call(scene: Scene, figures: Any) -> None:
    server = scene.standin()
    app = scene.app(server_url())
    scene.live_call(app)
    time.sleep(1.0)

    app_mark, server_mark = app.mark(), server.mark()
    cut_at = time.time()
    scene.lab.uplink(up=False)
    try:
        wait_link_loss(app, app_mark, cut_at, figures, "partition: uplink cut")
        app.wait_state("reconnecting", after=app_mark, timeout=5)
        time.sleep(max(0.0, cut_at + PARTITION_S - time.time()))
        assert server.count("standin_connection", after=server_mark) == 0
        assert not calls_after(app, app_mark), "no call while the uplink is down"
    finally:
        scene.lab.uplink(up=True)
    healed_at = time.time()

    live = app.wait_event("call_live", after=app_mark, timeout=30, resumed=True)
    recovery = event_time(live) - healed_at
    figures(f"partition {PARTITION_S:.0f} s: uplink back -> call live", recovery, "s", "<= 5.0")
    time.sleep(3.0)  # room for a duplicate to show up, if there were one

    assert len(calls_after(app, app_mark)) == 1, "exactly one call after the partition"
    assert server.count("standin_call_connect", after=server_mark) == 1, server.tail()
    assert recovery <= 5.0, f"the call came back {recovery:.2f} s after the uplink"
    assert app.wait_state("live", after=app_mark)
    hang_up(app)


def test_half_open_link_is_found_by_pings_and_the_call_returns(scene: Scene, figures: Any) -> None:
    server = scene.standin()
    app = scene.app(server_url())
    scene.live_call(app)
    time.sleep(2.0)

    app_mark, server_mark = app.mark(), server.mark()
    dropped_from = time.time()
    scene.lab.blackhole(on=True)  # nothing closes; packets simply vanish both ways
    try:
        wait_link_loss(app, app_mark, dropped_from, figures, "half-open: DROP")
        assert [e for e in app.events()[app_mark:] if e.get("event") == "link_dead"]
        app.wait_state("reconnecting", after=app_mark, timeout=5)
        time.sleep(2.0)
        assert scene.lab.dropped_packets() > 0, "the DROP rule really dropped traffic"
    finally:
        scene.lab.blackhole(on=False)
    flowing_at = time.time()

    live = app.wait_event("call_live", after=app_mark, timeout=30, resumed=True)
    recovery = event_time(live) - flowing_at
    # A connect attempt under way when the DROP ends retransmits its SYN (1, 2, 4 s apart); with
    # the backoff capped at 1.5 s while a call waits, the worst case stays near 5 s.
    figures("half-open: traffic flows -> call live", recovery, "s", "<= 6.0")
    time.sleep(2.0)
    assert len(calls_after(app, app_mark)) == 1
    assert server.count("standin_call_connect", after=server_mark) == 1
    assert recovery <= 6.0
    hang_up(app)


# ---------------------------------------------------------------- loss and jitter


@pytest.fixture(scope="module")
def jittery_call(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One 20 s call through 5 % loss and 200 +/- 50 ms delay, both ways, shared by two tests."""
    tmp = tmp_path_factory.mktemp("jitter")
    name = "test_call_goes_on_through_loss_and_jitter"
    token = LEDGER.add(make_token())
    with NetLab() as lab, VirtualAudio(tmp / "audio") as sound:
        scene = Scene(lab, tmp, sound, write_token(tmp / "token", token))
        try:
            yield run_jittery_call(scene, lambda *a: FIGURES.record(name, *a))
        finally:
            scene.close()


def run_jittery_call(scene: Scene, figures: Any) -> dict[str, Any]:
    scene.standin("--mode", "tone")  # the agent talks in real time, 40 ms chunks
    relay = None
    if scene.lab.netem(200, 50, 5):
        url = server_url()
        figures("jitter: emulation", "tc netem")
    else:  # this kernel has no netem: loss in the router's kernel, delay in a relay
        scene.lab.random_loss(0.05)
        relay = relay_process(
            NetLab.wrap(scene.lab.server_ns),
            (SERVER_ADDR, STANDIN_PORT + 1),
            (SERVER_ADDR, STANDIN_PORT),
            200,
            50,
            scene.tmp / "relay.jsonl",
        ).start()
        relay.wait_event("relay_listening")
        scene.servers.append(relay)
        url = server_url(STANDIN_PORT + 1)
        figures("jitter: emulation", "iptables+relay")
    app = scene.app(url)
    live = scene.live_call(app)
    mark = app.mark()
    time.sleep(JITTER_CALL_S)
    during = app.events()[mark:]
    ended = hang_up(app)
    stats: dict[str, Any] = {}
    if relay is not None:
        relay.stop()
        stats = relay.wait_event("relay_stats", timeout=5)
        figures("jitter: relay delay mean", stats["delay_ms_mean"], "ms")
    lost = scene.lab.dropped_packets()
    figures("jitter: packets lost in the router", lost)
    return {"live": live, "during": during, "ended": ended, "dropped": lost, "relay": stats}


def test_call_goes_on_through_loss_and_jitter(jittery_call: dict[str, Any], figures: Any) -> None:
    ended, during = jittery_call["ended"], jittery_call["during"]
    audio = ended["audio"]
    for key in ("underruns", "overruns", "bytes_played", "frames_captured", "lateness_target_ms"):
        figures(f"jitter: {key}", audio.get(key, 0), "")
    names = [e.get("event") for e in during]
    assert "link_down" not in names and "call_ended" not in names, names
    assert jittery_call["dropped"] > 0, "loss really happened"
    relay = jittery_call["relay"]
    assert not relay or 150 <= relay["delay_ms_mean"] <= 400, relay
    assert ended["reason"] == "user_request" and ended["duration_s"] >= JITTER_CALL_S
    assert audio["frames_captured"] >= JITTER_CALL_S * 1000 / 20 * 0.9
    # The agent kept being heard: at least half of the call's length came out of the speaker...
    assert audio["bytes_played"] >= JITTER_CALL_S * 24000 * 2 * 0.5
    # ...and the jitter reached the app: it measured the frames' lateness (its 95th percentile)
    # well above a clean link's 5-10 ms. Whether the buffer also ran dry over it is chance (0 to 3
    # underruns in 20 s on this link), so the underruns are a figure above, not a condition.
    assert audio["lateness_target_ms"] >= 30, audio


def test_call_summary_shows_the_prebuffer_grew(jittery_call: dict[str, Any]) -> None:
    """It grows 20 ms an underrun and gives 10 ms back after each 10 s of calm, so by the end of
    the call it may be back where it started: the summary keeps how far it went. A call with no
    underrun never needed to grow it, and did not."""
    audio = jittery_call["ended"]["audio"]
    if audio["underruns"]:
        assert audio["prebuffer_peak_ms"] > Config().prebuffer_ms, audio
    else:
        assert audio["prebuffer_peak_ms"] == Config().prebuffer_ms, audio


# ---------------------------------------------------------------- a name that resolves nowhere


@pytest.fixture(scope="module")
def dns_outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The app pointed at a name that resolves nowhere, for 12 s, then a press; what it logged."""
    tmp = tmp_path_factory.mktemp("dns")
    token = LEDGER.add(make_token())
    with NetLab() as lab, VirtualAudio(tmp / "audio") as sound:
        # The app's resolver asks the router, where nothing answers DNS: every lookup fails at
        # once, as with a dead DNS server; and .invalid would never resolve anyway (RFC 6761).
        lab.use_nameserver(lab.app_ns, ROUTER_APP_SIDE)
        scene = Scene(lab, tmp, sound, write_token(tmp / "token", token))
        try:
            app = scene.app(f"ws://sesame.invalid:{STANDIN_PORT}{PATH}")
            time.sleep(12.0)
            before_press = app.events()
            alive = app.proc is not None and app.proc.poll() is None
            mark = app.mark()
            app.press()  # a person tries anyway
            failed = app.wait_event("call_failed", after=mark, timeout=20)
            offline = app.wait_state("offline", after=mark, timeout=5)
            yield {
                "before_press": before_press,
                "alive": alive,
                "failed": failed,
                "offline": offline,
                "alive_after": app.proc is not None and app.proc.poll() is None,
            }
        finally:
            scene.close()


def test_dns_failure_keeps_retrying_with_backoff_and_stays_up(
    dns_outage: dict[str, Any], figures: Any
) -> None:
    events = dns_outage["before_press"]
    assert dns_outage["alive"] and dns_outage["alive_after"], "the app stays up"
    retries = [e for e in events if e.get("event") == "link_retry"]
    assert len(retries) >= 4, retries
    reasons = [e["reason"] for e in retries]
    assert all("gaierror" in r or "name resolution" in r for r in reasons), reasons
    waits = [e["wait_s"] for e in retries]
    figures("dns: retries in 12 s", len(retries), "")
    figures("dns: backoff first/last", f"{waits[0]}/{waits[-1]}", "s")
    assert waits[-1] >= 4 * waits[0], f"the backoff grows: {waits}"
    assert not [e for e in events if e.get("event") == "link_up"]
    # A press is answered plainly, not left hanging.
    assert "cannot be reached" in dns_outage["failed"]["reason"]
    assert dns_outage["offline"]


def test_dns_failure_from_boot_shows_offline_without_a_press(dns_outage: dict[str, Any]) -> None:
    states = [e["state"] for e in dns_outage["before_press"] if e.get("event") == "state_changed"]
    assert "offline" in states, states
