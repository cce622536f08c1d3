"""``streamguard serve`` as a real process over a real SQLite log: ``kill -9`` mid-call and a
restart (replay holds everything a subscriber saw; the open call ends with reason ``crash``),
SIGTERM under load (no ``call_ended`` lost), and a shutdown that an unresponsive subscriber
cannot hold."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streamguard.audio.file import read_audio

from .conftest import Subscriber
from .test_serve_process import ServeProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def serve(tmp_path, name, model_dir, config_text=""):
    workdir = tmp_path / name
    workdir.mkdir()
    config = workdir / "streamguard.toml"
    config.write_text(config_text)
    return ServeProcess(workdir, model_dir, config)


def pcm16(fixtures_dir, seconds):
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    return rate, (mono[0, : int(seconds * rate)] * 32767).astype("<i2").tobytes()


async def start_call(base, call_id, rate):
    feed = await connect(f"{base}/ingest")
    await feed.send(
        json.dumps(
            {"call_id": call_id, "sample_rate": rate, "encoding": "pcm_s16le", "channels": 1}
        )
    )
    return feed


def read_log(*args):
    """``streamguard events --json`` as its own process: no daemon needed."""
    out = subprocess.run(
        [sys.executable, "-m", "streamguard.cli", "events", "--json", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


async def test_kill_9_mid_call_then_restart_replays_everything_and_ends_the_call(
    tmp_path, tiny_model_dir, fixtures_dir
):
    rate, pcm = pcm16(fixtures_dir, 8)
    first = serve(tmp_path, "first", tiny_model_dir)
    try:
        port = await asyncio.to_thread(first.wait_port)
        base = f"ws://127.0.0.1:{port}"
        async with Subscriber(f"{base}/alerts") as sub:
            feed = await start_call(base, "doomed", rate)
            for i in range(0, len(pcm), 320):
                await feed.send(pcm[i : i + 320])
            await sub.wait_for(lambda ev: sum(e["type"] == "score" for e in ev) >= 2)
            first.proc.kill()  # SIGKILL: no drain, no flush
            await asyncio.to_thread(first.proc.wait, 30)
            seen = list(sub.events)
        await feed.close()
    finally:
        first.close()
    assert seen and seen[0]["type"] == "call_started"

    second = serve(tmp_path, "second", tiny_model_dir)
    try:
        port = await asyncio.to_thread(second.wait_port)
        async with Subscriber(f"ws://127.0.0.1:{port}/alerts?since=0") as replay:
            await replay.wait_call_ended()
        second.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(second.proc.wait, 30) == 0
    finally:
        second.close()
    replayed = {e["seq"]: e for e in replay.events}
    for event in seen:  # every event a subscriber received survived the crash, identical
        assert replayed[event["seq"]] == event
    (ended,) = replay.of_type("call_ended")
    assert ended["call_id"] == "doomed" and ended["reason"] == "crash"
    assert ended["summary"]["verdict"] == "inconclusive"
    assert ended["seq"] > max(e["seq"] for e in seen)  # numbering went on across the crash
    assert [e["seq"] for e in replay.events] == sorted(replayed)


async def test_sigterm_under_load_loses_no_call_ended(tmp_path, tiny_model_dir, fixtures_dir):
    rate, pcm = pcm16(fixtures_dir, 10)
    calls = [f"load-{n}" for n in range(8)]
    proc = serve(tmp_path, "load", tiny_model_dir)
    try:
        port = await asyncio.to_thread(proc.wait_port)
        base = f"ws://127.0.0.1:{port}"
        async with Subscriber(f"{base}/alerts") as sub:
            feeds = [await start_call(base, call, rate) for call in calls]

            async def stream(feed):
                try:
                    for i in range(0, len(pcm), 320):
                        await feed.send(pcm[i : i + 320])
                        if i % 3200 == 0:
                            await asyncio.sleep(0)
                except ConnectionClosed:
                    pass  # the daemon closes the feeds when it drains

            senders = [asyncio.create_task(stream(f)) for f in feeds]

            def every_call_scored(events) -> bool:  # mid-call: all open, all scoring
                return {e["call_id"] for e in events if e["type"] == "score"} == set(calls)

            await sub.wait_for(every_call_scored, timeout=120)
            proc.proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.proc.wait, 60) == 0
            await asyncio.gather(*senders)
        for feed in feeds:
            await feed.close()
    finally:
        proc.close()
    logged = await asyncio.to_thread(read_log)
    ended = {e["call_id"]: e for e in logged if e["type"] == "call_ended"}
    assert sorted(ended) == sorted(calls)
    assert {e["reason"] for e in ended.values()} == {"shutdown"}
    assert [e["seq"] for e in logged] == list(range(1, len(logged) + 1))


def handshake_and_go_silent(port: int, path: str = "/alerts") -> socket.socket:
    """A WebSocket subscriber that completes the opening handshake, then never reads again
    and never answers a close: the peer a shutdown must not wait for."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101")
    return sock


def subscribers(port: int) -> float:
    """The daemon's ``streamguard_subscribers`` gauge, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    (line,) = [x for x in text.splitlines() if x.startswith("streamguard_subscribers ")]
    return float(line.split()[1])


async def test_unresponsive_subscribers_cannot_hold_the_shutdown(tmp_path, tiny_model_dir):
    proc = serve(tmp_path, "silent", tiny_model_dir, "[alerts]\nclose_timeout_seconds = 1.0\n")
    silent = []
    try:
        port = await asyncio.to_thread(proc.wait_port)
        silent = [handshake_and_go_silent(port) for _ in range(3)]
        while await asyncio.to_thread(subscribers, port) < 3:  # all three registered
            await asyncio.sleep(0.05)
        t0 = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.proc.wait, 30)
        took = time.monotonic() - t0
    finally:
        for sock in silent:
            sock.close()
        proc.close()
    assert code == 0
    # close_timeout 1 s (websockets' default would be 10 s per connection, and a peer that
    # stopped reading can hold a close forever): the drain itself is the rest of this bound
    assert took < 8, f"shutdown took {took:.1f} s"


async def test_sigterm_with_a_subscriber_that_stopped_reading_takes_at_most_5_s(
    tmp_path, tiny_model_dir, fixtures_dir
):
    """Default close settings: two subscribers stop reading while four calls fill their
    socket buffers with a few hundred events. Issue #22 measured ~14 s; the bound is 5 s: all
    subscribers are closed at once, each within [alerts] close_timeout_seconds, and one with
    bytes still queued towards it is cut at once (it would not read a close frame). Asserted
    at 8 s for a loaded shared machine; the figure is printed (-s)."""
    rate, pcm = pcm16(fixtures_dir, 10)
    calls = [f"stalled-{n}" for n in range(4)]
    # a short hop only to make events (a few hundred) that fill the stalled sockets' buffers
    proc = serve(tmp_path, "stalled", tiny_model_dir, "[track]\nhop_seconds = 0.1\n")
    stalled = []
    try:
        port = await asyncio.to_thread(proc.wait_port)
        base = f"ws://127.0.0.1:{port}"
        stalled = [handshake_and_go_silent(port) for _ in range(2)]
        async with Subscriber(f"{base}/alerts") as sub:
            feeds = [await start_call(base, call, rate) for call in calls]
            for feed in feeds:
                for i in range(0, len(pcm), 320):
                    await feed.send(pcm[i : i + 320])
            await sub.wait_for(lambda ev: sum(e["type"] == "score" for e in ev) >= 200, 120)
            t0 = time.monotonic()
            proc.proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.proc.wait, 60)
            took = time.monotonic() - t0
            await sub.wait_call_ended(len(calls))
    finally:
        for sock in stalled:
            sock.close()
        proc.close()
    print(f"SIGTERM to exit, 2 subscribers stalled with full buffers, 4 calls: {took:.2f} s")
    assert code == 0
    assert took < 8, f"shutdown took {took:.1f} s"
