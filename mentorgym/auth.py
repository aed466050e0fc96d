"""One rule for who may talk to mentorgym's servers (`serve`, `serve-model`, `view`).

Each binds 127.0.0.1 by default and then asks for nothing. Bound to any other address it
refuses to start without a token, and every request must then carry it, as
`Authorization: Bearer T` (what `vllm serve --api-key` and OpenAI clients send) or
`X-API-Key: T`. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


def is_loopback(host: str) -> bool:
    """Whether `host` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def presented_token(authorization: str | None, api_key: str | None) -> str | None:
    """The token a request carries: `Authorization: Bearer T`, else `X-API-Key: T`."""
    auth = authorization or ""
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return api_key or None


def token_matches(given: str | None, token: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())
