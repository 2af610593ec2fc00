"""The naive baseline: the client anyone would write first, to put the app's figures in context.

PyAudio in blocking mode (read 20 ms, send; receive, write), the websockets sync client, one thread
per direction, no jitter buffer, no reconnects, no pings, no button. It speaks just enough of the
protocol (sesame_pi.protocol's encoders) to place one call against the stand-in, runs it for
`--seconds`, hangs up and exits. It prints one JSON line when the call is live.

    naive_client.py --server ws://127.0.0.1:PORT/agent-service-0/v1/connect --token-file F
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pyaudio
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from sesame_pi import protocol as p

CAPTURE_RATE = 16000
FRAME_MS = 20
CHARACTER = "Maya"


def url_for(server: str, token: str) -> str:
    query = urllib.parse.urlencode(
        {
            "id_token": token,
            "client_name": "naive-baseline",
            "usercontext": json.dumps({"timezone": "UTC"}),
            "character": CHARACTER,
        }
    )
    return f"{server}?{query}"


def receive_until(ws: ClientConnection, kind: type[Any]) -> Any:
    while True:
        try:
            message = p.decode(ws.recv(timeout=10))
        except p.FrameError:
            continue
        if isinstance(message, kind):
            return message


def play_incoming(ws: ClientConnection, speaker: Any) -> None:
    """The receive thread: every audio frame straight into a blocking write."""
    try:
        for frame in ws:
            try:
                message = p.decode(frame)
            except p.FrameError:
                continue
            if isinstance(message, p.Audio):
                speaker.write(message.pcm)
    except ConnectionClosed:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    token = args.token_file.read_text().strip()

    audio = pyaudio.PyAudio()
    origin = Origin("https://app.sesame.com")
    ws = connect(url_for(args.server, token), origin=origin, compression=None)
    session_id = receive_until(ws, p.Initialize).session_id
    envelope = p.Envelope(session_id)
    ws.send(p.client_location_state(envelope, "UTC"))
    settings = p.CallSettings(CAPTURE_RATE, CHARACTER, "naive-baseline", "naive", "en-US")
    ws.send(p.call_connect(envelope, settings, p.new_request_id()))
    answer = receive_until(ws, p.CallConnectResponse)
    envelope = p.Envelope(session_id, answer.call_id)

    frames = CAPTURE_RATE * FRAME_MS // 1000
    out_rate = answer.sample_rate
    speaker = audio.open(
        format=pyaudio.paInt16,
        channels=1,
        rate=out_rate,
        output=True,
        frames_per_buffer=out_rate * FRAME_MS // 1000,
    )
    mic = audio.open(
        format=pyaudio.paInt16,
        channels=1,
        rate=CAPTURE_RATE,
        input=True,
        frames_per_buffer=frames,
    )
    player = threading.Thread(target=play_incoming, args=(ws, speaker), daemon=True)
    player.start()
    print(json.dumps({"event": "naive_live", "call_id": str(answer.call_id)}), flush=True)

    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        ws.send(p.audio(envelope, mic.read(frames, exception_on_overflow=False)))

    ws.send(p.call_disconnect(envelope, "user_request", p.new_request_id()))
    ws.close()
    player.join(5)
    mic.close()
    speaker.close()
    audio.terminate()
    print(json.dumps({"event": "naive_ended"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
