"""Webhook signatures: ``Streamguard-Signature: t=<unix>,v1=<hex>`` (pure functions).

``v1`` is HMAC-SHA256, keyed with the endpoint's secret, over ``"<t>.<body>"``: the decimal
timestamp, a dot, and the exact bytes of the request body. The timestamp is signed with the
body, so a receiver that also checks it is recent (default tolerance 5 minutes) refuses an old
request replayed by someone who captured it. A header may carry several ``v1`` values (while
a secret is being rotated); one match is enough.

Receiver side, in Python (what ``streamguard webhook verify`` runs)::

    import hashlib, hmac, time

    def verify(secret: bytes, body: bytes, header: str, tolerance: int = 300) -> bool:
        fields = [part.split("=", 1) for part in header.split(",") if "=" in part]
        t = next((v for k, v in fields if k == "t"), "")
        if not t.isdigit() or abs(time.time() - int(t)) > tolerance:
            return False
        expected = hmac.new(secret, t.encode() + b"." + body, hashlib.sha256).hexdigest()
        return any(hmac.compare_digest(expected, v) for k, v in fields if k == "v1")
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

SIGNATURE_HEADER = "Streamguard-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "Streamguard-Event"
DEFAULT_TOLERANCE = 300


class SignatureError(ValueError):
    """A signature header that is malformed, stale, or does not match the body."""


def _digest(secret: str | bytes, timestamp: int, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(
    secret: str | bytes,
    body: bytes,
    timestamp: int,
    *,
    previous: Sequence[str | bytes] = (),
) -> str:
    """The header value for ``body`` sent at ``timestamp`` (unix seconds): one ``v1`` for
    ``secret``, then one per ``previous`` secret while receivers move to the new one."""
    values = ",".join(f"v1={_digest(key, timestamp, body)}" for key in (secret, *previous))
    return f"t={timestamp},{values}"


def parse_header(value: str) -> tuple[int, list[str]]:
    """``"t=1700000000,v1=ab..,v1=cd.."`` -> ``(1700000000, ["ab..", "cd.."])``.

    Raises :class:`SignatureError` (never anything else) on any malformed input.
    """
    timestamp: int | None = None
    signatures: list[str] = []
    for part in value.split(","):
        key, sep, item = part.strip().partition("=")
        if not sep:
            raise SignatureError(f"malformed signature header part {part.strip()[:40]!r}")
        if key == "t":
            if not item.isascii() or not item.isdigit() or len(item) > 12:
                raise SignatureError("signature timestamp t= is not unix seconds")
            timestamp = int(item)
        elif key == "v1":
            if len(item) != 64 or any(c not in "0123456789abcdef" for c in item):
                raise SignatureError("v1 signature is not 64 lowercase hex digits")
            signatures.append(item)
    if timestamp is None:
        raise SignatureError("signature header has no t=")
    if not signatures:
        raise SignatureError("signature header has no v1=")
    return timestamp, signatures


def verify(
    secret: str | bytes,
    body: bytes,
    header: str,
    *,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> int:
    """Check a request; returns its timestamp, or raises :class:`SignatureError` saying why."""
    timestamp, signatures = parse_header(header)
    if abs(now - timestamp) > tolerance:
        raise SignatureError(
            f"signature timestamp is {abs(now - timestamp):.0f} s from now "
            f"(tolerance {tolerance:g} s): a replay or a clock problem"
        )
    expected = _digest(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, s) for s in signatures):
        raise SignatureError("signature does not match the body (wrong secret or altered body)")
    return timestamp
