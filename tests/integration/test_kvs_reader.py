"""The KVS reader edge, boto3 against a local KVS stand-in on 127.0.0.1 (tests/kvs_server.py:
the GetDataEndpoint/GetMedia request and response shapes, not AWS) serving the Connect-like
fixture: a whole call, a dropped connection and the resume, pacing, refusals, stop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import structlog

from streamguard.sources.base import Audio, CallEnd, CallStart, sequence_problems
from streamguard.sources.edges.kvs_reader import KvsReader, region_of
from tests.kvs_server import KvsTestServer

pytest.importorskip("boto3")
pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CONNECT = FIXTURES / "kvs_connect_ffmpeg.mkv"
ARN = "arn:aws:kinesisvideo:eu-west-2:111111111111:stream/connect-contact-d111f871/1571360125131"
CONTACT = "d111f871-5fe7-40b1-b5f7-6b67060de0c2"
SECRET_KEY = "test-secret-key-never-logged-0123456789"


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch, tmp_path):
    """boto3's default chain, from the environment only (no files, no instance metadata)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTONLY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def server_factory():
    servers = []

    def make(**kw):
        server = KvsTestServer(CONNECT, stream_arn=ARN, **kw)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def speech(channel: int) -> np.ndarray:
    pcm, _ = sf.read(FIXTURES / "speech_stereo_8k.wav", dtype="int16")
    return pcm[:48000, channel].astype(np.float32) / 32768


async def run(reader: KvsReader) -> list:
    return [event async for event in reader.events()]


def audio(events, track):
    return np.concatenate([e.samples for e in events if isinstance(e, Audio) and e.track == track])


def reader_for(server, **kw) -> KvsReader:
    base = dict(stream_arn=ARN, call_id=CONTACT, contact_id=CONTACT, endpoint_url=server.url,
                idle_timeout_seconds=1.0)  # fmt: skip
    return KvsReader(**{**base, **kw})


def test_region_comes_from_the_arn():
    assert region_of(ARN) == "eu-west-2"
    assert region_of("not-an-arn") is None


async def test_a_whole_call_from_the_start_fragment_until_idle(server_factory):
    server = server_factory(inclusive=True)  # the Lambda's start fragment is included
    first = server.fragments[0][0]
    reader = reader_for(server, start_fragment=first)
    with structlog.testing.capture_logs() as logs:
        events = await run(reader)
    assert sequence_problems(events) == []
    assert isinstance(events[0], CallStart) and events[0].source == "kvs"
    assert events[0].metadata["stream_arn"] == ARN
    np.testing.assert_array_equal(audio(events, "inbound"), speech(0))
    np.testing.assert_array_equal(audio(events, "outbound"), speech(1))
    assert events[-1] == CallEnd("idle")
    calls = server.get_media_requests()
    assert calls[0]["body"]["StartSelector"] == {
        "StartSelectorType": "FRAGMENT_NUMBER",
        "AfterFragmentNumber": first,
    }
    # later calls resume after the last fragment read; the repeated one is dropped
    assert calls[1]["body"]["StartSelector"]["AfterFragmentNumber"] == server.fragments[-1][0]
    assert all(r["signed"] for r in server.requests)
    assert reader.core.last_fragment_number == server.fragments[-1][0]
    assert SECRET_KEY not in repr(logs)


async def test_dropped_connection_resumes_after_the_last_complete_fragment(server_factory):
    server = server_factory(inclusive=False)
    cut = sum(len(d) for _, d in server.fragments[:2]) + len(server.fragments[2][1]) // 2
    server.drop_after = cut  # the first response breaks off inside fragment 3
    reader = reader_for(server, start_timestamp=1726677688.724)  # Connect's StartTimestamp
    events = await run(reader)
    assert sequence_problems(events) == []
    assert server.drops == 1 and reader.stats.reconnects >= 1
    calls = server.get_media_requests()
    assert calls[0]["body"]["StartSelector"]["StartSelectorType"] == "PRODUCER_TIMESTAMP"
    assert calls[1]["body"]["StartSelector"] == {
        "StartSelectorType": "FRAGMENT_NUMBER",
        "AfterFragmentNumber": server.fragments[1][0],
    }
    np.testing.assert_array_equal(audio(events, "inbound"), speech(0))
    np.testing.assert_array_equal(audio(events, "outbound"), speech(1))
    assert events[-1] == CallEnd("idle")


async def test_get_media_calls_stay_under_five_per_second(server_factory):
    server = server_factory(inclusive=False)
    reader = reader_for(server, start_fragment=server.fragments[-1][0], idle_timeout_seconds=1.5)
    events = await run(reader)  # nothing after the last fragment: empty answers until idle
    assert events == []  # the call never started: nothing to end
    assert len(server.get_media_requests()) == reader.stats.get_media_calls >= 4
    sent = np.diff(list(reader.stats.call_times))
    assert sent.min() >= 0.21 - 1e-3, sent  # the reader's spacing: 5 % under 5 per second
    # and what the server saw (arrival times jitter a little): never 6 within a second
    times = [r["at"] for r in server.get_media_requests()]
    assert all(sum(1 for t in times if s <= t < s + 1.0) <= 5 for s in times), np.diff(times)


async def test_an_unknown_stream_is_one_clear_error(server_factory):
    server = server_factory()
    reader = reader_for(server, stream_arn=ARN.replace("1111", "2222"))
    events = await run(reader)
    assert events == []
    assert reader.error == "KVS refused the stream: ResourceNotFoundException"
    assert len(server.get_media_requests()) == 0


async def test_stop_ends_the_call(server_factory):
    import asyncio

    server = server_factory(inclusive=True, pace=0.3)
    reader = reader_for(server, start_fragment=server.fragments[0][0], idle_timeout_seconds=30)
    events = []

    async def consume():
        async for event in reader.events():
            events.append(event)
            if isinstance(event, Audio) and len(events) > 4:
                reader.stop()

    await asyncio.wait_for(consume(), 20)
    assert sequence_problems(events) == [] and events[-1] == CallEnd("stop")


async def test_a_fragment_is_read_when_it_has_arrived_not_when_the_next_one_comes(server_factory):
    """A live stream sends a fragment every second: its tail (its last blocks, the ContactId
    tag) must not wait for a read to fill up with the next fragment's bytes."""
    server = server_factory(inclusive=True, pace=2.0)
    server.fragments = server.fragments[:2]
    reader = reader_for(server, start_fragment=server.fragments[0][0], idle_timeout_seconds=5.0)
    samples, sent_when_whole = 0, None
    async for event in reader.events():
        if isinstance(event, Audio):
            samples += len(event.samples)
            if samples >= 2 * 8000:  # the first fragment: 1 s of both tracks at 8 kHz
                sent_when_whole = server.fragments_started
                reader.stop()
    assert sent_when_whole == 1


async def test_stop_cuts_short_a_read_blocked_on_a_quiet_stream(server_factory):
    """The stand-in holds the response open after its last fragment (as KVS may): the reader
    waits in a read whose timeout is the idle timeout (60 s here). stop() must not wait for it
    (a drain would hang for that long): it shuts the socket down under the read."""
    server = server_factory(inclusive=True, hold_open=120.0)
    reader = reader_for(server, start_fragment=server.fragments[0][0], idle_timeout_seconds=60.0)
    events = []

    async def consume():
        async for event in reader.events():
            events.append(event)

    task = asyncio.create_task(consume())
    # the last fragment's audio read (it completes only when the response ends, or never)
    while sum(len(e.samples) for e in events if isinstance(e, Audio)) < 2 * 6 * 8000:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # now blocked in the read of a response that sends nothing
    reader.stop()
    await asyncio.wait_for(task, 20)  # not the 60 s read timeout
    assert events[-1] == CallEnd("stop")
    assert reader.stats.get_media_calls == 1  # stopped: no new GetMedia after the cut
