"""Test credentials: a private CA (trustme) for verified TLS, and JWTs with a chosen expiry."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
import trustme

TEST_SIGNING_KEY = "sesame-pi-tests-only-signing-key-0123456789"


def make_token(exp_in_s: float = 3600, anonymous: bool = False, uid: str = "user-123") -> str:
    """A Firebase-shaped ID token; the app never checks signatures, so HS256 will do."""
    now = int(time.time())
    claims = {
        "iss": "https://securetoken.google.com/test-project",
        "aud": "test-project",
        "sub": uid,
        "user_id": uid,
        "iat": now,
        "exp": int(now + exp_in_s),
        "firebase": {"sign_in_provider": "anonymous" if anonymous else "password"},
    }
    return jwt.encode(claims, TEST_SIGNING_KEY, algorithm="HS256")


def write_token(path: Path, token: str) -> Path:
    """Write a token file the way the appliance expects it: mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.chmod(path, 0o600)
    return path


@dataclass(frozen=True)
class TestPKI:
    __test__ = False  # a data holder, not a test class

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_pki(directory: Path) -> TestPKI:
    """A CA and a server certificate for 127.0.0.1, ::1 and localhost, as PEM files."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "::1", "localhost")
    ca_file = directory / "ca.pem"
    cert_file = directory / "server.pem"
    key_file = directory / "server.key"
    ca.cert_pem.write_to_path(str(ca_file))
    cert_file.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(key_file))
    return TestPKI(ca_file, cert_file, key_file)
