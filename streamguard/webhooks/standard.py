"""Standard Webhooks signatures (standardwebhooks.com, spec 1.0.0): pure functions.

Why a second scheme: receivers increasingly expect this convention (Telnyx signs its own
deepfake-detection webhooks this way), and its reference libraries verify it in every
language. ``Streamguard-Signature`` (signing.py) stays the default.

Three headers per request:

- ``webhook-id``: the event's identifier, the same on every retry of that event. streamguard
  derives it from the endpoint and the event's ``seq`` (:func:`webhook_id`), so it survives
  restarts and, with a Redis fleet (where seq is fleet-wide), nodes taking over an endpoint.
- ``webhook-timestamp``: the attempt's time, integer unix seconds (a retry gets a new one).
- ``webhook-signature``: space-separated signatures of ``"{id}.{timestamp}.{body}"``:
  ``v1,<base64 HMAC-SHA256>`` per symmetric secret (``whsec_<base64 key>``, 24 to 64 key
  bytes) and ``v1a,<base64 Ed25519 signature>`` per signing key (``whsk_<base64 32-byte
  seed>`` or a PEM PKCS#8 Ed25519 private key). Several ``v1`` values are how a secret is
  rotated without downtime: the receiver accepts the request when any one matches.

The id never contains a dot (the spec forbids it: the dot separates the signed fields).
Nothing here logs or formats a secret: errors say what is wrong with it, never what it is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from streamguard.webhooks.signing import SignatureError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ID_HEADER: Final = "webhook-id"
TIMESTAMP_HEADER: Final = "webhook-timestamp"
SIGNATURE_HEADER: Final = "webhook-signature"
SECRET_PREFIX: Final = "whsec_"
SIGNING_KEY_PREFIX: Final = "whsk_"
PUBLIC_KEY_PREFIX: Final = "whpk_"
#: The spec's bounds for a symmetric secret: at least 192 bits, at most 512.
MIN_SECRET_BYTES: Final = 24
MAX_SECRET_BYTES: Final = 64
ED25519_SEED_BYTES: Final = 32


def _b64decode(text: str, what: str) -> bytes:
    # The spec's own libraries accept unpadded base64 too; strict otherwise (no stray chars).
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{what} is not base64 after its prefix") from None


def decode_secret(text: str) -> bytes:
    """``whsec_<base64>`` -> the HMAC key bytes; :class:`SignatureError` saying why not."""
    text = text.strip()
    if not text.startswith(SECRET_PREFIX):
        raise SignatureError(f"a standard-webhooks secret starts with {SECRET_PREFIX!r}")
    key = _b64decode(text[len(SECRET_PREFIX) :], "the secret")
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise SignatureError(
            f"the secret decodes to {len(key)} bytes "
            f"(the specification asks for {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES})"
        )
    return key


def load_signing_key(text: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from ``whsk_<base64 32-byte seed>`` or PEM (PKCS#8)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = load_pem_private_key(text.encode("ascii", "replace"), password=None)
        except (ValueError, TypeError):
            raise SignatureError("the signing key is not an unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SignatureError("the signing key is not an Ed25519 key")
        return key
    if not text.startswith(SIGNING_KEY_PREFIX):
        raise SignatureError(
            f"a signing key is {SIGNING_KEY_PREFIX}<base64 32-byte seed> or a PEM Ed25519 key"
        )
    seed = _b64decode(text[len(SIGNING_KEY_PREFIX) :], "the signing key")
    if len(seed) != ED25519_SEED_BYTES:
        raise SignatureError(
            f"the signing key decodes to {len(seed)} bytes (an Ed25519 seed is 32)"
        )
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_text(key: Ed25519PrivateKey) -> str:
    """``whpk_<base64 raw public key>``: what receivers put in their trust list."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def webhook_id(endpoint: str, seq: int) -> str:
    """The event's id for one endpoint: ``sg_<16 hex of sha256(endpoint)>_<seq>``.

    Derived, not random, so every retry, a restart and another fleet node give the same id;
    per endpoint, so two endpoints never share one. No dots, as the spec requires.
    """
    digest = hashlib.sha256(endpoint.encode("utf-8")).hexdigest()[:16]
    return f"sg_{digest}_{int(seq)}"


def signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    """What every signature covers: ``"{id}.{timestamp}.{body}"``."""
    if "." in msg_id:
        raise SignatureError("a webhook id must not contain '.'")
    return f"{msg_id}.{int(timestamp)}.".encode() + body


def sign(
    msg_id: str,
    timestamp: int,
    body: bytes,
    *,
    secrets: Sequence[bytes] = (),
    signing_keys: Sequence[Ed25519PrivateKey] = (),
) -> str:
    """The ``webhook-signature`` value: ``v1,<sig>`` per secret, then ``v1a,<sig>`` per key."""
    if not secrets and not signing_keys:
        raise SignatureError("nothing to sign with: give a secret or a signing key")
    content = signed_content(msg_id, timestamp, body)
    parts = [
        "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
        for key in secrets
    ]
    parts += ["v1a," + base64.b64encode(key.sign(content)).decode() for key in signing_keys]
    return " ".join(parts)


def headers(
    msg_id: str,
    timestamp: int,
    body: bytes,
    *,
    secrets: Sequence[bytes] = (),
    signing_keys: Sequence[Ed25519PrivateKey] = (),
) -> dict[str, str]:
    """The three ``webhook-*`` headers of one attempt."""
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(int(timestamp)),
        SIGNATURE_HEADER: sign(msg_id, timestamp, body, secrets=secrets, signing_keys=signing_keys),
    }
