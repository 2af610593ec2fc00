"""The clients' TLS context: the system's trust loaded lazily from its hashed directory, a custom
CA file trusted besides it, verification never off. Real handshakes with a local server."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sesame_pi.tls import client_context, hashed_trust_directory
from support.credentials import TestPKI, make_pki


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return make_pki(tmp_path)


def other_ca(tmp_path: Path) -> Path:
    """A second CA, unrelated to the one the server's certificate comes from."""
    (tmp_path / "other").mkdir()
    return make_pki(tmp_path / "other").ca_file


def hashed_directory(path: Path, *ca_files: Path) -> Path:
    """A trust directory as Debian's ca-certificates makes it: PEM files and their hash links."""
    path.mkdir()
    for ca in ca_files:
        shutil.copy(ca, path / ca.name)
    subprocess.run(["openssl", "rehash", str(path)], check=True, capture_output=True)
    return path


@pytest.fixture
def trust_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """OpenSSL's trust locations as set by the environment, none by default."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return monkeypatch


@pytest.fixture
def server(pki: TestPKI) -> Iterator[int]:
    """A TLS server on 127.0.0.1 that completes each handshake and closes; its port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"hello")
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    listener.close()


def handshake(context: ssl.SSLContext, port: int) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.recv(5)


def test_the_system_trust_is_read_when_a_handshake_needs_it(
    tmp_path: Path, pki: TestPKI, server: int, trust_env: pytest.MonkeyPatch
) -> None:
    """The point of the module: no CA parsed up front (the default parses the whole bundle,
    2.6 MB held for the process's life), the one needed found at the handshake."""
    trust = hashed_directory(tmp_path / "certs", pki.ca_file)
    trust_env.setenv("SSL_CERT_DIR", str(trust))
    assert hashed_trust_directory() == str(trust)
    context = client_context()
    assert context.cert_store_stats()["x509_ca"] == 0, "nothing loaded before a handshake"
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert handshake(context, server) == b"hello"
    assert context.cert_store_stats()["x509_ca"] == 1, "only the CA the server chains to"


def test_a_server_no_trusted_ca_vouches_for_is_refused(
    tmp_path: Path, server: int, trust_env: pytest.MonkeyPatch
) -> None:
    trust = hashed_directory(tmp_path / "certs", other_ca(tmp_path))  # not the server's CA
    trust_env.setenv("SSL_CERT_DIR", str(trust))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(client_context(), server)


def test_a_configured_ca_file_is_trusted_besides_the_system(
    tmp_path: Path, pki: TestPKI, server: int, trust_env: pytest.MonkeyPatch
) -> None:
    trust = hashed_directory(tmp_path / "certs", other_ca(tmp_path))
    trust_env.setenv("SSL_CERT_DIR", str(trust))
    context = client_context(pki.ca_file)
    assert handshake(context, server) == b"hello"
    assert hashed_trust_directory() == str(trust), "the system's directory is still in use"


def test_without_hashed_links_the_default_bundle_is_used(
    tmp_path: Path, pki: TestPKI, server: int, trust_env: pytest.MonkeyPatch
) -> None:
    """A directory of plain PEM files (no `openssl rehash`) would find nothing at a handshake;
    the bundle file is read instead, as ssl.create_default_context() does."""
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(pki.ca_file, plain / "ca.pem")
    bundle = tmp_path / "bundle.pem"
    shutil.copy(pki.ca_file, bundle)
    trust_env.setenv("SSL_CERT_DIR", str(plain))
    assert hashed_trust_directory() is None
    trust_env.setenv("SSL_CERT_FILE", str(bundle))
    context = client_context()
    assert context.cert_store_stats()["x509_ca"] == 1, "the bundle, read up front"
    assert handshake(context, server) == b"hello"


def test_a_bundle_named_by_ssl_cert_file_wins_over_the_directory(
    tmp_path: Path, pki: TestPKI, server: int, trust_env: pytest.MonkeyPatch
) -> None:
    trust = hashed_directory(tmp_path / "certs", other_ca(tmp_path))
    bundle = tmp_path / "bundle.pem"
    shutil.copy(pki.ca_file, bundle)
    trust_env.setenv("SSL_CERT_DIR", str(trust))
    trust_env.setenv("SSL_CERT_FILE", str(bundle))
    assert hashed_trust_directory() is None
    assert handshake(client_context(), server) == b"hello"
