"""Whether the device is on a network (netcheck), read from routing tables written here as the
kernel writes them, and what the watcher says when that changes."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from sesame_pi import netcheck

IPV4_HEADER = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
)
IPV4_DEFAULT = "wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n"
IPV4_DOCKER = "docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
ZERO = "0" * 32
IPV6_LINK_LOCAL = f"fe80{'0' * 28} 40 {ZERO} 00 {ZERO} 00000100 00000001 00000000 00000001 wlan0\n"
IPV6_DEFAULT = f"{ZERO} 00 {ZERO} 00 fe80{'0' * 27}1 00000400 00000003 00000000 00000003 wlan0\n"
IPV6_UNREACHABLE = f"{ZERO} 00 {ZERO} 00 {ZERO} ffffffff 00000001 00000000 00200200 lo\n"


def tables(tmp_path: Path, ipv4: str | None, ipv6: str | None) -> Path:
    if ipv4 is not None:
        (tmp_path / "route").write_text(IPV4_HEADER + ipv4)
    if ipv6 is not None:
        (tmp_path / "ipv6_route").write_text(ipv6)
    return tmp_path


@pytest.mark.parametrize(
    ("ipv4", "ipv6", "on"),
    [
        (IPV4_DEFAULT + IPV4_DOCKER, IPV6_LINK_LOCAL, True),
        (IPV4_DOCKER, IPV6_LINK_LOCAL + IPV6_DEFAULT, True),  # an IPv6-only network
        (IPV4_DOCKER, IPV6_LINK_LOCAL + IPV6_UNREACHABLE, False),  # Wi-Fi up, never joined
        ("", "", False),
        (None, None, None),  # no tables to read: nothing is said
    ],
    ids=["ipv4 default", "ipv6 default", "no default", "nothing", "no tables"],
)
def test_a_default_route_is_being_on_a_network(
    tmp_path: Path, ipv4: str | None, ipv6: str | None, on: bool | None
) -> None:
    assert netcheck.on_a_network(tables(tmp_path, ipv4, ipv6)) is on


async def test_the_watcher_says_each_change_once(caplog: pytest.LogCaptureFixture) -> None:
    seen = iter([False, False, None, True, True, False])
    heard: list[bool] = []

    def check() -> bool | None:
        try:
            return next(seen)
        except StopIteration:
            raise asyncio.CancelledError from None

    with caplog.at_level(logging.INFO), pytest.raises(asyncio.CancelledError):
        await netcheck.watch(heard.append, check, every_s=0)
    assert heard == [False, True, False]
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("network_")]
    assert said == ["network_down", "network_up", "network_down"]
    down = next(r for r in caplog.records if r.getMessage() == "network_down")
    assert "Wi-Fi" in down.action  # type: ignore[attr-defined]
