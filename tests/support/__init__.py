"""Shared test harnesses: virtual audio, TLS certificates, tokens, stand-in servers."""
