"""A user-space stand-in for `tc qdisc ... netem delay D J`, for kernels built without netem.

It joins two network namespaces with a pair of TUN devices and carries every IP packet across
after its own random delay, uniform in [D - J, D + J] and drawn independently per packet and per
direction, as netem does without a distribution table; packets may overtake each other as they
can under netem. TCP above sees real delay, jitter and reordering.

    netjitter.py NS_A TUN_A NS_B TUN_B --delay-ms 20 --jitter-ms 10

The TUN devices must exist (persistent, `ip tuntap add`) in their namespaces; this attaches to them.
Needs root (setns). Runs until SIGTERM; prints one JSON line with its counts on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import heapq
import json
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
MTU = 65536


def enter_netns(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}")
    finally:
        os.close(fd)


def attach_tun(namespace: str, device: str) -> int:
    """Open the TUN device `device` that lives in `namespace` (looked up in the opener's netns)."""
    enter_netns(namespace)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", device.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def relay(fd_a: int, fd_b: int, delay_s: float, jitter_s: float, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    peer = {fd_a: fd_b, fd_b: fd_a}
    queue: list[tuple[float, int, int, bytes]] = []
    counts = {"a_to_b": 0, "b_to_a": 0, "reordered": 0}
    last_due = {fd_a: 0.0, fd_b: 0.0}
    sequence = 0
    stopping = False

    def stop(*_args: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        now = time.monotonic()
        timeout = max(0.0, queue[0][0] - now) if queue else 0.5
        try:
            ready, _, _ = select.select([fd_a, fd_b], [], [], timeout)
        except InterruptedError:
            continue
        for fd in ready:
            while True:
                try:
                    packet = os.read(fd, MTU)
                except BlockingIOError:
                    break
                due = time.monotonic() + rng.uniform(delay_s - jitter_s, delay_s + jitter_s)
                if due < last_due[fd]:
                    counts["reordered"] += 1
                last_due[fd] = max(last_due[fd], due)
                heapq.heappush(queue, (due, sequence, peer[fd], packet))
                sequence += 1
                counts["a_to_b" if fd == fd_a else "b_to_a"] += 1
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, target, packet = heapq.heappop(queue)
            with contextlib.suppress(OSError):  # a device gone under us: lost, as on a wire
                os.write(target, packet)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ns_a")
    parser.add_argument("tun_a")
    parser.add_argument("ns_b")
    parser.add_argument("tun_b")
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--jitter-ms", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    fd_a = attach_tun(args.ns_a, args.tun_a)
    fd_b = attach_tun(args.ns_b, args.tun_b)
    print(json.dumps({"event": "netjitter_ready"}), flush=True)
    counts = relay(fd_a, fd_b, args.delay_ms / 1000, args.jitter_ms / 1000, args.seed)
    print(json.dumps({"event": "netjitter_stopped", **counts}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
