"""The daemon's edge over real sockets on 127.0.0.1: tokens, Twilio signatures, TLS, limits.

Each test starts a real daemon (tiny model) with the setting it is about and drives it with
real clients: websockets, http.client, raw TCP and UDP sockets, the twilio library's
RequestValidator for signatures and an openssl-made certificate for TLS.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import ssl
import subprocess
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from streamguard.audio.file import read_audio
from streamguard.cli import main
from streamguard.client import send_frames
from streamguard.sources.rtp import RtpPacket
from streamguard.sources.senders import native_frames, twilio_frames

from .conftest import Subscriber, until

pytestmark = pytest.mark.integration

PUBLIC_URL = "wss://screen.example/twilio"


def sample(daemon, name: str, **labels) -> float:
    return daemon.metrics.registry.get_sample_value(f"streamguard_{name}", labels) or 0.0


def http_get(port: int, path: str, headers=None, context=None):
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    out = (resp.status, dict(resp.getheaders()), resp.read())
    conn.close()
    return out


async def refused_status(url: str, **kwargs) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, **kwargs):
            pass
    return info.value.response.status_code


@pytest.fixture(scope="module")
def speech(fixtures_dir):
    return read_audio(fixtures_dir / "speech_10s_8k.wav")


def short(speech, seconds: float = 5.0):
    rate, mono = speech
    return rate, mono[:, : int(seconds * rate)]


# ---------------------------------------------------------------- access control


async def test_each_surface_takes_its_own_token(make_daemon, speech, tmp_path):
    alerts_file = tmp_path / "alerts_token"
    alerts_file.write_text("alerts-secret\n")  # as systemd LoadCredential= provides it
    daemon = await make_daemon(
        auth={"ingest_token": "ingest-secret", "alerts_token_file": str(alerts_file)}
    )
    base = f"ws://127.0.0.1:{daemon.port}"
    bearer = {"Authorization": "Bearer ingest-secret"}
    assert await refused_status(f"{base}/ingest") == 401
    assert await refused_status(f"{base}/ingest?token=alerts-secret") == 403
    assert await refused_status(f"{base}/alerts", additional_headers=bearer) == 403
    assert await refused_status(f"{base}/twilio") == 401  # no signature set: the ingest token

    status, headers, body = await asyncio.to_thread(http_get, daemon.port, "/metrics")
    assert (status, headers.get("WWW-Authenticate"), body) == (401, "Bearer", b"unauthorized\n")
    status, _, body = await asyncio.to_thread(
        http_get, daemon.port, "/metrics", {"Authorization": "Bearer ingest-secret"}
    )
    assert (status, body) == (403, b"forbidden\n")
    status, _, body = await asyncio.to_thread(
        http_get, daemon.port, "/metrics", {"Authorization": "Bearer alerts-secret"}
    )
    assert status == 200 and b"streamguard_requests_refused_total" in body

    status, _, body = await asyncio.to_thread(http_get, daemon.port, "/healthz")
    assert status == 200 and json.loads(body) == {"status": "ready"}  # nothing more, no token
    status, _, body = await asyncio.to_thread(http_get, daemon.port, "/healthz?token=alerts-secret")
    assert status == 200 and "open_calls" in json.loads(body)

    rate, audio = short(speech)
    async with Subscriber(f"{base}/alerts?token=alerts-secret") as sub:
        result = await send_frames(
            f"{base}/ingest", native_frames(audio, rate, call_id="ok"), token="ingest-secret"
        )
        (ended,) = await sub.wait_call_ended()
    assert result.close_code == 1000 and ended["call_id"] == "ok"
    assert sample(daemon, "requests_refused_total", surface="ingest", reason="auth") == 2
    assert sample(daemon, "requests_refused_total", surface="alerts", reason="auth") == 1
    assert sample(daemon, "requests_refused_total", surface="twilio", reason="auth") == 1
    assert sample(daemon, "requests_refused_total", surface="metrics", reason="auth") == 2


async def test_twilio_signature_checked_at_the_handshake(make_daemon, speech):
    validator = pytest.importorskip("twilio.request_validator").RequestValidator("tw-auth")
    daemon = await make_daemon(
        auth={"ingest_token": "ingest-secret"},
        sources={"twilio": {"auth_token": "tw-auth", "public_url": PUBLIC_URL}},
    )
    base = f"ws://127.0.0.1:{daemon.port}"
    # Behind a proxy the daemon sees ws://127.0.0.1:PORT/twilio; Twilio signed the public URL.
    good = validator.compute_signature(PUBLIC_URL, {})
    wrong_url = validator.compute_signature(f"{base}/twilio", {})
    assert await refused_status(f"{base}/twilio") == 401
    assert (
        await refused_status(f"{base}/twilio", additional_headers={"X-Twilio-Signature": wrong_url})
        == 403
    )
    rate, audio = short(speech)
    async with Subscriber(f"{base}/alerts") as sub:
        signed = await send_frames(
            f"{base}/twilio",
            twilio_frames(audio, rate, call_sid="CAsigned"),
            headers={"X-Twilio-Signature": good},
        )
        # Telnyx does not sign: its stream_url can carry the ingest token instead.
        telnyx = await send_frames(
            f"{base}/twilio?token=ingest-secret", twilio_frames(audio, rate, call_sid="CAtoken")
        )
        ended = await sub.wait_call_ended(count=2)
    assert signed.close_code == telnyx.close_code == 1000
    assert sorted(e["call_id"] for e in ended) == ["CAsigned", "CAtoken"]
    assert sample(daemon, "requests_refused_total", surface="twilio", reason="auth") == 1
    assert sample(daemon, "requests_refused_total", surface="twilio", reason="signature") == 1


def test_exposed_daemon_refuses_to_start_in_one_line(capsys, monkeypatch):
    """Before the model is even looked at ('x' is no model): one line, exit 2."""
    for name in ("STREAMGUARD_AUTH__TOKEN", "STREAMGUARD_AUTH__INGEST_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    code = main(["serve", "--host", "0.0.0.0", "--port", "0", "--rtp-port", "0", "--model", "x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("streamguard: error: refusing to listen on 0.0.0.0")
    assert "[auth] alerts_token" in err[0] and "allow_unauthenticated" in err[0]


# ---------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1, made by the openssl CLI for this test run."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    openssl = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        [*openssl.split(), "-keyout", str(key), "-out", str(cert), "-days", "2", *subject],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_serves_wss_and_https_on_the_one_port(make_daemon, speech, certificate):
    cert, key = certificate
    daemon = await make_daemon(server={"tls_cert": str(cert), "tls_key": str(key)})
    client = ssl.create_default_context(cafile=str(cert))
    base = f"wss://127.0.0.1:{daemon.port}"
    status, _, body = await asyncio.to_thread(http_get, daemon.port, "/healthz", None, client)
    assert status == 200 and json.loads(body)["status"] == "ready"
    rate, audio = short(speech)
    async with connect(f"{base}/alerts", ssl=client) as alerts:
        result = await send_frames(
            f"{base}/twilio", twilio_frames(audio, rate, call_sid="CAtls"), ssl=client
        )
        events = []
        while not events or events[-1]["type"] != "call_ended":
            events.append(json.loads(await asyncio.wait_for(alerts.recv(), 30)))
    assert result.close_code == 1000
    assert events[0]["type"] == "call_started" and events[-1]["call_id"] == "CAtls"
    assert any(e["type"] == "score" for e in events)
    # A client that does not speak TLS gets nowhere; one that does not trust the cert neither.
    with pytest.raises((InvalidHandshake, OSError, TimeoutError)):
        async with connect(f"ws://127.0.0.1:{daemon.port}/alerts", open_timeout=5):
            pass
    with pytest.raises(ssl.SSLCertVerificationError):
        async with connect(f"{base}/alerts", ssl=ssl.create_default_context()):
            pass


def test_a_bad_certificate_is_one_line(tmp_path, capsys, certificate):
    cert, _ = certificate
    wrong_key = tmp_path / "key.pem"
    wrong_key.write_text("not a key\n")
    config = write_config(tmp_path, cert, wrong_key)
    code = main(["serve", "--port", "0", "--rtp-port", "0", "--config", str(config)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("streamguard: error: server.tls:")


def write_config(tmp_path, cert, key):
    path = tmp_path / "tls.toml"
    path.write_text(f'[server]\ntls_cert = "{cert}"\ntls_key = "{key}"\n')
    return path


# ---------------------------------------------------------------- limits


async def test_calls_per_client_address(make_daemon):
    daemon = await make_daemon(limits={"max_calls_per_client": 1})
    base = f"ws://127.0.0.1:{daemon.port}"
    meta = json.dumps({"call_id": "one", "sample_rate": 8000, "encoding": "pcm_s16le"})
    async with connect(f"{base}/ingest") as first, connect(f"{base}/alerts"):
        await first.send(meta)
        while daemon.router.calls_from("127.0.0.1") < 1:
            await asyncio.sleep(0.01)
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"{base}/twilio"):
                pass
        assert info.value.response.status_code == 429
        assert info.value.response.headers["Retry-After"] == "5"
    while daemon.router.calls_from("127.0.0.1"):
        await asyncio.sleep(0.01)
    async with connect(f"{base}/ingest"):  # the slot is free again
        pass
    assert sample(daemon, "requests_refused_total", surface="twilio", reason="per_client") == 1


async def test_a_call_over_max_calls_is_closed_1013_and_the_open_one_goes_on(make_daemon, speech):
    daemon = await make_daemon(limits={"max_calls": 1})
    base = f"ws://127.0.0.1:{daemon.port}"
    rate, audio = short(speech, 5.0)
    first_frames = list(native_frames(audio, rate, call_id="first"))
    async with Subscriber(f"{base}/alerts") as sub, connect(f"{base}/ingest") as first:
        await first.send(first_frames[0][1])  # the first call is open...
        while len(daemon.registry.sessions) < 1:
            await asyncio.sleep(0.01)
        second = await send_frames(f"{base}/ingest", native_frames(audio, rate, call_id="second"))
        for _, frame in first_frames[1:]:  # ... and goes on to its end
            await first.send(frame)
        (ended,) = await sub.wait_call_ended()
    assert second.close_code == 1013 and second.close_reason == "call limit reached (1 open calls)"
    assert ended["call_id"] == "first" and ended["reason"] == "stop"
    assert [e["call_id"] for e in sub.of_type("call_started")] == ["first"]
    assert sample(daemon, "source_rejects_total", source="native", reason="capacity") == 1


async def test_a_call_over_max_call_seconds_is_closed_1008_and_ends_limit(make_daemon, speech):
    daemon = await make_daemon(limits={"max_call_seconds": 2.0})
    base = f"ws://127.0.0.1:{daemon.port}"
    rate, audio = short(speech, 5.0)
    async with Subscriber(f"{base}/alerts") as sub:
        result = await send_frames(f"{base}/ingest", native_frames(audio, rate, call_id="long"))
        (ended,) = await sub.wait_call_ended()
    assert (result.close_code, result.close_reason) == (1008, "call length limit reached")
    assert ended["call_id"] == "long" and ended["reason"] == "limit"
    # the call ends at the limit: audio the feed sent after it is not part of the call
    assert ended["summary"]["duration"] == pytest.approx(2.0, abs=0.05)


async def test_a_feed_without_audio_is_closed_idle(make_daemon, speech):
    daemon = await make_daemon(limits={"idle_timeout_seconds": 0.5})
    base = f"ws://127.0.0.1:{daemon.port}"
    rate, audio = short(speech, 1.0)
    frames = [f for _, f in native_frames(audio, rate, call_id="quiet")][:-1]  # never says stop
    async with Subscriber(f"{base}/alerts") as sub, connect(f"{base}/ingest") as ws:
        for frame in frames:
            await ws.send(frame)
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            while time.monotonic() - started < 10:  # text that is not audio keeps nothing alive
                await ws.send(json.dumps({"event": "keepalive"}))
                await asyncio.sleep(0.05)
        (ended,) = await sub.wait_call_ended()
    assert ws.close_code == 1008 and ws.close_reason.startswith("idle: no audio for 0.5 s")
    assert time.monotonic() - started >= 0.4
    assert ended["call_id"] == "quiet" and ended["reason"] == "idle"
    assert sample(daemon, "source_rejects_total", source="native", reason="idle") == 1


async def test_a_handshake_that_never_finishes_is_dropped_and_counted(make_daemon):
    daemon = await make_daemon(limits={"handshake_timeout_seconds": 0.5})
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
    writer.write(b"GET /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # ... and never the rest
    await writer.drain()
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed without an answer
    assert 0.4 <= time.monotonic() - started < 5
    writer.close()
    assert sample(daemon, "handshake_timeouts_total") == 1


async def test_a_fast_feed_is_slowed_not_cut(make_daemon, speech):
    daemon = await make_daemon(limits={"max_messages_per_second": 100})
    base = f"ws://127.0.0.1:{daemon.port}"
    rate, audio = short(speech, 5.0)  # 250 frames of 20 ms + 2 text frames
    async with Subscriber(f"{base}/alerts") as sub:
        result = await send_frames(f"{base}/ingest", native_frames(audio, rate, call_id="fast"))
        (ended,) = await sub.wait_call_ended()
    assert result.close_code == 1000 and ended["reason"] == "stop"
    assert ended["summary"]["duration"] == pytest.approx(5.0, abs=0.05)  # every frame read
    assert result.wall_seconds >= 1.2  # (252 - 100 burst) / 100 per second
    assert sample(daemon, "feed_throttled_seconds_total", source="native") > 0.3


async def test_an_oversized_message_closes_1009_and_ends_the_call(make_daemon, speech):
    daemon = await make_daemon(server={"max_message_bytes": 4096})
    base = f"ws://127.0.0.1:{daemon.port}"
    meta = json.dumps({"call_id": "big", "sample_rate": 8000, "encoding": "pcm_s16le"})
    async with Subscriber(f"{base}/alerts") as sub, connect(f"{base}/ingest") as ws:
        await ws.send(meta)
        await ws.send(bytes(320))
        await ws.send(bytes(10_000))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        (ended,) = await sub.wait_call_ended()
    assert ws.close_code == 1009
    assert ended["call_id"] == "big" and ended["reason"] == "error"
    assert sample(daemon, "source_rejects_total", source="native", reason="too_big") == 1


# ---------------------------------------------------------------- RTP admission


def rtp_stream(ssrc: int, n: int, pt: int = 0) -> list[bytes]:
    return [RtpPacket(pt, i, i * 160, ssrc, bytes([0xFF]) * 160).to_bytes() for i in range(n)]


async def rtp_daemon(make_daemon, **rtp):
    return await make_daemon(
        sources={
            "rtp": {
                "enabled": True,
                "host": "127.0.0.1",
                "port": 0,
                "idle_timeout_seconds": 0.5,
                **rtp,
            }
        }
    )


def refused(daemon, reason: str) -> float:
    return sample(daemon, "rtp_packets_refused_total", reason=reason)


def judged(daemon) -> float:
    """RTP datagrams the daemon has read so far: taken, or refused for any reason."""
    reasons = ("not_allowed", "rate", "ssrcs")
    return daemon.rtp.demux.stats.datagrams + sum(refused(daemon, r) for r in reasons)


async def send_udp(daemon, packets: list[bytes], chunk: int = 25) -> None:
    """Loopback UDP in chunks, each once the daemon has read the one before: readiness, not a
    pace (a burst beyond the socket's receive buffer would be lost, a sleep is load-bound)."""
    start = judged(daemon)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(0, len(packets), chunk):
            for data in packets[i : i + chunk]:
                sock.sendto(data, ("127.0.0.1", daemon.rtp_port))
            sent = min(i + chunk, len(packets))
            await until(lambda n=sent: judged(daemon) - start >= n, interval=0.005)


async def test_rtp_from_outside_the_allow_list_is_never_read(make_daemon):
    daemon = await rtp_daemon(make_daemon, allow=["10.0.0.0/8"])
    await send_udp(daemon, rtp_stream(0x1234, 50))
    assert refused(daemon, "not_allowed") == 50
    assert daemon.rtp.demux.stats.datagrams == 0 and not daemon.registry.sessions


async def test_rtp_ssrcs_per_sender_are_limited(make_daemon):
    # the packet-rate limit well out of the way: only the SSRC rule refuses here
    daemon = await rtp_daemon(make_daemon, max_ssrcs_per_sender=2, max_packets_per_second=1e6)
    base = f"ws://127.0.0.1:{daemon.port}"
    async with Subscriber(f"{base}/alerts") as sub:
        streams = [rtp_stream(s, 20) for s in range(1, 6)]
        interleaved = [p for group in zip(*streams, strict=True) for p in group]
        await send_udp(daemon, interleaved)
        ended = await sub.wait_call_ended(count=2)
    assert len({e["call_id"] for e in ended}) == 2 and len(sub.of_type("call_started")) == 2
    assert refused(daemon, "ssrcs") == 60 and daemon.rtp.demux.stats.datagrams == 40


async def test_rtp_packet_rate_is_limited_per_sender(make_daemon):
    daemon = await rtp_daemon(make_daemon, max_packets_per_second=50)
    started = time.monotonic()
    await send_udp(daemon, rtp_stream(7, 300))
    elapsed = time.monotonic() - started
    taken = daemon.rtp.demux.stats.datagrams
    assert refused(daemon, "rate") + taken == 300  # each one read, then judged
    # a one-second burst (50) at once, then 50 per second: whatever the machine's load made
    # of the sending time, no more got through
    assert 50 <= taken <= 50 + 50 * elapsed + 1
