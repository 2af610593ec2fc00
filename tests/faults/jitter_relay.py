"""A TCP relay that holds every chunk for delay +/- jitter ms, both ways, keeping the byte order.

Stands in for `tc netem delay D J` where the kernel has no netem (this project's CI kernel does
not). A chunk's release time is max(previous release, arrival + uniform(D - J, D + J)): TCP never
reorders bytes, so jitter shows as bunching and gaps, as it does behind a real jittery hop.
Run inside a namespace: `python jitter_relay.py LISTEN_HOST LISTEN_PORT TO_HOST TO_PORT D J`.
On SIGTERM it prints one JSON line with what it did.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
import time


class Stats:
    def __init__(self) -> None:
        self.connections = 0
        self.chunks = 0
        self.bytes = 0
        self.delays_ms: list[float] = []

    def as_dict(self) -> dict[str, float]:
        delays = self.delays_ms or [0.0]
        return {
            "connections": self.connections,
            "chunks": self.chunks,
            "bytes": self.bytes,
            "delay_ms_min": round(min(delays), 1),
            "delay_ms_mean": round(sum(delays) / len(delays), 1),
            "delay_ms_max": round(max(delays), 1),
        }


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    delay_s: float,
    jitter_s: float,
    stats: Stats,
) -> None:
    queue: asyncio.Queue[tuple[float, float, bytes]] = asyncio.Queue()

    async def release() -> None:
        while True:
            due, arrived, chunk = await queue.get()
            if not chunk:
                writer.close()
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            stats.delays_ms.append((time.monotonic() - arrived) * 1000)
            writer.write(chunk)
            await writer.drain()

    sender = asyncio.create_task(release())
    last_due = 0.0
    try:
        while True:
            chunk = await reader.read(65536)
            now = time.monotonic()
            last_due = max(last_due, now + random.uniform(delay_s - jitter_s, delay_s + jitter_s))
            stats.chunks += 1 if chunk else 0
            stats.bytes += len(chunk)
            queue.put_nowait((last_due, now, chunk))
            if not chunk:
                break
        await sender
    except (ConnectionError, OSError):
        sender.cancel()
        writer.transport.abort()


async def main(argv: list[str]) -> None:
    host, port, to_host, to_port, delay_ms, jitter_ms = argv
    delay_s, jitter_s = float(delay_ms) / 1000, float(jitter_ms) / 1000
    stats = Stats()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        stats.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(to_host, int(to_port))
        except OSError:
            client_w.transport.abort()
            return
        await asyncio.gather(
            _pipe(client_r, server_w, delay_s, jitter_s, stats),
            _pipe(server_r, client_w, delay_s, jitter_s, stats),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, host, int(port))
    print(json.dumps({"event": "relay_listening", "port": int(port)}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()
    print(json.dumps({"event": "relay_stats", **stats.as_dict()}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
