"""Azure Communication Services media streaming into the real daemon over a real WebSocket.

Not Azure: no ACS account is reachable from here. The client sends the messages ACS sends, as
Microsoft's audio-streaming quickstart and the Call Automation SDKs' models shape them
(:func:`streamguard.sources.senders.acs_frames`: ``AudioMetadata``, then base64 PCM
``AudioData`` per participant, unmixed), from a real two-speaker recording, to ``/acs`` with
the ingest token in the query string, as an ACS transport URL carries it.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
import soundfile as sf
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from streamguard.sources.senders import acs_frames

from .conftest import Subscriber, until

pytestmark = pytest.mark.integration

TOKEN = "acs-ingest-token-0123456789"
CONNECTION = "421f0b00-0f7e-4e4a-9e3c-0d6a5b0c1e2f"
CALLER = "4:+15550100"  # a phone participant's raw ID: a phone number
AGENT = "8:acs:3d20e1de-0f28-41c5-a5c2-7b04d1cb1e2a_00000020-1234"


def acs(**section):
    return {"sources": {"acs": {"enabled": True, **section}}, "auth": {"ingest_token": TOKEN}}


def call_frames(fixtures_dir, participants=(CALLER, AGENT)) -> list[str]:
    audio, rate = sf.read(fixtures_dir / "speech_stereo_16k.wav", dtype="float32")
    assert rate == 16000 and audio.shape[1] == 2
    return [frame for _, frame in acs_frames(audio.T.copy(), rate, participants=list(participants))]


async def rejects(port: int, reason: str) -> float:
    """streamguard_source_rejects_total{source="acs", reason=...} from /metrics."""
    url = f"http://127.0.0.1:{port}/metrics"
    text = (await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())).decode()
    total = 0.0
    for line in text.splitlines():
        labels = 'source="acs"' in line and f'reason="{reason}"' in line
        if line.startswith("streamguard_source_rejects_total{") and labels:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_a_two_participant_call_scores_both_tracks_and_ends_when_the_socket_closes(
    make_daemon, fixtures_dir
):
    daemon = await make_daemon(**acs())
    url = f"ws://127.0.0.1:{daemon.port}/acs?token={TOKEN}"
    headers = {"x-ms-call-connection-id": CONNECTION, "x-ms-call-correlation-id": "corr-1"}
    frames = call_frames(fixtures_dir)
    async with Subscriber(f"ws://127.0.0.1:{daemon.port}/alerts") as sub:
        async with connect(url, additional_headers=headers) as ws:
            for frame in frames:
                await ws.send(frame)
        # ACS sends no stop: the call ends when it closes the socket (after its last frame)
        (ended,) = await sub.wait_call_ended()

    (started,) = sub.of_type("call_started")
    assert started["call_id"] == CONNECTION and started["source"] == "acs"
    assert started["metadata"]["correlationId"] == "corr-1"
    assert started["metadata"]["sample_rate"] == 16000
    scored = {e["track"] for e in sub.of_type("score")}
    assert scored == {"p1", "p2"}  # caller first, then the agent; never the phone number
    assert CALLER[2:] not in json.dumps(sub.events)
    assert ended["reason"] == "closed" and set(ended["tracks"]) == {"p1", "p2"}
    assert ended["summary"]["duration"] == pytest.approx(6.0, abs=0.05)
    assert await rejects(daemon.port, "auth") == 0


@pytest.mark.parametrize(
    ("token", "status"),
    [(None, 401), ("wrong-token", 403)],
)
async def test_a_missing_or_wrong_token_is_refused_at_the_handshake(make_daemon, token, status):
    daemon = await make_daemon(**acs())
    url = f"ws://127.0.0.1:{daemon.port}/acs" + (f"?token={token}" if token else "")
    with pytest.raises(InvalidStatus) as info:
        async with connect(url):
            pass
    assert info.value.response.status_code == status
    assert await rejects(daemon.port, "auth") == 1
    assert not daemon.registry.sessions


@pytest.mark.parametrize(
    ("bad", "code", "reason"),
    [
        ("participants", 1003, "more than 1 participants"),
        ("json", 1008, "message is not JSON"),
        ("base64", 1008, "audioData.data is not valid base64"),
    ],
)
async def test_bad_input_gets_one_clear_close_reason_and_the_daemon_goes_on(
    make_daemon, fixtures_dir, bad, code, reason
):
    daemon = await make_daemon(**acs(max_participants=1))
    url = f"ws://127.0.0.1:{daemon.port}/acs?token={TOKEN}"
    # unmixed: [metadata, caller, agent, caller, agent, ...]; with one participant allowed,
    # the agent's first frame is one too many
    meta, caller, agent, caller_next = call_frames(fixtures_dir)[:4]
    last = {
        "participants": agent,
        "json": caller_next[:-7],  # cut mid-message
        "base64": caller_next.replace('"data": "', '"data": "!!', 1),
    }[bad]
    async with Subscriber(f"ws://127.0.0.1:{daemon.port}/alerts") as sub:
        async with connect(url, additional_headers={"x-ms-call-connection-id": bad}) as ws:
            for frame in (meta, caller, last):
                await ws.send(frame)
            await ws.wait_closed()
        assert (ws.close_code, ws.close_reason) == (code, reason)
        (ended,) = await sub.wait_call_ended()
    assert ended["call_id"] == bad and ended["reason"] == "error"
    # the daemon still takes calls: a good one-participant call on a new connection
    good = call_frames(fixtures_dir)[0::2]  # metadata, then the agent's frames only
    async with connect(url) as ws:
        for frame in good[:50]:
            await ws.send(frame)
        await until(lambda: daemon.registry.sessions)
    await until(lambda: not daemon.registry.sessions)
