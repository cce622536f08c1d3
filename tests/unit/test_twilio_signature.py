"""X-Twilio-Signature for a Media Stream handshake, cross-checked with Twilio's own library."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.server.twilio_signature import TwilioSignature, signature_for, url_variants

twilio = pytest.importorskip("twilio.request_validator", reason="twilio is a test dependency")
RequestValidator = twilio.RequestValidator

tokens = st.text(min_size=1, max_size=40).filter(lambda t: t.strip() == t and t)
_alnum = "abcdefghijklmnopqrstuvwxyz0123456789"
hosts = st.builds(
    lambda a, b: f"{a}.{b}" if b else a,
    st.text(_alnum, min_size=1, max_size=12),
    st.text("abcdefghijklmnopqrstuvwxyz", max_size=5),
)
paths = st.lists(st.text(_alnum + "._~-", max_size=10), max_size=4).map(
    lambda parts: "".join("/" + p for p in parts)
)
ports = st.one_of(st.none(), st.integers(1, 65535))


def url(scheme: str, host: str, port: int | None, path: str) -> str:
    return f"{scheme}://{host}{'' if port is None else f':{port}'}{path}"


@settings(max_examples=100)
@given(
    token=tokens,
    scheme=st.sampled_from(["wss", "ws", "https"]),
    host=hosts,
    port=ports,
    path=paths,
    params=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
)
def test_signature_equals_the_twilio_librarys(token, scheme, host, port, path, params):
    u = url(scheme, host, port, path)
    assert signature_for(token, u, params) == RequestValidator(token).compute_signature(u, params)


@settings(max_examples=100)
@given(token=tokens, host=hosts, port=ports, path=paths, scheme=st.sampled_from(["wss", "https"]))
def test_what_twilio_signs_for_the_public_url_is_accepted_and_agrees_with_validate(
    token, host, port, path, scheme
):
    public = url(scheme, host, port, path)
    validator = RequestValidator(token)
    check = TwilioSignature(token, public)
    for variant in url_variants(public):
        signature = validator.compute_signature(variant, {})
        assert check.valid(signature)
        if scheme == "https" or variant == public:
            # The library agrees it is genuine (it adds port 80 to any scheme but https, so
            # for wss only the exact URL can be compared with it).
            assert validator.validate(public, {}, signature)


def test_port_variants_follow_the_scheme():
    assert url_variants("wss://a.example/twilio") == [
        "wss://a.example/twilio",
        "wss://a.example:443/twilio",
    ]
    assert url_variants("wss://a.example:443/t") == ["wss://a.example:443/t", "wss://a.example/t"]
    assert url_variants("ws://[::1]/t") == ["ws://[::1]/t", "ws://[::1]:80/t"]
    assert url_variants("wss://a.example:8443/t") == ["wss://a.example:8443/t"]  # not default


def test_wrong_signatures_are_refused():
    check = TwilioSignature("secret-token", "wss://a.example/twilio")
    good = RequestValidator("secret-token").compute_signature("wss://a.example/twilio", {})
    assert check.valid(good) and check.valid(f" {good} ")
    other_token = RequestValidator("other-token").compute_signature("wss://a.example/twilio", {})
    other_url = RequestValidator("secret-token").compute_signature("wss://b.example/twilio", {})
    for bad in (None, "", other_token, other_url, good[:-2], good + "A", "x" * 10_000, "é" * 28):
        assert not check.valid(bad), bad


@given(st.text(max_size=300))
def test_arbitrary_header_values_never_raise(value):
    assert TwilioSignature("t", "wss://a.example/twilio").valid(value) in (True, False)


def test_an_empty_auth_token_is_refused():
    with pytest.raises(ValueError, match="auth_token"):
        TwilioSignature("", "wss://a.example/twilio")
