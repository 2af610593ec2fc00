"""The session's two wrong paths, against the stand-in and the product's own link.

A hold while the call is still connecting (the call_connect_response slower than the 2 s hold):
the call must not stay live on the server, and the next press must start on a clean socket.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sesame_pi.standin import StandinOptions
from sesame_pi.states import State
from support.session_rig import session_rig

SLOW_MS = 2600.0  # every server frame this late: the call_connect_response comes after the hold


async def test_a_hold_while_connecting_leaves_no_call_on_the_server(tmp_path: Path) -> None:
    options = StandinOptions(mode="tone", greeting_ms=0, delay_ms=SLOW_MS)
    async with session_rig(tmp_path, options) as r:
        r.session.button_pressed()
        await r.wait_state(State.CONNECTING)
        await asyncio.sleep(2.0)
        r.session.button_held()  # the person gives up before the call_connect_response
        await r.wait_state(State.IDLE)
        async with asyncio.timeout(SLOW_MS / 1000 + 4):
            while r.standin.record.live_calls:  # noqa: ASYNC110 - polls the stand-in's record
                await asyncio.sleep(0.02)
        assert r.standin.record.calls == 1

        r.session.button_pressed()  # the next press: a clean socket, and a call that goes live
        await r.wait_state(State.LIVE, timeout=SLOW_MS / 1000 * 3 + 5)
        assert r.standin.record.violations == [], r.standin.record.violations
        assert r.standin.record.calls == 2 and r.standin.record.live_calls == 1
        assert [e["state"] for e in r.events("state_changed")][-1] == "live"
