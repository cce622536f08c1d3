"""AudioHook handshake checks: the specification's signed example, its clock-skew rule, refusals."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.datastructures import Headers

from streamguard.server.audiohook_auth import (
    Handshake,
    HandshakeVerifier,
    Refusal,
    decode_client_secret,
)
from tests.audiohook_client import SAMPLE_API_KEY, SAMPLE_CLIENT_SECRET, signed_headers

# The signed request of the AudioHook specification ("Establishing connection"): request URI
# wss://audiohook.example.com/api/v1/voicebiometrics/ws, the sample API key and client secret.
DOC_TARGET = "/api/v1/voicebiometrics/ws"
DOC_CREATED = 1641013200
DOC_HEADERS = {
    "Host": "audiohook.example.com",
    "Audiohook-Organization-Id": "d7934305-0972-4844-938e-9060eef73d05",
    "Audiohook-Correlation-Id": "e160e428-53e2-487c-977d-96989bf5c99d",
    "Audiohook-Session-Id": "30b0e395-84d3-4570-ac13-9a62d8f514c0",
    "X-API-KEY": "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh",
    "Signature": "sig1=:NZBwyBHRRyRoeLqy1IzOa9VYBuI8TgMFt2GRDkDuJh4=:",
    "Signature-Input": 'sig1=("@request-target" "@authority" "audiohook-organization-id" '
    '"audiohook-session-id" "audiohook-correlation-id" "x-api-key");'
    'keyid="SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh";nonce="VGhpc0lzQVVuaXF1ZU5vbmNl";'
    'alg="hmac-sha256";created=1641013200;expires=3282026430',
}


def verifier(secret: str | None = SAMPLE_CLIENT_SECRET, **kw) -> HandshakeVerifier:
    key = decode_client_secret(secret) if secret is not None else None
    return HandshakeVerifier(SAMPLE_API_KEY, key, **kw)


def test_the_specifications_signed_example_verifies():
    result = verifier().check(DOC_TARGET, Headers(DOC_HEADERS), DOC_CREATED + 1)
    assert result == Handshake(
        session_id="30b0e395-84d3-4570-ac13-9a62d8f514c0",
        organization_id="d7934305-0972-4844-938e-9060eef73d05",
        correlation_id="e160e428-53e2-487c-977d-96989bf5c99d",
    )


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Host", "audiohook.example.org"),
        ("Audiohook-Organization-Id", "d7934305-0972-4844-938e-9060eef73d06"),
        ("Audiohook-Session-Id", "30b0e395-84d3-4570-ac13-9a62d8f514c1"),
        ("Audiohook-Correlation-Id", "e160e428-53e2-487c-977d-96989bf5c99e"),
        ("Signature", "sig1=:NZCwyBHRRyRoeLqy1IzOa9VYBuI8TgMFt2GRDkDuJh4=:"),
    ],
)
def test_any_signed_component_changed_breaks_the_signature(header, value):
    headers = {**DOC_HEADERS, header: value}
    result = verifier().check(DOC_TARGET, Headers(headers), DOC_CREATED + 1)
    assert result == Refusal(401, "signature", "signature does not match")


def test_another_request_target_breaks_the_signature():
    result = verifier().check("/api/v1/other", Headers(DOC_HEADERS), DOC_CREATED + 1)
    assert isinstance(result, Refusal) and result.kind == "signature"


def test_wrong_secret_is_refused():
    result = verifier("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").check(
        DOC_TARGET, Headers(DOC_HEADERS), DOC_CREATED + 1
    )
    assert result == Refusal(401, "signature", "signature does not match")


@pytest.mark.parametrize(
    ("now", "ok"),
    [
        (DOC_CREATED - 4, False),  # created more than 3 s in the future
        (DOC_CREATED - 3, True),
        (DOC_CREATED, True),
        (DOC_CREATED + 7, True),  # created + max_age (10) == now + skew (3): still fresh
        (DOC_CREATED + 8, False),  # older than 10 s, allowing 3 s of skew
    ],
)
def test_clock_skew_rule(now, ok):
    result = verifier().check(DOC_TARGET, Headers(DOC_HEADERS), now)
    assert isinstance(result, Handshake) is ok
    if not ok:
        assert result.kind == "signature" and ("future" in result.reason or "old" in result.reason)


def test_expires_is_honoured_with_the_skew():
    url = "ws://h:1/audiohook"
    headers = signed_headers(url, session_id="30b0e395-84d3-4570-ac13-9a62d8f514c0", created=1000)
    headers["Host"] = "h:1"
    v = verifier(max_age_seconds=3600)
    assert isinstance(v.check("/audiohook", headers, 1026), Handshake)  # expires 1030 >= 1029
    headers = signed_headers(url, session_id="30b0e395-84d3-4570-ac13-9a62d8f514c0", created=1000)
    headers["Host"] = "h:1"
    assert v.check("/audiohook", headers, 1028) == Refusal(401, "signature", "signature expired")


def test_a_replayed_handshake_is_refused():
    v = verifier()
    assert isinstance(v.check(DOC_TARGET, Headers(DOC_HEADERS), DOC_CREATED), Handshake)
    again = v.check(DOC_TARGET, Headers(DOC_HEADERS), DOC_CREATED + 1)
    assert again == Refusal(401, "signature", "signature nonce replayed")


def test_wrong_or_missing_api_key():
    headers = {**DOC_HEADERS, "X-API-KEY": "bm90IHRoZSBrZXk="}
    assert verifier().check(DOC_TARGET, Headers(headers), DOC_CREATED) == Refusal(
        401, "auth", "wrong X-API-KEY"
    )
    headers = {k: v for k, v in DOC_HEADERS.items() if k != "X-API-KEY"}
    assert verifier().check(DOC_TARGET, Headers(headers), DOC_CREATED).kind == "auth"


def test_unsigned_request_needs_no_secret_only_the_key():
    headers = {k: v for k, v in DOC_HEADERS.items() if not k.startswith("Signature")}
    assert verifier().check(DOC_TARGET, Headers(headers), DOC_CREATED).kind == "signature"
    assert isinstance(verifier(None).check(DOC_TARGET, Headers(headers), 0), Handshake)
    bad = {**headers, "X-API-KEY": "nope"}
    assert verifier(None).check(DOC_TARGET, Headers(bad), 0).kind == "auth"


@pytest.mark.parametrize(
    ("replace", "fragment"),
    [
        ('keyid="SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh"', 'keyid="b3RoZXI="'),
        ('alg="hmac-sha256"', 'alg="rsa-pss-sha512"'),
        ('nonce="VGhpc0lzQVVuaXF1ZU5vbmNl"', 'nonce="short"'),
        ('"x-api-key")', '"x-api-key" "content-type")'),
        ("created=1641013200;", ""),
        ('"audiohook-correlation-id" ', ""),
        ('alg="hmac-sha256"', 'alg="hmac-sha256";tag="x"'),
        ("sig1=(", "sig1=:"),
    ],
)
def test_malformed_or_incomplete_signatures_are_refused(replace, fragment):
    headers = {**DOC_HEADERS}
    headers["Signature-Input"] = headers["Signature-Input"].replace(replace, fragment)
    result = verifier().check(DOC_TARGET, Headers(headers), DOC_CREATED)
    assert isinstance(result, Refusal) and result.status == 401 and result.kind == "signature"


@pytest.mark.parametrize("header", ["Audiohook-Session-Id", "Audiohook-Organization-Id"])
def test_missing_or_malformed_session_headers_are_bad_requests(header):
    headers = {k: v for k, v in DOC_HEADERS.items() if k != header}
    assert verifier().check(DOC_TARGET, Headers(headers), DOC_CREATED).status == 400
    headers[header] = "not-a-uuid"
    assert verifier().check(DOC_TARGET, Headers(headers), DOC_CREATED).kind == "protocol"


def test_our_test_client_signs_what_the_server_verifies():
    session = DOC_HEADERS["Audiohook-Session-Id"]
    headers = signed_headers("ws://127.0.0.1:9/audiohook?a=1", session_id=session, created=5000)
    headers["Host"] = "127.0.0.1:9"
    assert isinstance(verifier().check("/audiohook?a=1", headers, 5001), Handshake)


def test_client_secret_must_be_base64():
    with pytest.raises(ValueError, match="base64"):
        decode_client_secret("not base64!")


_header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200)


@settings(max_examples=300)
@given(
    signature_input=_header_text,
    signature=_header_text,
    key=_header_text,
    session=st.one_of(st.just(DOC_HEADERS["Audiohook-Session-Id"]), _header_text),
    now=st.integers(min_value=0, max_value=2**33),
)
def test_arbitrary_headers_give_a_verdict_never_an_exception(
    signature_input, signature, key, session, now
):
    headers = {
        **DOC_HEADERS,
        "Signature-Input": signature_input,
        "Signature": signature,
        "X-API-KEY": key,
        "Audiohook-Session-Id": session,
    }
    result = verifier().check(DOC_TARGET, Headers(headers), now)
    assert isinstance(result, Handshake | Refusal)


@settings(max_examples=200)
@given(st.text(max_size=120))
def test_arbitrary_structured_field_text_is_refused_cleanly(text):
    headers = {**DOC_HEADERS, "Signature-Input": text}  # a dict: Headers refuses some text
    result = verifier().check(DOC_TARGET, headers, DOC_CREATED)
    assert isinstance(result, Refusal) and result.kind == "signature"
