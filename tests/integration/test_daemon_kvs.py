"""Amazon Connect into the real daemon: the Connect Lambda POSTs /api/kvs/streams, the daemon
reads the stream with boto3 from tests/kvs_server.py and scores both tracks.

Not AWS: tests/kvs_server.py is a stand-in on 127.0.0.1 with the GetDataEndpoint/GetMedia
request and response shapes, serving Matroska fragments made by ffmpeg from real speech with
Connect's layout (tracks AUDIO_FROM_CUSTOMER / AUDIO_TO_CUSTOMER, the ContactId and GetMedia
tags: tests/fixtures/make_kvs_fixtures.py). The Lambda is deploy/aws/connect_lambda/handler.py
itself, called with a Connect contact-flow event.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import structlog

from streamguard.sources.mkv import EBML_HEADER, encode_element
from tests.integration.test_kvs_reader import (  # the same stream, and boto3's env-only chain
    ARN,
    CONNECT,
    CONTACT,
    SECRET_KEY,
    aws_environment,  # noqa: F401  (autouse fixture)
)
from tests.kvs_server import KvsTestServer
from tests.unit.test_kvs import block, mini_fragment

from .conftest import Subscriber, until

pytest.importorskip("boto3")
pytestmark = pytest.mark.integration

TOKEN = "kvs-api-token-0123456789"
LAMBDA = Path(__file__).resolve().parents[2] / "deploy" / "aws" / "connect_lambda" / "handler.py"
OTHER_ARN = ARN.replace("connect-contact-d111f871", "connect-contact-0ther")


def load_lambda():
    spec = importlib.util.spec_from_file_location("connect_lambda_handler", LAMBDA)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def connect_event(contact: str, arn: str, fragment: str) -> dict:
    """The contact-flow event an Invoke AWS Lambda block sends after Start media streaming."""
    audio = {"StreamARN": arn, "StartTimestamp": "1571360125131", "StopTimestamp": None,
             "StartFragmentNumber": fragment}  # fmt: skip
    streams = {"Customer": {"Audio": audio}}
    contact_data = {"ContactId": contact, "Channel": "VOICE", "MediaStreams": streams}
    return {"Details": {"ContactData": contact_data, "Parameters": {}}, "Name": "ContactFlowEvent"}


async def run_lambda(monkeypatch, daemon, event) -> dict:
    monkeypatch.setenv("STREAMGUARD_URL", f"http://127.0.0.1:{daemon.port}")
    monkeypatch.setenv("STREAMGUARD_INGEST_TOKEN", TOKEN)
    monkeypatch.delenv("STREAMGUARD_TOKEN_SECRET_ARN", raising=False)
    return await asyncio.to_thread(load_lambda().handler, event)


async def post(daemon, body, *, token: str | None = TOKEN, raw: bytes | None = None):
    """(status, JSON answer) of POST /api/kvs/streams over a real HTTP client."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{daemon.port}/api/kvs/streams",
        data=raw if raw is not None else json.dumps(body).encode(),
        method="POST",
        headers=headers,
    )

    def call():
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            text = exc.read()
            return exc.code, json.loads(text) if text.startswith(b"{") else text.decode()

    return await asyncio.to_thread(call)


@pytest.fixture
def kvs_server():
    servers = []

    def make(**kw):
        server = KvsTestServer(CONNECT, stream_arn=ARN, inclusive=True, **kw)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def kvs(server, **section):
    sources = {"kvs": {"enabled": True, "endpoint_url": server.url, "idle_timeout_seconds": 1.0,
                       **section}}  # fmt: skip
    return {"sources": sources, "auth": {"token": TOKEN}}


def alerts(daemon) -> str:
    return f"ws://127.0.0.1:{daemon.port}/alerts?token={TOKEN}"


async def test_a_connect_call_through_the_lambda_scores_both_tracks_and_ends(
    make_daemon, kvs_server, monkeypatch
):
    server = kvs_server(pace=0.3)  # six ~1 s fragments, faster than live
    daemon = await make_daemon(**kvs(server))
    event = connect_event(CONTACT, ARN, server.fragments[0][0])
    with structlog.testing.capture_logs() as logs:
        async with Subscriber(alerts(daemon)) as sub:
            assert await run_lambda(monkeypatch, daemon, event) == {
                "streamguard": "accepted",
                "status": "202",
            }
            # the Lambda again (a retried contact flow): that stream is being read
            assert (await run_lambda(monkeypatch, daemon, event))[
                "streamguard"
            ] == "already_reading"
            (ended,) = await sub.wait_call_ended()

    (started,) = sub.of_type("call_started")
    assert started["call_id"] == CONTACT and started["source"] == "kvs"
    assert started["metadata"]["stream_arn"] == ARN
    assert {e["track"] for e in sub.of_type("score")} == {"inbound", "outbound"}
    assert ended["reason"] == "idle" and set(ended["tracks"]) == {"inbound", "outbound"}
    assert ended["summary"]["duration"] == pytest.approx(6.0, abs=0.05)
    assert server.get_media_requests()[0]["body"]["StartSelector"] == {
        "StartSelectorType": "FRAGMENT_NUMBER",
        "AfterFragmentNumber": server.fragments[0][0],
    }
    assert all(r["signed"] for r in server.requests)
    await until(lambda: not daemon.listeners["kvs"].streams)
    assert await get_streams(daemon) == {"streams": []}
    assert SECRET_KEY not in repr(logs) and TOKEN not in repr(logs)


async def get_streams(daemon) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{daemon.port}/api/kvs/streams",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    raw = await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=5).read())
    return json.loads(raw)


async def test_the_api_refuses_with_one_clear_reason(make_daemon, kvs_server):
    server = kvs_server(pace=0.5)
    daemon = await make_daemon(**kvs(server, max_streams=1))
    body = {"stream_arn": ARN, "call_id": CONTACT, "start_fragment": server.fragments[0][0]}
    bad = [
        ({**body, "stream_arn": "arn:aws:s3:::bucket"}, "stream_arn must be a Kinesis Video"),
        ({"stream_arn": ARN}, "call_id must be a non-empty string"),
        ({**body, "start_selector": "NOW"}, "unknown key 'start_selector'"),
        ({**body, "start_fragment": 7}, "start_fragment must be a fragment number"),
        ({**body, "start_timestamp": "yesterday"}, "start_timestamp must be unix seconds"),
        ([body], "the body must be a JSON object"),
    ]
    for wrong, reason in bad:
        status, answer = await post(daemon, wrong)
        assert status == 400 and answer["error"].startswith(reason), answer
    assert (await post(daemon, None, raw=b"{not json"))[0] == 400
    assert (await post(daemon, body, token=None))[0] == 401
    assert (await post(daemon, body, token="wrong"))[0] == 403
    assert not daemon.listeners["kvs"].streams

    assert await post(daemon, body) == (202, {"status": "reading", "call_id": CONTACT,
                                             "stream_arn": ARN})  # fmt: skip
    status, answer = await post(daemon, body)
    assert (status, answer["error"]) == (409, "that stream is being read already")
    status, answer = await post(daemon, {**body, "stream_arn": OTHER_ARN})
    assert (status, answer["error"]) == (409, "a stream of that call_id is being read already")
    status, answer = await post(daemon, {**body, "stream_arn": OTHER_ARN, "call_id": "other"})
    assert (status, answer["error"]) == (429, "max_streams (1) streams are being read")
    assert await get_streams(daemon) == {"streams": [{"stream_arn": ARN, "call_id": CONTACT}]}


async def test_with_split_tokens_the_feeds_token_starts_a_stream_and_the_alerts_token_does_not(
    make_daemon, kvs_server
):
    """Least privilege for the Connect Lambda: starting a call's audio is a feed's act."""
    server = kvs_server()
    section = kvs(server)
    section["auth"] = {"ingest_token": TOKEN, "alerts_token": "alerts-only-token-987654"}
    daemon = await make_daemon(**section)
    body = {"stream_arn": ARN, "call_id": CONTACT, "start_fragment": server.fragments[0][0]}
    assert (await post(daemon, body, token="alerts-only-token-987654"))[0] == 403
    assert not daemon.listeners["kvs"].streams
    assert (await post(daemon, body))[0] == 202


async def test_a_drain_ends_the_call_being_read_with_its_call_ended(make_daemon, kvs_server):
    server = kvs_server(pace=1.0)  # live pace: the call is still going when the daemon stops
    daemon = await make_daemon(**kvs(server))
    body = {"stream_arn": ARN, "call_id": CONTACT, "start_fragment": server.fragments[0][0]}
    async with Subscriber(alerts(daemon)) as sub:
        assert (await post(daemon, body))[0] == 202
        await sub.wait_for(lambda events: any(e["type"] == "call_started" for e in events))
        await daemon.stop()  # what SIGTERM does (Daemon.run)
        (ended,) = await sub.wait_call_ended()
    assert ended["call_id"] == CONTACT and ended["reason"] == "shutdown"
    assert not daemon.listeners["kvs"].streams
    assert ended["summary"]["duration"] < 6.0  # cut short, not read to the end


UNKNOWN_TRACKS = mini_fragment([(1, "VIDEO", "V_MPEG4/ISO/AVC")], [block(1, 0, b"\0" * 64)])
OVERSIZED = (
    encode_element(EBML_HEADER) + b"\x18\x53\x80\x67\x01\xff\xff\xff\xff\xff\xff\xff"  # Segment
    + b"\x1f\x43\xb6\x75\x01\xff\xff\xff\xff\xff\xff\xff"  # Cluster, unknown size
    + b"\xa3\x10\x20\x00\x00" + b"\0" * 100  # a SimpleBlock declaring 2 MiB
)  # fmt: skip


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("truncated", "bad Matroska from KVS: "),
        ("oversized", "bad Matroska from KVS: SimpleBlock of 2097152 bytes exceeds the"),
        ("unknown_tracks", "no AUDIO_FROM_CUSTOMER or AUDIO_TO_CUSTOMER track in the fragment"),
    ],
)
async def test_a_bad_stream_ends_its_call_with_one_reason_and_the_daemon_goes_on(
    make_daemon, kvs_server, fault, reason
):
    server = kvs_server()
    good = list(server.fragments)
    third = good[2][1]
    bad = {
        "truncated": third[: len(third) // 2] + good[3][1],  # cut short, the next one follows
        "oversized": OVERSIZED,
        "unknown_tracks": UNKNOWN_TRACKS,
    }[fault]
    server.fragments = [*good[:2], ("1" * 47, bad)]
    daemon = await make_daemon(**kvs(server))
    body = {"stream_arn": ARN, "call_id": CONTACT, "start_fragment": good[0][0]}
    with structlog.testing.capture_logs() as logs:
        async with Subscriber(alerts(daemon)) as sub:
            assert (await post(daemon, body))[0] == 202
            (ended,) = await sub.wait_call_ended()
            assert ended["reason"] == "error"
            await until(lambda: any(e["event"] == "kvs_stream_ended" for e in logs))
            failed = [e for e in logs if e["event"] == "kvs_stream_failed"]
            assert len(failed) == 1 and failed[0]["reason"].startswith(reason), failed
            # the same stream, whole now: the daemon reads it to its end
            server.fragments = good
            await until(lambda: not daemon.listeners["kvs"].streams)
            assert (await post(daemon, body))[0] == 202
            ended = (await sub.wait_call_ended(2))[-1]
    assert ended["reason"] == "idle"
    assert {e["track"] for e in sub.of_type("score")} == {"inbound", "outbound"}


@pytest.mark.slow
async def test_sigterm_on_a_serving_process_ends_the_call_being_read(
    tmp_path, tiny_model_dir, kvs_server
):
    """``streamguard serve`` as a process: SIGTERM while a stream is read mid-response (the
    stand-in holds the response open after its last fragment) -> call_ended, exit 0."""
    from .test_serve_process import ServeProcess

    server = kvs_server(pace=0.5, hold_open=60.0)
    config = tmp_path / "streamguard.toml"
    config.write_text(
        f'[auth]\ntoken = "{TOKEN}"\n[sources.kvs]\nenabled = true\nendpoint_url = "{server.url}"\n'
    )
    serve = ServeProcess(tmp_path, tiny_model_dir, config)
    try:
        port = await asyncio.to_thread(serve.wait_port)

        class Running:
            pass

        daemon = Running()
        daemon.port = port
        body = {"stream_arn": ARN, "call_id": CONTACT, "start_fragment": server.fragments[0][0]}
        async with Subscriber(f"ws://127.0.0.1:{port}/alerts?token={TOKEN}") as sub:
            assert (await post(daemon, body))[0] == 202
            # the last fragment read (windows ending at 4 and 5 s of both tracks scored; the
            # last window waits for the call's end); the response is open, the reader in a read
            await sub.wait_for(lambda ev: sum(e["type"] == "score" for e in ev) >= 4)
            await until(lambda: server.fragments_started == len(server.fragments))
            serve.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            (ended,) = await sub.wait_call_ended()
        assert ended["call_id"] == CONTACT and ended["reason"] == "shutdown"
        assert ended["summary"]["duration"] == pytest.approx(6.0, abs=0.05)
        assert await asyncio.to_thread(serve.proc.wait, 30) == 0
        print(f"\nexit {time.monotonic() - signalled:.2f} s after SIGTERM")
        assert not [line for line in serve.lines if "Traceback" in line]
    finally:
        serve.close()
