"""The ``/api`` route table on the daemon's one port: JSON bodies, path parameters, methods
other than GET, and the guard the table applies, with real HTTP clients on 127.0.0.1 beside a
WebSocket on the same port."""

from __future__ import annotations

import asyncio
import http.client
import json

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from streamguard.server.api import ApiError, ApiRequest, ApiRoute, ApiTable
from streamguard.server.handshake import HandshakeGuard
from streamguard.server.httputil import json_response
from streamguard.server.router import WebSocketRouter, make_process_request

pytestmark = pytest.mark.integration


def echo(request: ApiRequest):
    return json_response(
        200, {"got": request.json(), "query": dict(request.query), "remote": request.remote}
    )


async def forget(request: ApiRequest):
    await asyncio.sleep(0)  # async handlers are awaited
    if request.params["call_id"] == "missing":
        raise ApiError(404, "no such call")
    return json_response(200, {"deleted": request.params["call_id"]})


def evidence(request: ApiRequest):
    return json_response(200, {"call_id": request.params["call_id"], "kind": "evidence"})


def broken(request: ApiRequest):
    raise RuntimeError("a handler bug with a secret in it: hunter2")


TABLE = ApiTable(
    [
        ApiRoute("POST", "/api/echo", echo),
        ApiRoute("POST", "/api/small", echo, max_body=16),
        ApiRoute("GET", "/api/calls/{call_id}/evidence", evidence),
        ApiRoute("DELETE", "/api/calls/{call_id}/evidence", forget),
        ApiRoute("POST", "/api/broken", broken),
    ]
)


class Port:
    """The router, an ``/api`` table and a WebSocket echo path, served like the daemon does."""

    def __init__(self, token: str | None = None) -> None:
        async def ws_echo(connection):
            async for message in connection:
                await connection.send(message)

        self.router = WebSocketRouter({"/echo": ws_echo})
        self.process_request = make_process_request(
            self.router,
            api=TABLE,
            token=token,
            protected_paths={"/api/"},
        )
        self.port = 0

    async def __aenter__(self):
        self._serve = serve(
            self.router,
            "127.0.0.1",
            0,
            process_request=self.process_request,
            create_connection=HandshakeGuard(),
            open_timeout=5,
        )
        server = await self._serve.__aenter__()
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        await self._serve.__aexit__(*exc)

    def request(self, method, path, body=None, headers=None):
        """A real ``http.client`` request (in a thread): ``(status, headers, json or text)``."""

        def run():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
                sent = {"Content-Type": "application/json", **(headers or {})}
                conn.request(method, path, body=data, headers=sent)
                response = conn.getresponse()
                raw = response.read()
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = raw.decode()
                return response.status, dict(response.getheaders()), payload
            finally:
                conn.close()

        return asyncio.to_thread(run)


async def test_a_post_with_a_json_body_is_served_on_the_websocket_port():
    async with Port() as port:
        status, headers, payload = await port.request(
            "POST", "/api/echo?x=1", {"call_id": "C1", "label": "fake", "note": "é" * 40}
        )
        assert status == 200, payload
        assert headers["Content-Type"] == "application/json"
        assert payload == {
            "got": {"call_id": "C1", "label": "fake", "note": "é" * 40},
            "query": {"x": "1"},
            "remote": "127.0.0.1",
        }
        # The same port still upgrades WebSockets.
        async with connect(f"ws://127.0.0.1:{port.port}/echo") as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"


async def test_a_body_arriving_in_pieces_is_read_whole():
    body = json.dumps({"samples": list(range(2000))}).encode()
    head = (
        f"POST /api/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    async with Port() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port.port)
        for piece in (head[:20], head[20:] + body[:100], body[100:5000], body[5000:]):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        status_line, _, rest = raw.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 200 OK", raw[:200]
        payload = json.loads(rest.split(b"\r\n\r\n", 1)[1])
        assert payload["got"] == {"samples": list(range(2000))}


async def test_curl_posts_a_body_with_expect_100_continue():
    """curl sends ``Expect: 100-continue`` for a large body (asked for here, whatever its
    version's size rule) and waits for the go before sending it."""
    body = json.dumps({"note": "x" * 5000})
    async with Port() as port:
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", "--max-time", "15", "--expect100-timeout", "60", "-w", "\n%{http_code}",
            "-H", "Content-Type: application/json", "-H", "Expect: 100-continue",
            "--data-binary", body,
            f"http://127.0.0.1:{port.port}/api/echo",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    # Without the 100 Continue curl would wait out --expect100-timeout (60 s) and hit its
    # --max-time (15 s) first: the answer must come from the handler, with the body whole.
    text, _, code = out.decode().rpartition("\n")
    assert code == "200", (out, err)
    assert json.loads(text)["got"] == {"note": "x" * 5000}


async def test_path_parameters_and_methods_other_than_get():
    async with Port() as port:
        path = "/api/calls/CA42/evidence"
        assert (await port.request("GET", path))[2] == {"call_id": "CA42", "kind": "evidence"}
        assert (await port.request("DELETE", path))[2] == {"deleted": "CA42"}
        status, _, payload = await port.request("DELETE", "/api/calls/missing/evidence")
        assert (status, payload) == (404, {"error": "no such call"})
        status, headers, _ = await port.request("PUT", path, {"a": 1})
        assert status == 405 and headers["Allow"] == "DELETE, GET, HEAD"
        status, headers, _ = await port.request("GET", "/api/echo")
        assert status == 405 and headers["Allow"] == "POST"
        status, _, payload = await port.request("GET", "/api/nothing/here")
        assert status == 404 and "unknown path" in payload["error"]
        status, _, _ = await port.request("GET", "/api/calls/a/b/evidence")  # no "/" in a param
        assert status == 404
        # a parameter arrives percent-decoded: SIP-style and non-ASCII call ids, an encoded "/"
        encoded = "/api/calls/abc%40host%2F1%20%C3%A9/evidence"
        assert (await port.request("GET", encoded))[2]["call_id"] == "abc@host/1 é"


async def test_bodies_must_be_json_and_within_the_routes_limit():
    async with Port() as port:
        status, _, payload = await port.request(
            "POST",
            "/api/echo",
            b"label=fake",
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert (status, payload) == (415, {"error": "the body must be application/json"})
        status, _, payload = await port.request("POST", "/api/echo", b"{not json")
        assert status == 400 and payload["error"].startswith("body is not JSON")
        status, _, payload = await port.request("POST", "/api/small", {"far": "x" * 64})
        assert (status, payload) == (413, {"error": "body over 16 bytes"})
        status, _, payload = await port.request("POST", "/api/broken", {})
        assert (status, payload) == (500, {"error": "internal error"})


async def test_the_table_applies_the_alerts_token_and_the_origin_rule():
    async with Port(token="s3cret") as port:
        status, headers, _ = await port.request("POST", "/api/echo", {"a": 1})
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
        bad = {"Authorization": "Bearer nope"}
        assert (await port.request("POST", "/api/echo", {"a": 1}, bad))[0] == 403
        good = {"Authorization": "Bearer s3cret"}
        status, _, payload = await port.request("POST", "/api/echo", {"a": 1}, good)
        assert status == 200 and payload["got"] == {"a": 1}
        # A page on another site cannot write to the daemon, even with the token.
        evil = {**good, "Origin": "http://evil.example"}
        assert (await port.request("POST", "/api/echo", {"a": 1}, evil))[0] == 403
        own = {**good, "Origin": f"http://127.0.0.1:{port.port}"}
        assert (await port.request("POST", "/api/echo", {"a": 1}, own))[0] == 200
        # Reads are not writes: an Origin does not matter to a GET.
        reads = {**good, "Origin": "http://evil.example"}
        assert (await port.request("GET", "/api/calls/x/evidence", None, reads))[0] == 200


class _Peer:
    """The one thing dispatch reads of a websockets connection: who is on the other end."""

    def __init__(self, host: str) -> None:
        self.remote_address = (host, 40000)


def _post(path: str = "/api/echo"):
    from websockets.datastructures import Headers
    from websockets.http11 import Request

    return Request(path, Headers({"Host": "daemon"}), "POST")


@pytest.mark.parametrize(
    ("peer", "open_surface", "expected"),
    [
        ("203.0.113.5", True, 403),  # no token and a peer beyond loopback: refused
        ("203.0.113.5", False, 200),  # a token guards the surface: the peer may write
        ("127.0.0.1", True, 200),
        ("::1", True, 200),
    ],
)
async def test_writes_without_a_token_are_served_to_loopback_peers_only(
    peer, open_surface, expected
):
    from streamguard.server.httputil import http_response

    refused = []

    def refuse(connection, path, status, reason, text, **headers):
        refused.append(reason)
        return http_response(status, text, **headers)

    response = await TABLE.dispatch(
        _Peer(peer),  # type: ignore[arg-type]
        _post(),
        refuse=refuse,
        authorized=lambda request: None,
        origin_allowed=lambda request: True,
        write_needs_loopback=open_surface,
    )
    assert response.status_code == expected
    assert refused == (["loopback"] if expected == 403 else [])


def test_a_route_table_refuses_ambiguous_entries():
    with pytest.raises(ValueError, match="two /api routes"):
        ApiTable([ApiRoute("GET", "/api/a", echo), ApiRoute("get", "/api/a", echo)])
    with pytest.raises(ValueError, match="must start with '/api/'"):
        ApiRoute("GET", "/status", echo)
