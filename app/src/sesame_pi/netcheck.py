"""Whether this device is on a network at all: a default route, IPv4 or IPv6.

A Pi whose Wi-Fi never joined (a mistyped password in `network-config`) and that has no token
looked exactly like one that needs a token: the LED asked for the setup page, which no browser
could reach. The link cannot tell the two apart (with no token it tries nothing), so the app
looks at the kernel's routing tables (the container shares the host's network) every few
seconds and says which it is. Read from /proc: no packet leaves the device for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from .logs import event

PROC_NET = Path("/proc/net")
CHECK_EVERY_S = 5.0
RTF_UP = 0x1


def _ipv4_default(table: str) -> bool:
    """/proc/net/route: a route up to destination 0.0.0.0/0 on an interface other than lo."""
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8 or fields[0] == "lo":
            continue
        try:
            flags = int(fields[3], 16)
        except ValueError:
            continue
        if fields[1] == "00000000" and fields[7] == "00000000" and flags & RTF_UP:
            return True
    return False


def _ipv6_default(table: str) -> bool:
    """/proc/net/ipv6_route: ::/0 through an interface other than lo (the kernel lists an
    unreachable ::/0 on lo when there is none)."""
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 10 or fields[9] == "lo":
            continue
        try:
            flags = int(fields[8], 16)
        except ValueError:
            continue
        if fields[0] == "0" * 32 and fields[1] == "00" and flags & RTF_UP:
            return True
    return False


def on_a_network(proc_net: Path = PROC_NET) -> bool | None:
    """True with a default route, False without one; None where the tables cannot be read (not
    Linux, a sandbox): then nothing is said."""
    found: list[bool] = []
    for name, reader in (("route", _ipv4_default), ("ipv6_route", _ipv6_default)):
        try:
            found.append(reader((proc_net / name).read_text()))
        except OSError:
            continue
    if not found:
        return None
    return any(found)


async def watch(
    on_change: Callable[[bool], None],
    check: Callable[[], bool | None] = on_a_network,
    every_s: float = CHECK_EVERY_S,
) -> None:
    """Tell `on_change` each time the device joins or leaves a network (and once at start when
    it is on none). Runs until cancelled."""
    last: bool | None = True  # a device on a network at start has nothing to say
    while True:
        now = check()
        if now is not None and now != last:
            if now:
                event("network_up")
            else:
                event(
                    "network_down",
                    logging.WARNING,
                    detail="this device has no route to any network: no browser can open its "
                    "setup page and the service cannot be reached",
                    action="check the Wi-Fi settings (Raspberry Pi Imager's customisation, or "
                    "network-config on the SD card's boot partition) or plug in a cable",
                )
            on_change(now)
            last = now
        await asyncio.sleep(every_s)
