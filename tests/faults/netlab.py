"""Three network namespaces in a row: the appliance, a router, the service.

    app ns  198.18.0.2 ──veth── 198.18.0.1  router ns  198.18.0.5 ──veth── 198.18.0.6  server ns

Faults are made in the router, so both ends see what a broken network does: packets vanish on the
way (iptables FORWARD DROP, random loss with the statistic match), the router's uplink goes down
(the router answers "no route to host", like a home router whose line died). The namespaces are
the test's own, so nothing touches the machine's network. Addresses come from 198.18.0.0/15, the
range set aside for network benchmarks (RFC 2544), never a private range a real network could use.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

APP_ADDR = "198.18.0.2"
ROUTER_APP_SIDE = "198.18.0.1"
ROUTER_SERVER_SIDE = "198.18.0.5"
SERVER_ADDR = "198.18.0.6"
NETNS_ETC = Path("/etc/netns")
_serial = itertools.count(1)


class NetLabUnavailable(RuntimeError):
    """No root, no iproute2/iptables, or the kernel refuses namespaces here."""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        command = " ".join(argv)
        raise RuntimeError(f"{command} failed ({result.returncode}): {result.stderr.strip()}")
    return result


class NetLab:
    """`app_ns`, `router_ns` and `server_ns`; faults are methods."""

    def __init__(self) -> None:
        tag = f"sp{os.getpid() % 100000}x{next(_serial)}"  # unique per process and lab
        self.app_ns, self.router_ns, self.server_ns = f"{tag}a", f"{tag}r", f"{tag}s"
        # Interface names (at most 15 characters): <tag><where>.
        self.app_if, self.router_app_if = f"{tag}a0", f"{tag}ra"
        self.router_server_if, self.server_if = f"{tag}rs", f"{tag}s0"
        self._made: list[str] = []

    # ------------------------------------------------------------ lifetime

    def start(self) -> NetLab:
        if os.geteuid() != 0:
            raise NetLabUnavailable("network namespaces need root")
        if shutil.which("ip") is None or shutil.which("iptables") is None:
            raise NetLabUnavailable("iproute2 and iptables are needed (install-system-deps.sh)")
        try:
            for ns in (self.app_ns, self.router_ns, self.server_ns):
                _run("ip", "netns", "add", ns)
                self._made.append(ns)
                self.ns_run(ns, "ip", "link", "set", "lo", "up")
            self._wire(self.app_ns, self.app_if, APP_ADDR, self.router_app_if, ROUTER_APP_SIDE)
            self._wire(
                self.server_ns,
                self.server_if,
                SERVER_ADDR,
                self.router_server_if,
                ROUTER_SERVER_SIDE,
            )
            self.ns_run(self.app_ns, "ip", "route", "add", "default", "via", ROUTER_APP_SIDE)
            self.ns_run(self.server_ns, "ip", "route", "add", "default", "via", ROUTER_SERVER_SIDE)
            self.ns_run(self.router_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        except RuntimeError as exc:
            self.close()
            raise NetLabUnavailable(str(exc)) from exc
        return self

    def _wire(self, ns: str, dev: str, addr: str, router_dev: str, router_addr: str) -> None:
        _run("ip", "link", "add", dev, "netns", ns, "type", "veth",
             "peer", "name", router_dev, "netns", self.router_ns)  # fmt: skip
        for where, name, address in ((ns, dev, addr), (self.router_ns, router_dev, router_addr)):
            self.ns_run(where, "ip", "addr", "add", f"{address}/30", "dev", name)
            self.ns_run(where, "ip", "link", "set", name, "up")

    def use_nameserver(self, ns: str, address: str) -> None:
        """Give `ns` its own resolv.conf (`ip netns exec` mounts /etc/netns/NS/resolv.conf)."""
        directory = NETNS_ETC / ns
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "resolv.conf").write_text(f"nameserver {address}\noptions attempts:1\n")

    def close(self) -> None:
        for ns in self._made:
            shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
            for pid in _run("ip", "netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)  # only processes inside our own namespace
            _run("ip", "netns", "del", ns, check=False)  # takes its veth ends with it
        self._made.clear()
        with contextlib.suppress(OSError):
            NETNS_ETC.rmdir()  # only if no one else keeps a namespace's files there

    def __enter__(self) -> NetLab:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ running things inside

    @staticmethod
    def wrap(ns: str, argv: Sequence[str] = ()) -> list[str]:
        """`argv` run inside `ns` (ip execs it, so the pid is the program's own)."""
        return ["ip", "netns", "exec", ns, *argv]

    def ns_run(self, ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(*self.wrap(ns, argv), check=check)

    # ------------------------------------------------------------ faults (all in the router)

    def uplink(self, up: bool) -> None:
        """The router's line to the service goes down or comes back (a partition)."""
        state = "up" if up else "down"
        self.ns_run(self.router_ns, "ip", "link", "set", self.router_server_if, state)

    def blackhole(self, on: bool) -> None:
        """Every packet between app and service vanishes in the router; nothing is closed."""
        self.ns_run(self.router_ns, "iptables", "-I" if on else "-D", "FORWARD", "-j", "DROP")

    def random_loss(self, probability: float) -> None:
        """The router loses this share of packets at random, each way."""
        self.ns_run(
            self.router_ns, "iptables", "-A", "FORWARD",
            "-m", "statistic", "--mode", "random", "--probability", f"{probability:.4f}",
            "-j", "DROP",
        )  # fmt: skip

    def dropped_packets(self) -> int:
        """Packets the router's DROP rules discarded so far (proof the fault really happened)."""
        out = self.ns_run(self.router_ns, "iptables", "-L", "FORWARD", "-n", "-v", "-x").stdout
        total = 0
        for line in out.splitlines():
            cols = line.split()
            if len(cols) > 2 and cols[2] == "DROP" and cols[0].isdigit():
                total += int(cols[0])
        return total

    def netem(self, delay_ms: float, jitter_ms: float, loss_pct: float) -> bool:
        """tc netem on both router interfaces if the kernel has it; False (no change) if not."""
        for dev in (self.router_app_if, self.router_server_if):
            result = self.ns_run(
                self.router_ns, "tc", "qdisc", "add", "dev", dev, "root", "netem",
                "delay", f"{delay_ms}ms", f"{jitter_ms}ms", "loss", f"{loss_pct}%",
                check=False,
            )  # fmt: skip
            if result.returncode != 0:
                return False
        return True
