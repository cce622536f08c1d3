"""Secrets never reach a log line: the masks of streamguard/logs.py, one by one.

The daemon-level check (a real ``streamguard serve`` at debug, every credential used, its
stderr searched) is tests/integration/test_edge_round_two.py; here each mask is shown on the
text it is for, with structures of any depth, cycles, and exceptions rendered after the fields.
"""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from streamguard.logs import REDACTED, configure_logging, redact, redact_text


@pytest.mark.parametrize(
    "text, secret",
    [
        ("< Authorization: Basic YW5hbHlzdDpzM2NyZXQ=", "YW5hbHlzdDpzM2NyZXQ="),
        ("< authorization: Bearer s3cret", "s3cret"),
        ("< X-API-KEY: s3cret", "s3cret"),
        ("< Cookie: session=s3cret", "s3cret"),
        ("< X-Twilio-Signature: s3cr/et+=", "s3cr/et+="),
        ("< Signature: sig1=:s3cret=:", "s3cret"),
        ("< Sec-WebSocket-Protocol: streamguard.v1, streamguard.bearer.czNjcmV0", "czNjcmV0"),
        ("token was Bearer s3cret.abc", "s3cret.abc"),
        ("< GET /metrics?token=s3cret HTTP/1.1", "s3cret"),
        ("< GET /metrics?%74oken=s3cret HTTP/1.1", "s3cret"),
        ("< GET /alerts?x=1&to%6Ben=s3cret HTTP/1.1", "s3cret"),
        ("callback=https://crm.example/cb?access_token=s3cret&x=1", "s3cret"),
        ("POST http://hookuser:s3cret@127.0.0.1:9/hook", "s3cret"),
        ("redis://:s3cret@10.0.0.5:6379/0", "s3cret"),
        ("api_key=s3cret", "s3cret"),
    ],
)
def test_each_kind_of_secret_in_text_is_masked(text, secret):
    masked = redact_text(text)
    assert secret not in masked and REDACTED in masked


@pytest.mark.parametrize(
    "text",
    ["> WWW-Authenticate: Bearer", "port=8765 remote=127.0.0.1:5555", "CA5f1e", "2025-01-31T12:00"],
)
def test_text_without_secrets_is_left_alone(text):
    assert redact_text(text) == text


def leaves(value: object) -> list:
    """Every scalar in ``value`` (without recursion: json.dumps cannot go 10,000 deep)."""
    out, stack = [], [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
        else:
            out.append(node)
    return out


def test_secret_keys_are_masked_at_any_depth_and_cycles_are_cut():
    deep: object = {"password": "s3cret", "note": "Bearer s3cret"}
    for _ in range(5000):  # far below Python's recursion limit would not do: no recursion
        deep = {"k": [deep]}
    masked = leaves(redact(deep))
    assert not [v for v in masked if "s3cret" in str(v)]
    assert sorted(masked) == sorted([REDACTED, f"Bearer {REDACTED}"])
    cyclic: dict = {"token": "s3cret", "list": [1]}
    cyclic["self"] = cyclic
    cyclic["list"].append(cyclic["list"])
    assert redact(cyclic) == {"token": REDACTED, "list": [1, "[cycle]"], "self": "[cycle]"}
    shared = {"api_key": "s3cret"}
    assert redact({"a": shared, "b": (shared, shared)}) == {
        "a": {"api_key": REDACTED},
        "b": ({"api_key": REDACTED}, {"api_key": REDACTED}),
    }
    assert shared == {"api_key": "s3cret"}  # copied, never changed in place


json_like = st.recursive(
    st.none() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["token", "a", "b", "password"]), inner, max_size=4)
    ),
    max_leaves=30,
)


@given(json_like)
def test_redact_never_raises_and_keeps_the_shape(value):
    out = redact(value)
    assert type(out) is type(value)
    assert "s3cret" not in json.dumps(redact({"token": "s3cret", "v": value}))


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_lines_of_other_libraries_and_their_exceptions_are_masked(fmt):
    """websockets' debug dumps go through the same masks; an exception's message is rendered
    after the fields were masked, and is masked too; a data frame's payload is not shown."""
    out = io.StringIO()
    configure_logging("debug", fmt, stream=out)
    try:
        ws = logging.getLogger("websockets.server")
        ws.debug("< %s: %s", "Authorization", "Basic YW5hbHlzdDpzM2NyZXQ=")
        ws.debug("< %s", 'TEXT \'{"call_id": "x", "password": "s3cret..."}\' [2048 bytes]')
        try:
            raise ValueError("invalid Authorization header: Bearer s3cret")
        except ValueError:
            ws.error("opening handshake failed", exc_info=True)
            structlog.get_logger("streamguard.test").exception("failed", token="s3cret")
    finally:
        configure_logging("warning", "json", stream=io.StringIO())
    text = out.getvalue()
    assert "s3cret" not in text and "YW5hbHlzdDpzM2NyZXQ" not in text
    assert "< TEXT [2048 bytes]" in text
    assert ("Traceback" if fmt == "console" else '"exception"') in text
