"""Genesys Cloud AudioHook into the real daemon over a real WebSocket on loopback.

The client (tests/audiohook_client.py) is written from the AudioHook specification and uses its
sample API key and client secret; it streams a real stereo call (8 kHz PCMU, 200 ms frames).
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid

import pytest
import soundfile as sf
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.audiohook_client import (
    SAMPLE_API_KEY,
    SAMPLE_CLIENT_SECRET,
    STEREO,
    AudioHookClient,
    pcmu_frames,
    signed_headers,
)

from .conftest import Subscriber

pytestmark = pytest.mark.integration

AUDIOHOOK = {
    "audiohook": {
        "enabled": True,
        "api_key": SAMPLE_API_KEY,
        "client_secret": SAMPLE_CLIENT_SECRET,
    }
}


async def rejects(port: int) -> float:
    """streamguard_source_rejects_total for AudioHook, read from the daemon's /metrics."""
    url = f"http://127.0.0.1:{port}/metrics"
    raw = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    text = raw.decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("streamguard_source_rejects_total{") and 'source="audiohook"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_signed_stereo_session_scores_both_channels_and_closes_cleanly(
    make_daemon, fixtures_dir
):
    daemon = await make_daemon(sources=AUDIOHOOK)
    url = f"ws://127.0.0.1:{daemon.port}/audiohook"
    audio, rate = sf.read(fixtures_dir / "speech_stereo_8k.wav", dtype="float32")
    assert rate == 8000 and audio.shape[1] == 2
    session, conversation = str(uuid.uuid4()), str(uuid.uuid4())
    async with Subscriber(f"ws://127.0.0.1:{daemon.port}/alerts") as sub:
        async with AudioHookClient(url, signed_headers(url, session_id=session), session) as c:
            opened = await c.open(conversation)
            assert opened["parameters"]["media"] == [STEREO]
            for i, frame in enumerate(pcmu_frames(audio.T.copy())):
                await c.send_audio(frame, channels=2)
                if i == 10:
                    await c.ping()
            closed = await c.close("end")
            assert closed["clientseq"] == c.seq
            code, _ = await c.closed_by_server()
        assert code == 1000
        (ended,) = await sub.wait_call_ended()

    (started,) = sub.of_type("call_started")
    assert started["call_id"] == conversation and started["source"] == "audiohook"
    assert started["metadata"]["sessionId"] == session
    assert started["metadata"]["participant"]["ani"] == "[redacted]"
    assert "+1-555" not in json.dumps(sub.events)
    scored = {e["track"] for e in sub.of_type("score")}
    assert scored == {"external", "internal"}
    assert ended["reason"] == "stop" and set(ended["tracks"]) == {"external", "internal"}
    assert ended["summary"]["duration"] == pytest.approx(6.0, abs=0.05)
    assert [m["type"] for m in c.received] == ["opened", "pong", "closed"]
    assert await rejects(daemon.port) == 0


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"api_key": "V3JvbmdLZXlXcm9uZ0tleQ=="}, 401),  # wrong X-API-KEY
        ({"client_secret": "V3JvbmdTZWNyZXRXcm9uZ1NlY3JldA=="}, 401),  # bad signature
        ({"client_secret": None}, 401),  # unsigned, but the daemon has a secret
        ({"created": 1_000_000_000}, 401),  # a signature from 2001
    ],
)
async def test_wrong_key_or_bad_signature_is_refused_at_the_handshake_and_counted(
    make_daemon, change, status
):
    daemon = await make_daemon(sources=AUDIOHOOK)
    url = f"ws://127.0.0.1:{daemon.port}/audiohook"
    headers = signed_headers(url, session_id=str(uuid.uuid4()), **change)
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, additional_headers=headers):
            pass
    assert info.value.response.status_code == status
    assert await rejects(daemon.port) == 1
    assert daemon.registry is not None and not daemon.registry.sessions


async def test_protocol_violation_gets_a_disconnect_and_ends_the_call(make_daemon, fixtures_dir):
    daemon = await make_daemon(sources=AUDIOHOOK)
    url = f"ws://127.0.0.1:{daemon.port}/audiohook"
    audio, _ = sf.read(fixtures_dir / "speech_stereo_8k.wav", dtype="float32")
    session, conversation = str(uuid.uuid4()), str(uuid.uuid4())
    async with Subscriber(f"ws://127.0.0.1:{daemon.port}/alerts") as sub:
        async with AudioHookClient(url, signed_headers(url, session_id=session), session) as c:
            await c.open(conversation)
            await c.send_audio(pcmu_frames(audio.T.copy())[0], channels=2)
            c.seq += 1  # skip a sequence number
            await c.send("ping")
            disconnect = await c.expect("disconnect")
            code, reason = await c.closed_by_server()
        (ended,) = await sub.wait_call_ended()
    assert disconnect["parameters"]["reason"] == "error"
    assert "out of order" in disconnect["parameters"]["info"]
    assert code == 1008 and "out of order" in reason
    assert ended["call_id"] == conversation and ended["reason"] == "error"


async def test_audiohook_is_off_by_default(make_daemon):
    daemon = await make_daemon()
    url = f"ws://127.0.0.1:{daemon.port}/audiohook"
    with pytest.raises(InvalidStatus) as info:
        async with connect(
            url, additional_headers=signed_headers(url, session_id=str(uuid.uuid4()))
        ):
            pass
    assert info.value.response.status_code == 404
    await asyncio.sleep(0)
