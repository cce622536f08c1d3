"""Issue #21, "The edge, round two": each finding of the hostile review, against a real daemon.

Every test starts a real daemon (tiny model) on 127.0.0.1 and drives it the way the review did:
websockets clients, http.client, and raw sockets where a browser or an attacker sends what no
well-behaved client library would (a rebinding ``Host``, a repeated header, a ``FOO`` method).
The log tests run ``streamguard serve`` as a process at log level debug and read its stderr,
exactly what journald would store.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import socket
import sqlite3
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from streamguard.alerts.events import CallStarted, Score
from streamguard.alerts.store import EventStore
from streamguard.audio.file import read_audio
from streamguard.client import send_frames
from streamguard.sources.senders import native_frames, twilio_frames

from .conftest import Subscriber

pytestmark = pytest.mark.integration

WS_UPGRADE = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
]


@pytest.fixture(scope="module")
def speech(fixtures_dir):
    return read_audio(fixtures_dir / "speech_10s_8k.wav")


def short(speech, seconds: float = 3.0):
    rate, mono = speech
    return rate, mono[:, : int(seconds * rate)]


def sample(daemon, name: str, **labels) -> float:
    return daemon.metrics.registry.get_sample_value(f"streamguard_{name}", labels) or 0.0


def nested(levels: int, leaf: object = 1) -> object:
    value = leaf
    for _ in range(levels):
        value = {"k": value}
    return value


def raw_request(port: int, method: str, path: str, headers) -> tuple[int, dict, bytes]:
    """One request exactly as given (any method, any Host, repeated headers) on a bare socket;
    the status, headers and body of the answer (101: no body, the socket is just closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers), "", ""]
        sock.sendall("\r\n".join(lines).encode("latin-1"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        found = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            found[name.strip().lower()] = value.strip()
        length = int(found.get("content-length", 0)) if status != 101 else 0
        if method == "HEAD":
            length = 0
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, found, body


def get(port: int, path: str, host: str | None = None, **headers) -> tuple[int, dict, bytes]:
    host = host or f"127.0.0.1:{port}"
    return raw_request(port, "GET", path, [("Host", host), *headers.items()])


async def closed_with(url: str, messages: list, **kwargs) -> tuple[int | None, str | None]:
    """Send ``messages``; the close code and reason the daemon answers with."""
    async with connect(url, max_size=None, **kwargs) as ws:
        with contextlib.suppress(ConnectionClosed):
            for message in messages:
                await ws.send(message)
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            await asyncio.wait_for(ws.recv(), 10)
        await ws.wait_closed()
        return ws.close_code, ws.close_reason


async def refused_status(url: str, **kwargs) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, **kwargs):
            pass
    return info.value.response.status_code


async def healthz(port: int) -> dict:
    status, _, body = await asyncio.to_thread(get, port, "/healthz")
    assert status == 200, body
    return json.loads(body)


# ---------------------------------------------------------------- finding 1


@pytest.mark.parametrize("level", ["info", "warning"])
async def test_nested_metadata_cannot_stop_the_event_log(make_daemon, speech, tmp_path, level):
    """At info the bus failed to log the call_started of a call already registered, which
    was never closed: max_calls such frames filled the daemon for good. At warning the event
    log's writer thread died on it: nothing was committed after it while /healthz said ready.
    Now every core refuses such metadata before any call exists, and the log goes on."""
    alerts_logger = logging.getLogger("streamguard.alerts")
    before = alerts_logger.level
    alerts_logger.setLevel(level.upper())  # which path the bus takes: log it, or only hand it on
    try:
        daemon = await make_daemon(
            limits={"max_calls": 2}, events={"path": str(tmp_path / "events.db")}
        )
        base = f"ws://127.0.0.1:{daemon.port}"
        deep = nested(300)  # ~1.3 KB of JSON; json's own guard stops at 1,000 levels
        for i in range(3):  # more than max_calls
            first = {"sample_rate": 8000, "encoding": "mulaw", "call_id": f"n{i}", "x": deep}
            code, reason = await closed_with(f"{base}/ingest", [json.dumps(first)])
            assert (code, reason) == (1008, "metadata nested deeper than 8 levels")
            start = {"accountSid": "AC1", "callSid": f"CA{i}", "tracks": ["inbound"],
                     "customParameters": {"x": deep}}  # fmt: skip
            code, reason = await closed_with(
                f"{base}/twilio", [json.dumps({"event": "start", "start": start})]
            )
            assert (code, reason) == (1008, "metadata nested deeper than 8 levels")
        assert not daemon.registry.sessions
        assert sample(daemon, "source_rejects_total", source="native", reason="metadata") == 3
        assert sample(daemon, "source_rejects_total", source="twilio", reason="metadata") == 3

        rate, audio = short(speech)
        async with Subscriber(f"{base}/alerts") as sub:
            result = await send_frames(f"{base}/ingest", native_frames(audio, rate, call_id="ok"))
            (ended,) = await sub.wait_call_ended()
        assert result.close_code == 1000 and ended["call_id"] == "ok"
        assert sub.events[0]["type"] == "call_started"
        health = await healthz(daemon.port)
        assert health["status"] == "ready" and health["events"]["degraded"] is False
        assert daemon.backend.writer._thread.is_alive()
    finally:
        alerts_logger.setLevel(before)


async def test_an_event_the_log_cannot_hold_is_set_aside_and_health_says_when_it_stalls(
    make_daemon, speech, tmp_path
):
    """Whatever still gets past the cores (a bug): that one event is set aside with its
    reason, the daemon's other events go on, and /healthz is degraded whenever events are not
    being committed."""
    path = tmp_path / "events.db"
    daemon = await make_daemon(events={"path": str(path)})
    base = f"ws://127.0.0.1:{daemon.port}"
    alerts_logger = logging.getLogger("streamguard.alerts")
    before = alerts_logger.level
    alerts_logger.setLevel(logging.WARNING)  # the bus hands it on without serialising it
    try:
        async with Subscriber(f"{base}/alerts") as sub:
            daemon.bus.publish(
                CallStarted(call_id="bug", track=None, source="native", metadata={"a": "\ud800"})
            )
            rate, audio = short(speech)
            await send_frames(f"{base}/ingest", native_frames(audio, rate, call_id="after"))
            await sub.wait_call_ended()
        assert {e["call_id"] for e in sub.events} == {"after"}
        seqs = [e["seq"] for e in sub.events]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap where it was
        assert sample(daemon, "events_rejected_total", type="call_started") == 1
        health = await healthz(daemon.port)
        assert health["status"] == "ready" and health["events"]["rejected"] == 1

        # the disk stops taking commits (another process holds the write lock)
        blocker = sqlite3.connect(path, isolation_level=None, timeout=0.1)
        blocker.execute("BEGIN EXCLUSIVE")
        daemon.bus.publish(Score(call_id="x", track="0", source="native", start=0, end=4,
                                 p_fake=0.5, smoothed=0.5))  # fmt: skip
        for _ in range(300):
            health = await healthz(daemon.port)
            if health["status"] == "degraded":
                break
            await asyncio.sleep(0.05)
        assert health["status"] == "degraded" and "failing" in health["events"]["problem"]
        blocker.execute("ROLLBACK")
        blocker.close()
        await asyncio.wait_for(daemon.backend.flush(), 15)
        assert (await healthz(daemon.port))["status"] == "ready"
    finally:
        alerts_logger.setLevel(before)
    rejected = EventStore(path, readonly=True).rejected_events()
    assert [(t, c) for t, c, _ in rejected] == [("call_started", "bug")]
    assert "surrogates not allowed" in rejected[0][2]


# ---------------------------------------------------------------- finding 2


async def test_cross_site_pages_cannot_open_feeds_or_rebind_to_the_daemon(make_daemon, speech):
    daemon = await make_daemon(
        server={
            "allowed_hosts": ["screen.example.com"],
            "allowed_origins": ["https://softphone.example.com"],
        }
    )
    port = daemon.port
    base = f"ws://127.0.0.1:{port}"
    evil = "https://evil.example"
    # a page on another site cannot open a call, nor read the alerts
    for path in ("/ingest", "/twilio", "/alerts"):
        assert await refused_status(f"{base}{path}", origin=evil) == 403
    # DNS rebinding: the attacker's name now resolves to 127.0.0.1; Host and Origin match
    rebind = f"rebind.evil.example:{port}"
    for path in ("/alerts", "/ingest"):
        status, _, body = await asyncio.to_thread(
            raw_request, port, "GET", path,
            [("Host", rebind), ("Origin", f"http://{rebind}"), *WS_UPGRADE],
        )  # fmt: skip
        assert (status, body) == (421, b"misdirected request: unknown Host\n")
    for path in ("/api/status", "/metrics", "/healthz", "/"):
        status, _, _ = await asyncio.to_thread(get, port, path, rebind)
        assert status == 421, path
    status, _, _ = await asyncio.to_thread(raw_request, port, "GET", "/healthz", [])  # no Host
    assert status == 421
    # the daemon's own names, port-insensitive, and the ones listed
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST",
                 "screen.example.com", "screen.example.com:443"):  # fmt: skip
        status, _, _ = await asyncio.to_thread(get, port, "/api/status", host)
        assert status == 200, host
    # the daemon's own dashboard may read /alerts, a listed origin may open a feed, and
    # servers (no Origin at all) are unaffected
    async with connect(f"{base}/alerts", origin=f"http://127.0.0.1:{port}"):
        pass
    rate, audio = short(speech, 1.0)
    listed = await send_frames(
        f"{base}/ingest",
        native_frames(audio, rate, call_id="softphone"),
        headers={"Origin": "https://softphone.example.com"},
    )
    server = await send_frames(f"{base}/twilio", twilio_frames(audio, rate, call_sid="CAok"))
    assert listed.close_code == server.close_code == 1000
    assert sample(daemon, "requests_refused_total", surface="alerts", reason="origin") == 1
    assert sample(daemon, "requests_refused_total", surface="ingest", reason="origin") == 1
    assert sample(daemon, "requests_refused_total", surface="twilio", reason="origin") == 1
    refused_hosts = sum(
        sample(daemon, "requests_refused_total", surface=surface, reason="host")
        for surface in ("alerts", "ingest", "metrics", "healthz", "root")
    )
    assert refused_hosts == 7


# ---------------------------------------------------------------- finding 3


async def test_alerts_tail_is_capped_and_replayed_from_the_log_in_pages(make_daemon, tmp_path):
    from streamguard.alerts.follow import PAGE

    daemon = await make_daemon(events={"path": str(tmp_path / "events.db")})
    for i in range(1500):
        daemon.bus.publish(Score(call_id="c", track="0", source="native", start=i, end=i + 4,
                                 p_fake=0.5, smoothed=0.5))  # fmt: skip
    await daemon.backend.flush()
    pages: list[int] = []
    read = daemon.backend.read

    async def recording_read(after, flt, limit):  # the real read, noting each page's size
        page = await read(after, flt, limit)
        pages.append(len(page.events))
        return page

    daemon.backend.read = recording_read
    base = f"ws://127.0.0.1:{daemon.port}"
    async with Subscriber(f"{base}/alerts?tail=100000") as sub:
        await sub.wait_for(lambda ev: len(ev) >= 1000)
        await asyncio.sleep(0.3)  # nothing more comes from the replay
        daemon.bus.publish(Score(call_id="c", track="0", source="native", start=0, end=4,
                                 p_fake=0.5, smoothed=0.5))  # fmt: skip
        await sub.wait_for(lambda ev: len(ev) >= 1001)
    seqs = [e["seq"] for e in sub.events]
    assert seqs == list(range(501, 1502))  # the last 1,000 logged, then live
    assert pages and max(pages) <= PAGE


# ---------------------------------------------------------------- finding 6


async def test_a_feed_cannot_take_over_a_live_call_id(make_daemon, speech):
    daemon = await make_daemon()
    base = f"ws://127.0.0.1:{daemon.port}"
    rate, audio = short(speech, 2.0)
    inbound = [frame for _, frame in twilio_frames(audio, rate, call_sid="CAvictim")]
    async with Subscriber(f"{base}/alerts?call_id=CAvictim") as sub:
        victim = await connect(f"{base}/twilio")
        await victim.send(inbound[0])  # connected
        await victim.send(inbound[1])  # start: tracks ["inbound"]
        await sub.wait_for(lambda ev: any(e["type"] == "call_started" for e in ev))
        # another feed reusing the id: refused before it can publish anything under it
        fake = {"sample_rate": 8000, "encoding": "mulaw", "call_id": "CAvictim"}
        stop = json.dumps({"event": "stop"})
        code, reason = await closed_with(f"{base}/ingest", [json.dumps(fake), stop])
        assert (code, reason) == (1008, "call_id already live on another connection")
        twin = json.loads(inbound[1])  # a second stream claiming the track the victim carries
        assert (await closed_with(f"{base}/twilio", [json.dumps(twin)]))[0] == 1008
        # Twilio's own second stream of the call (<Stream track="outbound_track">): joins it
        outbound = json.loads(inbound[1])
        outbound["start"]["tracks"] = ["outbound"]
        outbound["start"]["streamSid"] = outbound["streamSid"] = "MZother"
        media = [json.loads(m) for m in inbound[2:12]]
        for m in media:
            m["media"]["track"] = "outbound"
        frames = [json.dumps(outbound), *map(json.dumps, media), inbound[-1]]
        second = await send_frames(f"{base}/twilio", [(0.0, f) for f in frames])
        assert second.close_code == 1000
        for message in inbound[2:]:
            await victim.send(message)
        await victim.close()
        ended = await sub.wait_call_ended(count=2)
    assert sorted(tuple(e["tracks"]) for e in ended) == [("inbound",), ("outbound",)]
    assert sum(e["type"] == "call_started" for e in sub.events) == 2
    assert sample(daemon, "source_rejects_total", source="native", reason="call_id_in_use") == 1
    assert sample(daemon, "source_rejects_total", source="twilio", reason="call_id_in_use") == 1
    # once the call is over its id is free again
    again = await send_frames(f"{base}/ingest", native_frames(audio, rate, call_id="CAvictim"))
    assert again.close_code == 1000


# ---------------------------------------------------------------- findings 7 and 8


async def test_a_megabyte_of_metadata_is_refused(make_daemon):
    daemon = await make_daemon()
    first = {"sample_rate": 8000, "encoding": "mulaw", "call_id": "big", "blob": "x" * 1_040_000}
    code, reason = await closed_with(f"ws://127.0.0.1:{daemon.port}/ingest", [json.dumps(first)])
    assert code == 1008 and reason.startswith("metadata larger than 8192 bytes")
    assert sample(daemon, "source_rejects_total", source="native", reason="metadata") == 1
    assert sample(daemon, "events_published_total", type="call_started") == 0


async def test_read_endpoints_answer_only_get_and_head(make_daemon):
    daemon = await make_daemon()
    port = daemon.port
    host = ("Host", f"127.0.0.1:{port}")
    for path in ("/healthz", "/metrics", "/api/status", "/"):
        for method in ("POST", "PUT", "DELETE", "FOO"):
            status, headers, body = await asyncio.to_thread(
                raw_request, port, method, path, [host, ("Content-Length", "0")]
            )
            assert (status, headers["allow"]) == (405, "GET, HEAD"), (method, path)
            assert body == f"method {method} not allowed\n".encode()
        get_status, get_headers, get_body = await asyncio.to_thread(get, port, path)
        status, headers, body = await asyncio.to_thread(raw_request, port, "HEAD", path, [host])
        assert (status, body) == (get_status, b"") and get_body
        assert headers["content-type"] == get_headers["content-type"]
    status, headers, _ = await asyncio.to_thread(
        raw_request, port, "POST", "/alerts", [host, *WS_UPGRADE]
    )
    assert (status, headers["allow"]) == (405, "GET")
    assert sample(daemon, "requests_refused_total", surface="healthz", reason="method") == 4


# ---------------------------------------------------------------- the log of a real process

ALERTS_TOKEN = "alerts-SECRET-a1"
INGEST_TOKEN = "ingest-SECRET-i2"
API_KEY = "apikey-SECRET-k3"
BASIC = ("analyst", "basic-SECRET-b4")
NESTED = "nested-SECRET-n5"
IN_URL = "inurl-SECRET-u6"
HOOK_USER, HOOK_PASSWORD = "hookuser", "hook-SECRET-h7"
HOOK_SECRET = "whsec-SECRET-w8"


@pytest.fixture(scope="module")
def debug_serve(tmp_path_factory, tiny_model_dir):
    """``streamguard serve`` at log level debug, every secret configured, its stderr kept."""
    from .test_serve_process import ServeProcess

    tmp = tmp_path_factory.mktemp("debug-serve")
    with socket.socket() as probe:  # a port where nothing listens: the webhook must fail
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    config = tmp / "streamguard.toml"
    config.write_text(
        f"""
[logging]
level = "debug"
[auth]
alerts_token = "{ALERTS_TOKEN}"
ingest_token = "{INGEST_TOKEN}"
[sources.audiohook]
enabled = true
api_key = "{API_KEY}"
[events]
path = "{tmp / "events.db"}"
[[webhooks]]
url = "http://{HOOK_USER}:{HOOK_PASSWORD}@127.0.0.1:{dead_port}/hook"
secret = "{HOOK_SECRET}"
max_attempts = 2
backoff_seconds = 0.05
timeout_seconds = 2
"""
    )
    serve = ServeProcess(tmp, tiny_model_dir, config)
    serve.wait_port()
    yield serve
    serve.close()


def b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def secret_forms(secret: str) -> list[str]:
    return [secret, b64url(secret), base64.b64encode(secret.encode()).decode()]


async def test_credentials_never_reach_a_debug_log(debug_serve, speech):
    """websockets dumps every request header at debug; the review found a bearer
    subprotocol, a percent-encoded ?token, X-API-KEY and Basic credentials in them, and
    metadata redacted only 6 levels deep. Each credential is used here, then looked for."""
    port = debug_serve.port
    bearer = {"Authorization": f"Bearer {ALERTS_TOKEN}"}
    assert (await asyncio.to_thread(get, port, "/metrics", **bearer))[0] == 200
    assert (await asyncio.to_thread(get, port, f"/metrics?token={ALERTS_TOKEN}"))[0] == 200
    assert (await asyncio.to_thread(get, port, f"/metrics?%74oken={ALERTS_TOKEN}"))[0] == 200
    basic = base64.b64encode(":".join(BASIC).encode()).decode()
    status, _, _ = await asyncio.to_thread(get, port, "/metrics", Authorization=f"Basic {basic}")
    assert status == 401  # not a bearer token: as if none was sent
    status, _, _ = await asyncio.to_thread(
        get, port, "/audiohook", **{"X-API-KEY": API_KEY}, **dict(WS_UPGRADE)
    )
    assert status == 400  # no AudioHook session headers; the key was still sent (and dumped)
    base = f"ws://127.0.0.1:{port}"
    protocols = ["streamguard.v1", f"streamguard.bearer.{b64url(ALERTS_TOKEN)}"]
    rate, audio = short(speech, 2.0)
    frames = list(native_frames(audio, rate, call_id="logged"))
    first = json.loads(frames[0][1])
    first["l2"] = nested(6, {"password": NESTED})  # 8 levels in all: accepted, and redacted
    first["callback"] = f"https://crm.example/cb?access_token={IN_URL}&x=1"
    frames[0] = (0.0, json.dumps(first))
    async with connect(f"{base}/alerts", subprotocols=protocols) as alerts:
        result = await send_frames(f"{base}/ingest", frames, token=INGEST_TOKEN)
        started = json.loads(await asyncio.wait_for(alerts.recv(), 30))
    assert result.close_code == 1000 and started["type"] == "call_started"
    assert NESTED not in json.dumps(started) and IN_URL not in json.dumps(started)

    await asyncio.sleep(1.0)  # let the last lines reach the reader thread
    text = "".join(debug_serve.lines)
    # the debug dumps were there (so this test looks where the secrets would be)
    assert "< Authorization: [redacted]" in text and "< X-API-KEY: [redacted]" in text
    assert "streamguard.bearer.[redacted]" in text and "%74oken=[redacted]" in text
    for secret in (ALERTS_TOKEN, INGEST_TOKEN, API_KEY, BASIC[1], NESTED, IN_URL):
        for form in secret_forms(secret):
            assert form not in text, f"{secret} ({form}) is in the log"
    assert basic not in text


async def test_webhook_userinfo_stays_out_of_labels_and_logs(debug_serve, speech):
    port = debug_serve.port
    base = f"ws://127.0.0.1:{port}"
    rate, audio = short(speech, 1.0)
    await send_frames(
        f"{base}/ingest", native_frames(audio, rate, call_id="hooked"), token=INGEST_TOKEN
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(r.get("event") == "webhook_dead_letter" for r in debug_serve.logs):
            break
        await asyncio.sleep(0.1)
    status, _, body = await asyncio.to_thread(
        get, port, "/metrics", Authorization=f"Bearer {ALERTS_TOKEN}"
    )
    metrics = body.decode()
    assert status == 200 and 'endpoint="127.0.0.1:' in metrics
    text = "".join(debug_serve.lines)
    retries = [
        r for r in debug_serve.logs if r.get("event") in ("webhook_retry", "webhook_dead_letter")
    ]
    assert retries and all(r["endpoint"].startswith("127.0.0.1:") for r in retries)
    for secret in (HOOK_USER, HOOK_PASSWORD, HOOK_SECRET):
        assert secret not in metrics and secret not in text, secret


async def test_duplicate_headers_are_a_400_without_a_traceback(debug_serve):
    port = debug_serve.port
    lines_before, logs_before = len(debug_serve.lines), len(debug_serve.logs)
    host = ("Host", f"127.0.0.1:{port}")
    auth = ("Authorization", f"Bearer {ALERTS_TOKEN}")
    status, _, body = await asyncio.to_thread(
        raw_request, port, "GET", "/metrics", [host, auth, auth]
    )
    assert (status, body) == (400, b"bad request: repeated Authorization header\n")
    status, _, body = await asyncio.to_thread(
        raw_request, port, "GET", "/alerts", [host, host, *WS_UPGRADE]
    )
    assert (status, body) == (400, b"bad request: repeated Host header\n")
    await asyncio.sleep(0.5)
    logs = debug_serve.logs[logs_before:]
    refused = [
        r for r in logs
        if r.get("event") == "request_refused" and r.get("reason") == "duplicate_header"
    ]  # fmt: skip
    assert [(r["path"], r["status"]) for r in refused] == [("/metrics", 400), ("/alerts", 400)]
    text = "".join(debug_serve.lines[lines_before:])
    assert "MultipleValuesError" not in text and "Traceback" not in text
    assert not [r for r in logs if "exception" in r]  # (webhook retries may go on meanwhile)
    assert not [r for r in logs if r.get("logger", "").startswith("websockets.server")
                and r.get("level") == "error"]  # fmt: skip


# ---------------------------------------------------------------- finding 9 (the state files)


async def test_the_event_log_files_are_private(make_daemon, speech, tmp_path):
    """events.db was created 0644 (and its directory 0755): call metadata readable by every
    user of the host. The unit now sets StateDirectoryMode=0700 and UMask=0077 too; this is
    the daemon's own part, under the most common umask."""
    import os
    import stat

    state = tmp_path / "state"
    previous = os.umask(0o022)
    try:
        daemon = await make_daemon(events={"path": str(state / "events.db")})
        rate, audio = short(speech, 1.0)
        base = f"ws://127.0.0.1:{daemon.port}"
        await send_frames(f"{base}/ingest", native_frames(audio, rate, call_id="private"))
        await daemon.backend.flush()
        modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in state.iterdir()}
    finally:
        os.umask(previous)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert modes == {
        "events.db": 0o600,
        "events.db-wal": 0o600,
        "events.db-shm": 0o600,
        "events.db.lock": 0o600,
    }
