"""Who may use which path: the access decision, the exposure rule, secrets from files."""

from __future__ import annotations

import base64

import pytest
from websockets.datastructures import Headers
from websockets.http11 import Request

from streamguard.config import load_config
from streamguard.errors import ConfigError, StreamguardError
from streamguard.server.access import (
    AccessPolicy,
    Guard,
    HostPolicy,
    exposure_problem,
    host_key,
    is_loopback,
    origin_key,
)
from streamguard.server.twilio_signature import TwilioSignature, signature_for

PUBLIC = "wss://screen.example/twilio"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.upper().startswith("STREAMGUARD_"):
            monkeypatch.delenv(name)


def request(path: str = "/x", **headers: str) -> Request:
    h = Headers()
    for name, value in headers.items():
        h[name.replace("_", "-")] = value
    return Request(path, h)


def bearer_protocol(token: str) -> str:
    return "streamguard.v1, streamguard.bearer." + base64.urlsafe_b64encode(
        token.encode()
    ).decode().rstrip("=")


def test_a_token_guard_401_when_nothing_presented_403_when_wrong():
    guard = Guard("ingest", token="s3cret")
    assert guard.check(request()) == (401, "auth", "ingest")
    assert guard.check(request(Authorization="Bearer nope")).status == 403
    assert guard.check(request("/x?token=nope")).status == 403
    assert guard.check(request(Sec_WebSocket_Protocol=bearer_protocol("nope"))).status == 403
    assert guard.check(request(Authorization="Bearer s3cret")) is None
    assert guard.check(request("/x?token=s3cret")) is None
    assert guard.check(request(Sec_WebSocket_Protocol=bearer_protocol("s3cret"))) is None
    assert Guard("open").check(request()) is None


def test_twilio_guard_takes_a_signature_or_the_ingest_token():
    signature = TwilioSignature("tw-token", PUBLIC)
    good = signature_for("tw-token", PUBLIC)
    both = Guard("twilio", token="ingest", signature=signature)
    assert both.check(request(X_Twilio_Signature=good)) is None
    assert both.check(request("/twilio?token=ingest")) is None  # Telnyx, which does not sign
    assert both.check(request()) == (401, "auth", "twilio")
    assert both.check(request(X_Twilio_Signature="AAAA")) == (403, "signature", "twilio")
    only_signed = Guard("twilio", signature=signature)
    assert only_signed.check(request()) == (401, "signature", "twilio")
    assert only_signed.check(request(Authorization="Bearer ingest")) == (401, "signature", "twilio")
    assert only_signed.check(request(X_Twilio_Signature=good)) is None


def test_policy_from_settings_guards_each_surface_with_its_own_token(tmp_path):
    (tmp_path / "alerts").write_text("alerts-secret\n")
    settings = load_config(
        None,
        {
            "auth": {"token": "shared", "alerts_token_file": str(tmp_path / "alerts")},
            "sources": {"twilio": {"auth_token": "tw", "public_url": PUBLIC}},
        },
    )
    policy = AccessPolicy.from_settings(settings)
    assert policy.check("/ingest", request(Authorization="Bearer shared")) is None
    assert policy.check("/alerts", request(Authorization="Bearer shared")).status == 403
    assert policy.check("/alerts", request(Authorization="Bearer alerts-secret")) is None
    assert policy.check("/metrics", request()).status == 401
    assert policy.check("/twilio", request(X_Twilio_Signature=signature_for("tw", PUBLIC))) is None
    assert policy.check("/healthz", request()) is None  # not guarded
    assert policy.check("/", request()) is None  # the dashboard shell is public
    assert not policy.may_see_details(request())
    assert policy.may_see_details(request("/healthz?token=alerts-secret"))
    assert AccessPolicy.from_settings(load_config(None)).may_see_details(request())


@pytest.mark.parametrize(
    ("content", "message"), [("", "is empty"), ("\n\n", "is empty"), (None, "cannot read")]
)
def test_a_bad_token_file_is_one_line_naming_the_key_not_the_secret(tmp_path, content, message):
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    settings = load_config(None, {"auth": {"ingest_token_file": str(path)}})
    with pytest.raises(ConfigError, match=message) as info:
        AccessPolicy.from_settings(settings)
    assert "auth.ingest_token_file" in str(info.value) and "\n" not in str(info.value)


def test_token_and_token_file_are_exclusive_and_empty_tokens_refused(tmp_path):
    with pytest.raises(ConfigError, match="token or token_file, not both"):
        load_config(None, {"auth": {"token": "a", "token_file": str(tmp_path / "t")}})
    with pytest.raises(ConfigError, match="empty") as info:
        load_config(None, {"auth": {"alerts_token": "  "}})
    assert "got" not in str(info.value)  # never echoes a secret


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("screen.example", False),
    ],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def exposure(**sections):
    return exposure_problem(load_config(None, {"server": {"host": "0.0.0.0"}, **sections}))


def test_beyond_loopback_every_surface_needs_its_credential():
    problem = exposure()
    assert problem is not None and "\n" not in problem
    assert "/alerts and /metrics need [auth] alerts_token" in problem
    assert "/ingest needs [auth] ingest_token" in problem
    assert "/twilio needs [sources.twilio] auth_token and public_url" in problem
    assert "allow_unauthenticated" in problem
    only_alerts = exposure(auth={"ingest_token": "i"})
    assert only_alerts is not None
    assert "/ingest" not in only_alerts and "/twilio" not in only_alerts  # ingest token covers
    assert exposure(auth={"token": "t"}) is None
    signed = exposure(
        auth={"alerts_token": "a"},
        sources={
            "twilio": {"auth_token": "tw", "public_url": PUBLIC},
            "ingest": {"enabled": False},
        },
    )
    assert signed is None
    assert exposure(auth={"allow_unauthenticated": True}) is None
    assert exposure_problem(load_config(None)) is None  # loopback: open is fine


async def test_the_daemon_refuses_to_start_exposed_before_loading_anything(tiny_detector):
    from streamguard.daemon import Daemon

    daemon = Daemon(
        load_config(None, {"server": {"host": "0.0.0.0", "port": 0}}), detector=tiny_detector
    )
    with pytest.raises(StreamguardError, match=r"refusing to listen on 0\.0\.0\.0"):
        await daemon.start()
    assert daemon.server is None and daemon.engine is None
    await daemon.stop()


@pytest.mark.parametrize(
    ("twilio", "message"),
    [
        ({"auth_token": "t"}, "auth_token needs public_url"),
        ({"public_url": PUBLIC}, "public_url is only used with auth_token"),
        ({"auth_token": "t", "public_url": "https://x/twilio"}, "must be a ws(s):// URL"),
        ({"auth_token": "t", "public_url": "wss://x/twilio?a=1"}, "without a query"),
    ],
)
def test_twilio_signature_settings_are_checked(twilio, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, {"sources": {"twilio": twilio}})


# ---------------------------------------------------------------- Host and Origin (issue #21)


@pytest.mark.parametrize(
    "value, key",
    [
        ("127.0.0.1:8765", "127.0.0.1"),
        ("LOCALHOST.", "localhost"),
        ("[::1]:8765", "[::1]"),
        ("[0:0:0:0:0:0:0:1]", "[::1]"),
        ("::1", "[::1]"),  # an allowed_hosts entry may be written without brackets
        ("screen.example.com:443", "screen.example.com"),
        ("", None),
        ("a b", None),
        ("[::1]x", None),
        ("host:port", None),
        ("évil.example", None),
    ],
)
def test_host_keys_ignore_port_case_and_trailing_dot(value, key):
    assert host_key(value) == key


@pytest.mark.parametrize(
    "value, key",
    [
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("HTTPS://Dash.Example.com:443", "https://dash.example.com"),
        ("http://[::1]:80", "http://[::1]"),
        ("null", None),  # a sandboxed frame or a file:// page
        ("file:///etc", None),
        ("https://a.example/path", None),
        ("https://user:pw@a.example", None),
    ],
)
def test_origin_keys_are_scheme_host_and_a_non_default_port(value, key):
    assert origin_key(value) == key


def test_the_host_policy_knows_the_daemons_own_names_only():
    policy = HostPolicy.for_server("10.0.0.7", ["screen.example.com"])
    for host in ("10.0.0.7:8765", "localhost:1", "127.0.0.1", "[::1]:8765", "Screen.Example.COM"):
        assert policy.allows(host), host
    for host in ("rebind.evil.example:8765", "10.0.0.8", None, "", "127.0.0.2"):
        assert not policy.allows(host), host
    assert HostPolicy.for_server("127.0.0.1", ["*"]).allows("anything.example")


def test_allowed_hosts_and_origins_are_checked_when_the_config_loads():
    with pytest.raises(ConfigError, match="allowed_hosts: 'a b' is not a host"):
        load_config(None, {"server": {"allowed_hosts": ["a b"]}})
    with pytest.raises(ConfigError, match="allowed_origins: '\\*' is not an origin"):
        load_config(None, {"server": {"allowed_origins": ["*"]}})
