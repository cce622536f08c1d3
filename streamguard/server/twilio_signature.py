"""Twilio's request signature on a Media Stream WebSocket handshake (``X-Twilio-Signature``).

Twilio signs every request it makes with the account's auth token: base64 of
HMAC-SHA1(auth token, URL + the POST parameters sorted by name). A Media Stream is a WebSocket
GET, so there are no parameters and the signed string is the URL alone: the exact
``<Stream url>`` Twilio was given, which behind a proxy or load balancer the daemon cannot
reconstruct from the request, hence ``[sources.twilio] public_url``.

Like Twilio's own ``RequestValidator.validate``, the URL is also tried with its default port
added or removed (Twilio's signing has not always been consistent about it). Comparisons are
constant time (``hmac.compare_digest``).

What this does and does not buy: for a GET the signed string never changes, so a signature is a
static credential derived from the auth token (replayable if seen on the wire, like a bearer
token). It proves the connection was set up by someone holding the auth token; ``wss://``
(Twilio only connects to ``wss``) keeps it off the wire.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlsplit

__all__ = ["SIGNATURE_HEADER", "TwilioSignature", "signature_for", "url_variants"]

SIGNATURE_HEADER = "X-Twilio-Signature"
#: The longest header value worth comparing (a SHA-1 HMAC in base64 is 28 characters).
_MAX_SIGNATURE = 256
_DEFAULT_PORTS = {"wss": 443, "https": 443, "ws": 80, "http": 80}


def signature_for(auth_token: str, url: str, params: dict[str, str] | None = None) -> str:
    """The ``X-Twilio-Signature`` Twilio sends for ``url`` (and POST ``params``, none on a GET)."""
    signed = url + "".join(name + params[name] for name in sorted(params or {}))
    mac = hmac.new(auth_token.encode("utf-8"), signed.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def url_variants(url: str) -> list[str]:
    """``url`` as given, plus the same URL with its default port removed or added."""
    parts = urlsplit(url)
    variants = [url]
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    default = _DEFAULT_PORTS.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:
        return variants
    if port is not None and port == default:
        variants.append(parts._replace(netloc=f"{prefix}{host}").geturl())
    elif port is None and default is not None:
        variants.append(parts._replace(netloc=f"{prefix}{host}:{default}").geturl())
    return variants


class TwilioSignature:
    """Checks ``X-Twilio-Signature`` values for one public URL and auth token."""

    def __init__(self, auth_token: str, public_url: str) -> None:
        if not auth_token:
            raise ValueError("auth_token must not be empty")
        self.public_url = public_url
        self._expected = [signature_for(auth_token, u).encode() for u in url_variants(public_url)]

    def valid(self, signature: str | None) -> bool:
        """True if ``signature`` is Twilio's for the public URL (any port variant)."""
        if not signature or len(signature) > _MAX_SIGNATURE:
            return False
        given = signature.strip().encode("utf-8", "replace")
        # Compare against every variant (no early exit): the time taken does not depend on
        # which variant, if any, matched.
        matches = [hmac.compare_digest(expected, given) for expected in self._expected]
        return any(matches)
