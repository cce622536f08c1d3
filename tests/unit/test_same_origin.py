"""``is_same_origin``: which browser WebSocket handshakes may subscribe to ``/alerts``."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeaderValue
from websockets.http11 import Request

from streamguard.server.router import is_same_origin


def request(host: str | None, origin: str | None) -> Request:
    headers = Headers()
    if host is not None:
        headers["Host"] = host
    if origin is not None:
        headers["Origin"] = origin
    return Request("/alerts", headers)


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("127.0.0.1:8765", None),  # not a browser
        ("127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("localhost:8765", "http://LOCALHOST:8765"),
        ("sg.example.com", "https://sg.example.com"),
        ("sg.example.com:443", "https://sg.example.com"),
        ("sg.example.com", "https://sg.example.com:443"),
        ("[::1]:8765", "http://[::1]:8765"),
    ],
)
def test_same_origin(host, origin):
    assert is_same_origin(request(host, origin))


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("127.0.0.1:8765", "http://evil.example"),
        ("127.0.0.1:8765", "http://127.0.0.1:8766"),
        ("127.0.0.1:8765", "http://127.0.0.1"),
        ("sg.example.com", "http://sg.example.com:8443"),
        ("127.0.0.1:8765", "null"),
        ("127.0.0.1:8765", "file://"),
        ("127.0.0.1:8765", "http://127.0.0.1:notaport"),
        (None, "http://127.0.0.1:8765"),
    ],
)
def test_other_origins(host, origin):
    assert not is_same_origin(request(host, origin))


#: What a header value can hold once websockets has parsed it (ISO-8859-1, no controls).
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60)


@given(host=HEADER_TEXT, origin=HEADER_TEXT)
def test_any_header_text_gives_an_answer(host, origin):
    try:
        req = request(host.strip(), origin.strip())
    except InvalidHeaderValue:
        assume(False)
    assert isinstance(is_same_origin(req), bool)
