"""Who may open an AudioHook session: the API key and the HTTP message signature of the handshake.

Genesys Cloud opens every AudioHook session with an HTTP upgrade request that carries
``X-API-KEY``, ``Audiohook-Organization-Id``, ``Audiohook-Session-Id``,
``Audiohook-Correlation-Id`` and, when the integration has a client secret, an HTTP message
signature (``Signature-Input`` + ``Signature``, the IETF draft that became RFC 9421) computed with
HMAC-SHA256 keyed with the base64-decoded client secret. The check runs before the WebSocket
handshake completes (``process_request``), so a refused client never reaches the protocol core.

The rules, as the AudioHook specification and Genesys' reference implementation apply them:

* ``X-API-KEY`` must equal the configured key (compared with :func:`hmac.compare_digest`);
* with a client secret configured, the request must be signed; the signature must cover
  ``@request-target``, ``@authority``, ``audiohook-organization-id``, ``audiohook-session-id``,
  ``audiohook-correlation-id`` and ``x-api-key``; its ``keyid`` must be the API key, ``alg``
  (if given) ``hmac-sha256``, and ``nonce`` at least 22 characters;
* clock skew: with ``now`` the server's clock and a skew allowance of
  :data:`MAX_CLOCK_SKEW_SECONDS` (3 s), a signature is refused when ``created > now + 3``
  (made in the future), when ``expires < now + 3`` (expired or about to), or when
  ``created + max_age < now + 3`` (older than ``max_age``, 10 s by default);
* the signature base is rebuilt from the parsed, re-serialised ``Signature-Input`` (never from
  the raw header text), then compared in constant time.

A nonce is remembered for as long as its signature could still pass, so a captured handshake
cannot be replayed. Pure: the caller passes the clock in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import http_sfv

__all__ = [
    "MAX_CLOCK_SKEW_SECONDS",
    "REQUIRED_COMPONENTS",
    "Handshake",
    "HandshakeVerifier",
    "Refusal",
    "canonical_header",
    "decode_client_secret",
]

#: Allowed difference between the client's clock and ours, in seconds.
MAX_CLOCK_SKEW_SECONDS: Final = 3
#: Components every AudioHook signature must cover.
REQUIRED_COMPONENTS: Final = (
    "@request-target",
    "@authority",
    "audiohook-organization-id",
    "audiohook-session-id",
    "audiohook-correlation-id",
    "x-api-key",
)
MIN_NONCE_LENGTH: Final = 22
_MAX_NONCES: Final = 100_000
_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_SIGNATURE_PARAMS: Final = frozenset({"alg", "created", "expires", "keyid", "nonce"})
_MAX_HEADER_CHARS: Final = 8192


@dataclass(frozen=True, slots=True)
class Handshake:
    """What an accepted handshake tells the session (all from the request headers)."""

    session_id: str
    organization_id: str
    correlation_id: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused handshake: the HTTP ``status`` to answer, the metrics ``kind`` (``auth``,
    ``signature`` or ``protocol``) and a ``reason`` for the log (never sent to the client)."""

    status: int
    kind: str
    reason: str


def decode_client_secret(text: str) -> bytes:
    """The HMAC key: the base64-decoded client secret. Raises ValueError if not base64."""
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("client_secret must be base64 (as Genesys Cloud shows it)") from None


def canonical_header(headers: Mapping[str, str] | object, name: str) -> str | None:
    """A header's canonical value: each value trimmed, obsolete line folding replaced by one
    space, repeated fields joined with ``", "`` (HTTP message signatures, section 2.1)."""
    get_all = getattr(headers, "get_all", None)
    if get_all is not None:
        values = list(get_all(name))
    elif isinstance(headers, Mapping):
        values = [v for k, v in headers.items() if k.lower() == name]
    else:
        values = []
    if not values:
        return None
    return ", ".join(re.sub(r"[ \t]*\r\n[ \t]+", " ", v.strip()) for v in values)


class _Fail(Exception):
    def __init__(self, status: int, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.refusal = Refusal(status, kind, reason)


class HandshakeVerifier:
    """Checks AudioHook upgrade requests against one API key and (optionally) its client secret.

    Without a client secret only the API key is checked (signature headers, if sent, are then
    ignored: there is nothing to verify them with).
    """

    def __init__(
        self, api_key: str, client_secret: bytes | None = None, *, max_age_seconds: float = 10.0
    ) -> None:
        if not api_key:
            raise ValueError("an AudioHook API key is required")
        self._api_key = api_key.encode()
        self._secret = client_secret
        self.max_age_seconds = max_age_seconds
        self._nonces: OrderedDict[str, float] = OrderedDict()  # nonce -> when it stops mattering

    @property
    def signs(self) -> bool:
        """True when requests must carry a valid signature (a client secret is configured)."""
        return self._secret is not None

    def check(self, target: str, headers: object, now: float) -> Handshake | Refusal:
        """Verify one upgrade request: ``target`` is the request-target as received (path and
        query), ``headers`` the request headers (a Mapping or websockets ``Headers``)."""
        try:
            handshake = self._identity(headers)
            self._api_key_matches(headers)
            if self._secret is not None:
                self._signature(target, headers, now, self._secret)
            return handshake
        except _Fail as exc:
            return exc.refusal

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _identity(headers: object) -> Handshake:
        values = {}
        for name in ("audiohook-session-id", "audiohook-organization-id"):
            value = canonical_header(headers, name)
            if value is None or not _UUID.fullmatch(value):
                raise _Fail(400, "protocol", f"missing or malformed {name} header")
            values[name] = value.lower()
        correlation = canonical_header(headers, "audiohook-correlation-id") or ""
        return Handshake(
            session_id=values["audiohook-session-id"],
            organization_id=values["audiohook-organization-id"],
            correlation_id=correlation[:64],
        )

    def _api_key_matches(self, headers: object) -> None:
        given = canonical_header(headers, "x-api-key")
        if given is None:
            raise _Fail(401, "auth", "no X-API-KEY header")
        if not hmac.compare_digest(self._api_key, given.encode()):
            raise _Fail(401, "auth", "wrong X-API-KEY")

    def _signature(self, target: str, headers: object, now: float, key: bytes) -> None:
        raw_input = canonical_header(headers, "signature-input")
        raw_signature = canonical_header(headers, "signature")
        if raw_input is None or raw_signature is None:
            raise _Fail(401, "signature", "request is not signed (Signature/Signature-Input)")
        if len(raw_input) > _MAX_HEADER_CHARS or len(raw_signature) > _MAX_HEADER_CHARS:
            raise _Fail(401, "signature", "signature header too long")
        inputs, signatures = http_sfv.Dictionary(), http_sfv.Dictionary()
        try:
            inputs.parse(raw_input.encode("ascii"))
            signatures.parse(raw_signature.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise _Fail(401, "signature", "malformed Signature or Signature-Input") from None
        if not len(inputs):
            raise _Fail(401, "signature", "empty Signature-Input")
        label = next(iter(inputs))  # like the reference verifier: the first signature counts
        covered = inputs[label]
        signature = signatures.get(label)
        if not isinstance(covered, http_sfv.InnerList):
            raise _Fail(401, "signature", "Signature-Input member is not an inner list")
        if not isinstance(signature, http_sfv.Item) or not isinstance(signature.value, bytes):
            raise _Fail(401, "signature", f"no byte-sequence signature labelled {label!r}")
        params = self._parameters(covered.params)
        if params.get("keyid") != self._api_key.decode():
            raise _Fail(401, "signature", "signature keyid is not the X-API-KEY")
        self._fresh(params, now)
        lines = []
        seen: set[str] = set()
        for item in covered:
            name = item.value
            if not isinstance(name, str) or len(item.params):
                raise _Fail(401, "signature", "covered components must be plain strings")
            if name in seen:
                raise _Fail(401, "signature", f"component {name!r} listed twice")
            seen.add(name)
            lines.append(f'"{name}": {self._component(name, target, headers)}')
        missing = [c for c in REQUIRED_COMPONENTS if c not in seen]
        if missing:
            raise _Fail(401, "signature", f"signature does not cover {', '.join(missing)}")
        lines.append(f'"@signature-params": {covered}')
        expected = hmac.new(key, "\n".join(lines).encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, signature.value):
            raise _Fail(401, "signature", "signature does not match")
        self._remember(str(params["nonce"]), float(params["created"]), now)

    @staticmethod
    def _parameters(raw: object) -> dict[str, object]:
        params = dict(raw.items()) if hasattr(raw, "items") else {}  # type: ignore[union-attr]
        unknown = set(params) - _SIGNATURE_PARAMS
        if unknown:
            raise _Fail(401, "signature", f"unknown signature parameter {sorted(unknown)[0]!r}")
        for name in ("created", "expires"):
            value = params.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise _Fail(401, "signature", f"signature parameter {name} must be an integer")
        for name in ("keyid", "nonce", "alg"):
            if name in params and not isinstance(params[name], str):
                raise _Fail(401, "signature", f"signature parameter {name} must be a string")
        if params.get("alg", "hmac-sha256") != "hmac-sha256":
            raise _Fail(401, "signature", "signature algorithm is not hmac-sha256")
        nonce = params.get("nonce")
        if not isinstance(nonce, str) or len(nonce) < MIN_NONCE_LENGTH:
            raise _Fail(401, "signature", "signature nonce missing or shorter than 22 characters")
        if params.get("created") is None:
            raise _Fail(401, "signature", "signature has no created time")
        return params

    def _fresh(self, params: dict[str, object], now: float) -> None:
        created = int(params["created"])  # type: ignore[call-overload]
        expires = params.get("expires")
        skew = MAX_CLOCK_SKEW_SECONDS
        if created > now + skew:
            raise _Fail(401, "signature", "signature created in the future (check the clock)")
        if expires is not None and int(expires) < now + skew:  # type: ignore[call-overload]
            raise _Fail(401, "signature", "signature expired")
        if created + self.max_age_seconds < now + skew:
            raise _Fail(401, "signature", "signature too old")

    def _remember(self, nonce: str, created: float, now: float) -> None:
        if nonce in self._nonces and self._nonces[nonce] > now:
            raise _Fail(401, "signature", "signature nonce replayed")
        for old, until in list(self._nonces.items()):
            if until > now:
                break
            del self._nonces[old]
        self._nonces[nonce] = created + self.max_age_seconds + MAX_CLOCK_SKEW_SECONDS
        while len(self._nonces) > _MAX_NONCES:
            self._nonces.popitem(last=False)

    @staticmethod
    def _component(name: str, target: str, headers: object) -> str:
        if name == "@request-target":
            return target
        if name == "@authority":
            value = canonical_header(headers, "host")
        elif name == "@method":
            value = "GET"  # a WebSocket upgrade is always a GET
        elif name == "@path":
            value = urlsplit(target).path or "/"
        elif name == "@query":
            value = "?" + urlsplit(target).query
        elif name.startswith("@"):
            raise _Fail(401, "signature", f"derived component {name!r} not supported")
        elif name in ("signature", "signature-input"):
            raise _Fail(401, "signature", f"component {name!r} cannot be signed")
        else:
            value = canonical_header(headers, name)
        if value is None:
            raise _Fail(401, "signature", f"signed header {name!r} not present")
        return value
