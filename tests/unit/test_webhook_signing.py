"""Webhook signature schemes: Standard Webhooks cross-checked against its reference library
(``standardwebhooks``) and a standard Ed25519 verify; the Streamguard scheme's rotation; the
config checks of ``[[webhooks]]`` scheme, secrets and keys."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook

from streamguard.config import load_config
from streamguard.errors import ConfigError
from streamguard.webhooks import signing, standard
from streamguard.webhooks.delivery import Signer
from streamguard.webhooks.signing import SignatureError

KEY = bytes(range(24, 56))
SECRET = "whsec_" + base64.b64encode(KEY).decode()

ids = st.text(st.characters(codec="ascii", exclude_characters="."), min_size=1, max_size=40)


@given(msg_id=ids, timestamp=st.integers(0, 2**33), body=st.binary(max_size=300))
def test_v1_equals_the_reference_library(msg_id, timestamp, body):
    body = body.decode("latin-1").encode()  # the reference signs str: use UTF-8-clean bodies
    ours = standard.sign(msg_id, timestamp, body, secrets=[KEY])
    reference = Webhook(SECRET).sign(
        msg_id, datetime.fromtimestamp(timestamp, tz=UTC), body.decode()
    )
    assert ours == reference


def test_reference_library_verifies_our_headers_and_rejects_changes():
    body = b'{"type":"alert","seq":7}'
    headers = standard.headers("sg_x_7", int(time.time()), body, secrets=[KEY])
    assert Webhook(SECRET).verify(body, headers) == {"type": "alert", "seq": 7}
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(SECRET).verify(body.replace(b"7", b"8"), headers)
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(SECRET).verify(body, {**headers, "webhook-id": "sg_x_8"})


def test_v1a_is_a_standard_ed25519_signature_of_the_same_content():
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    loaded = standard.load_signing_key("whsk_" + base64.b64encode(seed).decode())
    body = b'{"a":1}'
    header = standard.sign("sg_a_1", 1700000000, body, secrets=[KEY], signing_keys=[loaded])
    v1, v1a = header.split(" ")
    assert v1.startswith("v1,") and v1a.startswith("v1a,")
    key.public_key().verify(base64.b64decode(v1a[4:]), b"sg_a_1.1700000000." + body)
    raw_public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert standard.public_key_text(loaded) == "whpk_" + base64.b64encode(raw_public).decode()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    assert standard.public_key_text(standard.load_signing_key(pem)) == standard.public_key_text(
        loaded
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "starts with 'whsec_'"),
        ("whsec_not*base64!", "not base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "5 bytes"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "65 bytes"),
    ],
)
def test_bad_secrets_say_why_never_what(text, reason):
    with pytest.raises(SignatureError, match=reason) as err:
        standard.decode_secret(text)
    assert text[6:] not in str(err.value)


def test_unpadded_secret_is_accepted_like_the_reference_library():
    assert standard.decode_secret(SECRET.rstrip("=")) == KEY


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("whsk_" + base64.b64encode(b"x" * 31).decode(), "31 bytes"),
        ("ed25519-key", "whsk_"),
        ("-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----", "PEM"),
        (
            generate_private_key(65537, 1024)
            .private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
            .decode(),
            "not an Ed25519 key",
        ),
    ],
)
def test_bad_signing_keys(text, reason):
    with pytest.raises(SignatureError, match=reason):
        standard.load_signing_key(text)


def test_webhook_id_is_stable_per_endpoint_and_seq_without_dots():
    a = standard.webhook_id("crm.example.com/hooks", 42)
    assert a == standard.webhook_id("crm.example.com/hooks", 42)
    assert a != standard.webhook_id("crm.example.com/hooks", 43)
    assert a != standard.webhook_id("other.example.com/hooks", 42)
    assert "." not in a and a.endswith("_42")
    with pytest.raises(SignatureError, match="must not contain"):
        standard.signed_content("a.b", 1, b"")


def test_streamguard_scheme_signs_with_current_and_previous_secrets():
    signer = Signer("streamguard", "h/x", secrets=["new-secret", "old-secret"])
    body, now = b'{"seq":3}', int(time.time())
    headers = signer.headers(3, body, now)
    assert headers["Idempotency-Key"] == "3"
    for secret in ("new-secret", "old-secret"):
        assert signing.verify(secret, body, headers["Streamguard-Signature"], now=now) == now
    with pytest.raises(SignatureError):
        signing.verify("third", body, headers["Streamguard-Signature"], now=now)


def write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


HOOK = '[[webhooks]]\nurl = "http://127.0.0.1:9/h"\n'


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ('secret = "s"\nsigning_key = "whsk_x"\n', 'needs scheme = "standard-webhooks"'),
        ('scheme = "standard-webhooks"\n', "needs a secret"),
        ('scheme = "standard-webhooks"\nsecret = "plain-secret-123"\n', "whsec_"),
        ('scheme = "standard-webhooks"\nsigning_key = "whsk_AAAA"\n', "3 bytes"),
        ('scheme = "hmac"\nsecret = "s"\n', "scheme"),
        ('scheme = "standard-webhooks"\nsigning_key_file = "k"\nprevious_secrets = ["x"]\n',
         "previous_secrets need a current secret"),
    ],
)  # fmt: skip
def test_webhook_scheme_config_is_checked(tmp_path, extra, reason):
    with pytest.raises(ConfigError, match=reason) as err:
        load_config(write(tmp_path, HOOK + extra))
    assert "plain-secret-123" not in str(err.value)


def test_webhook_key_files_are_read_at_start(tmp_path):
    secret_file, old_file, key_file = tmp_path / "s", tmp_path / "old", tmp_path / "k"
    secret_file.write_text(SECRET + "\n")
    old_file.write_text("whsec_" + base64.b64encode(b"o" * 32).decode() + "\n\n")
    key = Ed25519PrivateKey.generate()
    key_file.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    (hook,) = load_config(
        write(
            tmp_path,
            HOOK
            + 'scheme = "standard-webhooks"\n'
            + f'secret_file = "{secret_file}"\nprevious_secrets_file = "{old_file}"\n'
            + f'signing_key_file = "{key_file}"\n',
        )
    ).webhooks
    headers = Signer.for_endpoint(hook).headers(1, b"{}", int(time.time()))
    assert [s[:3] for s in headers["webhook-signature"].split(" ")] == ["v1,", "v1,", "v1a"]
    secret_file.write_text("whsec_dG9vc2hvcnQ=\n")  # a bad file is one line at start
    with pytest.raises(ConfigError, match=r"webhook 127\.0\.0\.1:9/h: .*bytes"):
        Signer.for_endpoint(hook)
    secret_file.unlink()
    with pytest.raises(ConfigError, match="cannot read secret_file"):
        Signer.for_endpoint(hook)
