"""Asterisk AudioSocket into the real daemon over real TCP on loopback.

The client below writes what Asterisk's app_audiosocket writes, from the protocol's
documentation: the call's UUID (kind 0x01, 16 bytes), then 20 ms frames of 8 kHz 16-bit
little-endian PCM (kind 0x10, 320 bytes each), a DTMF digit (0x03), and a hangup (0x00).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import uuid

import numpy as np
import pytest

from streamguard.audio.file import read_audio

from .conftest import Subscriber

pytestmark = pytest.mark.integration

AUDIOSOCKET = {"audiosocket": {"enabled": True, "host": "127.0.0.1", "port": 0}}


def message(kind: int, payload: bytes = b"") -> bytes:
    return struct.pack(">BH", kind, len(payload)) + payload


async def asterisk(port: int, call: uuid.UUID, pcm: bytes, *, tail: bytes = message(0x00)):
    """Play one call the way Asterisk does; returns what the server sent back (nothing)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(message(0x01, call.bytes))
    for i in range(0, len(pcm), 320):
        writer.write(message(0x10, pcm[i : i + 320]))
        if i % 32000 == 0:
            await writer.drain()
    writer.write(message(0x03, b"#") + tail)
    await writer.drain()
    back = await asyncio.wait_for(reader.read(), 10)  # the server closes; EOF
    writer.close()
    await writer.wait_closed()
    return back


async def test_asterisk_call_is_scored_and_ends_on_hangup(make_daemon, fixtures_dir):
    daemon = await make_daemon(sources=AUDIOSOCKET)
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    assert rate == 8000
    pcm = (np.clip(mono[0], -1, 1 - 2**-15) * 32768).astype("<i2").tobytes()
    call = uuid.uuid4()
    async with Subscriber(f"ws://127.0.0.1:{daemon.port}/alerts") as sub:
        back = await asterisk(daemon.audiosocket_port, call, pcm)
        (ended,) = await sub.wait_call_ended()
    assert back == b""  # a monitor never writes to Asterisk (a hangup there ends the call)
    (started,) = sub.of_type("call_started")
    assert started["call_id"] == str(call) and started["source"] == "audiosocket"
    assert started["metadata"]["remote"].startswith("127.0.0.1:")
    assert ended["reason"] == "hangup"
    assert ended["summary"]["duration"] == pytest.approx(10.0, abs=0.05)
    assert ended["summary"]["windows_scored"] == len(sub.of_type("score")) > 0


async def test_a_malformed_connection_is_closed_and_others_go_on(make_daemon, fixtures_dir):
    daemon = await make_daemon(sources=AUDIOSOCKET)
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    pcm = (np.clip(mono[0][: 3 * rate], -1, 1 - 2**-15) * 32768).astype("<i2").tobytes()
    good, bad = uuid.uuid4(), uuid.uuid4()
    async with Subscriber(f"ws://127.0.0.1:{daemon.port}/alerts") as sub:
        results = await asyncio.gather(
            asterisk(daemon.audiosocket_port, good, pcm),
            asterisk(daemon.audiosocket_port, bad, pcm[:3200], tail=b"\x42\x00\x00"),
        )
        ended = await sub.wait_call_ended(2)
    assert results == [b"", b""]
    reasons = {e["call_id"]: e["reason"] for e in ended}
    assert reasons == {str(good): "hangup", str(bad): "error"}


async def test_audiosocket_is_off_by_default(make_daemon):
    daemon = await make_daemon()
    assert daemon.audiosocket_port is None


async def test_a_peer_outside_allow_is_closed_at_once_and_counted(make_daemon):
    sources = {"audiosocket": {**AUDIOSOCKET["audiosocket"], "allow": ["10.0.0.0/8"]}}
    daemon = await make_daemon(sources=sources)
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.audiosocket_port)
    writer.write(message(0x01, uuid.uuid4().bytes))
    # closed without a word (a reset when our UUID was still unread)
    with contextlib.suppress(ConnectionResetError):
        assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert daemon.registry is not None and not daemon.registry.sessions
    text = daemon.metrics.render().decode()
    assert 'streamguard_source_rejects_total{reason="auth",source="audiosocket"} 1.0' in text
