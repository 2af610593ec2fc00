"""`sesame-pi standin` as a process: it converses like the service, over verified TLS."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from websockets.sync.client import connect

from support.credentials import make_pki, make_token

PATH = "/agent-service-0/v1/connect"
CONTEXT = "usercontext=%7B%22timezone%22%3A%22UTC%22%7D"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def recv_type(ws: object, wanted: str, limit: int = 20) -> dict:
    for _ in range(limit):
        message = json.loads(ws.recv(timeout=5))  # type: ignore[attr-defined]
        if message["type"] == wanted:
            return message
    raise AssertionError(f"no {wanted} in {limit} frames")


def test_standin_converses(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sesame_pi.cli",
            "standin",
            "--port",
            str(port),
            "--tls",
            str(pki.cert_file),
            str(pki.key_file),
            "--greeting-ms",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_listening(port)
        context = ssl.create_default_context(cafile=str(pki.ca_file))
        query = f"id_token={make_token()}&client_name=Consumer-Web-App&character=Maya&{CONTEXT}"
        url = f"wss://127.0.0.1:{port}{PATH}?{query}"
        with connect(url, ssl=context, origin="https://app.sesame.com") as ws:  # type: ignore[arg-type]
            init = recv_type(ws, "initialize")
            session_id = init["session_id"]
            assert session_id and init["content"]["session_id"] == session_id
            ws.send(
                json.dumps(
                    {
                        "type": "call_connect",
                        "session_id": session_id,
                        "call_id": None,
                        "request_id": "r1",
                        "content": {
                            "sample_rate": 16000,
                            "audio_codec": "none",
                            "reconnect": False,
                            "is_private": False,
                            "client_name": "Consumer-Web-App",
                            "settings": {"character": "Maya"},
                            "client_metadata": {},
                        },
                    }
                )
            )
            answer = recv_type(ws, "call_connect_response")
            call_id = answer["call_id"]
            assert isinstance(call_id, int) and answer["request_id"] == "r1"
            assert (
                isinstance(answer["content"]["sample_rate"], int)
                and answer["content"]["sample_rate"] == 24000
            )
            ws.send(
                json.dumps(
                    {
                        "type": "ping",
                        "session_id": session_id,
                        "call_id": call_id,
                        "request_id": "p1",
                        "content": "ping",
                    }
                )
            )
            assert recv_type(ws, "ping_response")["request_id"] == "p1"
            pcm = b"\x01\x02" * 320
            ws.send(
                json.dumps(
                    {
                        "type": "audio",
                        "session_id": session_id,
                        "call_id": call_id,
                        "content": {"audio_data": base64.b64encode(pcm).decode()},
                    }
                )
            )
            echoed = base64.b64decode(recv_type(ws, "audio")["content"]["audio_data"])
            assert len(echoed) == 960  # 20 ms at 24 kHz
            ws.send(
                json.dumps(
                    {
                        "type": "call_disconnect",
                        "session_id": session_id,
                        "call_id": call_id,
                        "request_id": "d1",
                        "content": {"reason": "user_request"},
                    }
                )
            )
            assert recv_type(ws, "call_disconnect_response")["request_id"] == "d1"
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=15)
    assert server.returncode == 0
    events = [json.loads(line)["event"] for line in out.splitlines() if line.startswith("{")]
    assert "standin_call_connect" in events and "standin_call_disconnect" in events
    assert os.environ.get("NO_SUCH") is None


def test_standin_refuses_the_old_preset_key(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "sesame_pi.cli", "standin", "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_listening(port)
        query = f"id_token={make_token()}&client_name=RP-Web&character=Maya&{CONTEXT}"
        with connect(f"ws://127.0.0.1:{port}{PATH}?{query}", origin="https://app.sesame.com") as ws:  # type: ignore[arg-type]
            session_id = recv_type(ws, "initialize")["session_id"]
            ws.send(
                json.dumps(
                    {
                        "type": "call_connect",
                        "session_id": session_id,
                        "call_id": None,
                        "request_id": "r9",
                        "content": {
                            "sample_rate": 16000,
                            "audio_codec": "none",
                            "settings": {"preset": "Maya"},
                        },
                    }
                )
            )
            error = recv_type(ws, "error")
            assert error["request_id"] == "r9" and error["content"]["code"] == 5000
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)


def test_a_port_in_use_is_one_line_not_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "sesame_pi.cli", "standin", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2, result.stderr
    assert "the stand-in cannot start" in result.stderr and "Traceback" not in result.stderr


def test_a_port_out_of_range_is_one_line_not_a_traceback() -> None:
    """`--port 99999` reached the socket, which raised OverflowError (not an OSError): exit 1
    and a traceback."""
    for port in ("99999", "-1"):
        result = subprocess.run(
            [sys.executable, "-m", "sesame_pi.cli", "standin", "--port", port],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert "between 0 and 65535" in result.stderr and "Traceback" not in result.stderr
