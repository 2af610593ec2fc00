"""Two network namespaces the benchmark owns, joined by a link with delay and jitter.

`srv` holds the stand-in at 198.18.0.1, `app` holds the app at 198.18.0.2 (198.18.0.0/15 is the
benchmarking range of RFC 2544: never a private or routed address). The link between them is a veth
pair with `tc netem delay D J` on both ends when the kernel has netem, and otherwise a pair of TUN
devices carried by `netjitter.py`, which delays packets the same way in user space. Which one ran
is recorded in the results. Deleting the namespaces removes every device with them.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

SRV_ADDR = "198.18.0.1"
APP_ADDR = "198.18.0.2"
HERE = Path(__file__).resolve().parent


class LinkUnavailable(RuntimeError):
    pass


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise LinkUnavailable(f"ip {' '.join(args)}: {done.stderr.strip()}")


class JitterLink:
    """`with JitterLink(20, 10) as link:` then run things with `link.exec_prefix(link.srv)`."""

    def __init__(self, delay_ms: float, jitter_ms: float, kind: str = "auto") -> None:
        if os.geteuid() != 0:
            raise LinkUnavailable("network namespaces need root")
        self.delay_ms = delay_ms
        self.jitter_ms = jitter_ms
        self.kind = kind
        tag = f"sesbench{os.getpid()}"
        self.srv = f"{tag}-srv"
        self.app = f"{tag}-app"
        self.used = ""
        self._relay: subprocess.Popen[str] | None = None
        self.relay_counts: dict[str, int] = {}

    @staticmethod
    def exec_prefix(namespace: str) -> list[str]:
        return ["ip", "netns", "exec", namespace]

    def open(self) -> JitterLink:
        try:
            for namespace in (self.srv, self.app):
                _ip("netns", "add", namespace)
                _ip("-n", namespace, "link", "set", "lo", "up")
            if self.kind in ("auto", "netem"):
                try:
                    self._veth_netem()
                    self.used = "netem"
                except LinkUnavailable:
                    if self.kind == "netem":
                        raise
                    _ip("-n", self.srv, "link", "del", "bvs")  # the pair goes with one end
            if not self.used:
                self._tun_relay()
                self.used = "netjitter"
        except BaseException:
            self.close()
            raise
        return self

    def _veth_netem(self) -> None:
        _ip(
            "link",
            "add",
            "bvs",
            "netns",
            self.srv,
            "type",
            "veth",
            "peer",
            "bva",
            "netns",
            self.app,
        )
        for namespace, device, address in (
            (self.srv, "bvs", SRV_ADDR),
            (self.app, "bva", APP_ADDR),
        ):
            _ip("-n", namespace, "addr", "add", f"{address}/30", "dev", device)
            _ip("-n", namespace, "link", "set", device, "up")
        for namespace, device in ((self.srv, "bvs"), (self.app, "bva")):
            command = [
                "tc", "-n", namespace, "qdisc", "add", "dev", device, "root", "netem",
                "delay", f"{self.delay_ms}ms", f"{self.jitter_ms}ms",
            ]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
            if done.returncode != 0:
                raise LinkUnavailable(f"tc netem: {done.stderr.strip()}")

    def _tun_relay(self) -> None:
        for namespace, device, address, peer in (
            (self.srv, "bts", SRV_ADDR, APP_ADDR),
            (self.app, "bta", APP_ADDR, SRV_ADDR),
        ):
            _ip("-n", namespace, "tuntap", "add", "dev", device, "mode", "tun")
            _ip("-n", namespace, "addr", "add", address, "peer", peer, "dev", device)
            _ip("-n", namespace, "link", "set", device, "up")
        command = [
            sys.executable, str(HERE / "netjitter.py"), self.srv, "bts", self.app, "bta",
            "--delay-ms", str(self.delay_ms), "--jitter-ms", str(self.jitter_ms),
        ]  # fmt: skip
        self._relay = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self._relay.stdout is not None
        line = self._relay.stdout.readline()
        if "netjitter_ready" not in line:
            raise LinkUnavailable(f"netjitter did not start: {line.strip()}")

    def close(self) -> None:
        relay, self._relay = self._relay, None
        if relay is not None:
            relay.terminate()
            try:
                out, _ = relay.communicate(timeout=5)
                for line in out.splitlines():
                    if "netjitter_stopped" in line:
                        self.relay_counts = {
                            k: v for k, v in json.loads(line).items() if k != "event"
                        }
            except subprocess.TimeoutExpired:
                relay.kill()
                relay.wait()
        for namespace in (self.srv, self.app):
            with contextlib.suppress(LinkUnavailable):
                _ip("netns", "del", namespace)

    def __enter__(self) -> JitterLink:
        return self.open()

    def __exit__(self, *_exc: object) -> None:
        self.close()
