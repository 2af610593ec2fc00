"""Fault tests: network, protocol, token, device faults and a compressed soak (issue 8)."""
