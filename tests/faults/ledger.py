"""Every token the fault tests hand to an app, so the last test can prove no log holds one."""

from __future__ import annotations


class SecretLedger:
    def __init__(self) -> None:
        self.secrets: set[str] = set()

    def add(self, secret: str) -> str:
        self.secrets.add(secret)
        return secret


LEDGER = SecretLedger()
