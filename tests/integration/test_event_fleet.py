"""The Redis Streams fleet backend against a real redis-server: fleet-wide seq, every node
serves every node's events, outage with a bounded on-disk spool, recovery in order."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from streamguard.alerts.bus import AlertBus
from streamguard.alerts.events import CallStarted, Score
from streamguard.alerts.follow import follow
from streamguard.alerts.redis_backend import RedisBackend
from streamguard.alerts.store import EventStore
from streamguard.config import EventsSettings
from streamguard.metrics import Metrics

from .conftest import until

pytestmark = pytest.mark.integration


class Node:
    """What a daemon wires: a bus and a Redis backend behind it."""

    def __init__(self, redis_url, tmp_path, name, **events):
        self.metrics = Metrics()
        self.bus = AlertBus(name, metrics=self.metrics)
        settings = EventsSettings(
            backend="redis",
            redis_url=redis_url,
            path=str(tmp_path / f"{name}.db"),
            **events,
        )
        self.backend = RedisBackend(settings, metrics=self.metrics)

    async def __aenter__(self):
        await self.backend.start(self.bus)
        return self

    async def __aexit__(self, *exc):
        await self.backend.close()

    def score(self, call, i):
        self.bus.publish(
            Score(
                call_id=call, track="0", source="native", start=i, end=i + 4, p_fake=0.5,
                smoothed=0.5,
            )
        )  # fmt: skip


async def collect(agen, n, timeout=15):
    got = []

    async def run():
        async for event in agen:
            got.append(event)
            if len(got) >= n:
                return

    try:
        await asyncio.wait_for(run(), timeout)
    except TimeoutError:
        raise AssertionError(f"only {[e.seq for e in got]} within {timeout} s") from None
    return got


async def test_two_nodes_share_one_gap_free_stream_and_each_serves_all(redis_server, tmp_path):
    async with (
        Node(redis_server.url, tmp_path, "a") as a,
        Node(redis_server.url, tmp_path, "b") as b,
    ):
        live_a = follow(a.bus, a.backend)
        live_b = follow(b.bus, b.backend)
        first_a = asyncio.create_task(collect(live_a, 200))
        first_b = asyncio.create_task(collect(live_b, 200))
        await asyncio.sleep(0.1)
        for i in range(100):  # interleaved publishing on both nodes
            a.score("A", i)
            b.score("B", i)
            if i % 10 == 0:
                await asyncio.sleep(0)
        got_a, got_b = await first_a, await first_b
        # replay from any node, from any seq
        replay = await collect(follow(b.bus, b.backend, since=150), 50)

        raw = await aioredis.from_url(redis_server.url).xrange("streamguard:events")
    assert [e.seq for e in got_a] == list(range(1, 201))
    assert [e.to_json() for e in got_a] == [e.to_json() for e in got_b]
    assert {e.call_id for e in got_a} == {"A", "B"}
    # each node's own events keep their order within the fleet order
    assert [e.start for e in got_a if e.call_id == "A"] == list(range(100))
    assert [e.seq for e in replay] == list(range(151, 201))
    # one entry per event, id <seq>-0, one field "event" holding exactly what /alerts sends
    assert [i.decode() for i, _ in raw] == [f"{n}-0" for n in range(1, 201)]
    assert all(list(f) == [b"event"] for _, f in raw)
    assert [f[b"event"].decode() for _, f in raw] == [e.to_json() for e in got_a]
    assert json.loads(raw[0][1][b"event"])["seq"] == 1


@pytest.mark.slow
async def test_outage_spools_on_disk_then_drains_in_order(redis_server, tmp_path):
    async with Node(redis_server.url, tmp_path, "a") as a:
        listener = follow(a.bus, a.backend)
        heard = asyncio.create_task(collect(listener, 30, timeout=30))
        await asyncio.sleep(0.1)
        for i in range(10):
            a.score("A", i)
        while a.bus.last_seq < 10:
            await asyncio.sleep(0.01)

        redis_server.stop()  # outage: scoring goes on, events are spooled
        for i in range(10, 30):
            a.score("A", i)
            await asyncio.sleep(0.01)
        while a.backend.spooled < 20:
            await asyncio.sleep(0.05)
        assert a.backend.health()["degraded"] is True
        assert a.metrics.registry.get_sample_value("streamguard_events_backend_up") == 0
        assert a.metrics.registry.get_sample_value("streamguard_events_spooled") == 20
        assert a.bus.last_seq == 10  # nobody saw a spooled event: it has no seq yet

        redis_server.start()  # back: the spool drains, oldest first
        got = await heard
        while a.backend.spooled:  # the spool row count is updated just after the append
            await asyncio.sleep(0.01)
        assert a.backend.health()["degraded"] is False
    assert [e.seq for e in got] == list(range(1, 31))
    assert [e.start for e in got] == list(range(30))


@pytest.mark.slow
async def test_spool_bound_counts_what_it_loses(redis_server, tmp_path):
    async with Node(redis_server.url, tmp_path, "a", spool_max_events=5) as a:
        redis_server.stop()
        for i in range(12):
            a.score("A", i)
            await asyncio.sleep(0.01)
        while a.backend.spooled + a.backend.lost < 12:
            await asyncio.sleep(0.05)
        lost = a.metrics.registry.get_sample_value(
            "streamguard_events_spool_lost_total", {"type": "score"}
        )
        redis_server.start()
        got = await collect(follow(a.bus, a.backend, since=0), 5)
    assert a.backend.lost == 7 and lost == 7
    assert [e.start for e in got] == [0, 1, 2, 3, 4]  # the first five, in order


@pytest.mark.slow
async def test_a_node_started_while_redis_is_down_catches_up(redis_server, tmp_path):
    async with Node(redis_server.url, tmp_path, "a") as a:
        a.bus.publish(CallStarted(call_id="X", track=None, source="native"))
        while a.bus.last_seq < 1:
            await asyncio.sleep(0.01)
    redis_server.stop()
    async with Node(redis_server.url, tmp_path, "b") as b:
        b.score("B", 0)
        await asyncio.sleep(0.3)
        assert b.backend.health()["degraded"] is True
        redis_server.start()
        got = await collect(follow(b.bus, b.backend, since=0), 2)
    assert [(e.seq, e.call_id) for e in got] == [(1, "X"), (2, "B")]


async def test_two_daemons_one_fleet_a_subscriber_on_either_sees_both_calls(
    make_daemon, redis_server, tmp_path, fixtures_dir
):
    from streamguard.audio.file import read_audio
    from streamguard.client import send_frames
    from streamguard.sources.senders import native_frames

    from .conftest import Subscriber

    def fleet(name):
        return {"backend": "redis", "redis_url": redis_server.url, "path": str(tmp_path / name)}

    a = await make_daemon(events=fleet("a.db"))
    b = await make_daemon(events=fleet("b.db"))
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    mono = mono[:, : 6 * rate]
    async with (
        Subscriber(f"ws://127.0.0.1:{a.port}/alerts") as on_a,
        Subscriber(f"ws://127.0.0.1:{b.port}/alerts?types=call_ended") as on_b,
    ):
        await asyncio.gather(
            send_frames(f"ws://127.0.0.1:{a.port}/ingest", native_frames(mono, rate, call_id="A")),
            send_frames(f"ws://127.0.0.1:{b.port}/ingest", native_frames(mono, rate, call_id="B")),
        )
        await on_a.wait_call_ended(2)
        await on_b.wait_call_ended(2)
    seqs = [e["seq"] for e in on_a.events]
    assert seqs == list(range(1, len(seqs) + 1))  # one fleet-wide numbering, no gap
    assert {e["call_id"] for e in on_a.of_type("call_started")} == {"A", "B"}
    assert [e["seq"] for e in on_b.events] == [e["seq"] for e in on_a.of_type("call_ended")]
    health = b.health().to_dict()
    assert health["status"] == "ready" and health["events"]["backend"] == "redis"


async def test_healthz_and_metrics_say_degraded_while_redis_is_down(
    make_daemon, redis_server, tmp_path
):
    import urllib.request

    daemon = await make_daemon(
        events={"backend": "redis", "redis_url": redis_server.url, "path": str(tmp_path / "a.db")}
    )
    redis_server.stop()
    daemon.bus.publish(CallStarted(call_id="X", track=None, source="native"))
    for _ in range(200):
        if daemon.health().status == "degraded":
            break
        await asyncio.sleep(0.05)

    def get(path):
        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}{path}", timeout=5) as r:
            return r.status, r.read().decode()

    status, body = await asyncio.to_thread(get, "/healthz")
    _, metrics = await asyncio.to_thread(get, "/metrics")
    health = json.loads(body)
    assert status == 200 and health["status"] == "degraded"
    assert health["events"]["degraded"] is True and health["events"]["spooled"] == 1
    assert "streamguard_events_backend_up 0.0" in metrics
    assert "streamguard_events_spooled 1.0" in metrics
    redis_server.start()
    for _ in range(200):
        if daemon.health().status == "ready" and daemon.bus.last_seq == 1:
            break
        await asyncio.sleep(0.05)
    assert daemon.health().status == "ready" and daemon.bus.last_seq == 1


async def test_events_command_reads_the_stream_and_one_node_delivers_each_webhook(
    redis_server, tmp_path, capsys
):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from streamguard.cli import main as cli_main
    from streamguard.config import WebhookSettings
    from streamguard.webhooks.delivery import WebhookDeliverer

    keys: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            keys.append(self.headers["Idempotency-Key"])
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = WebhookSettings(url=f"http://127.0.0.1:{receiver.server_address[1]}/h", secret="s")
    try:
        async with (
            Node(redis_server.url, tmp_path, "a") as a,
            Node(redis_server.url, tmp_path, "b") as b,
        ):
            deliverers = [WebhookDeliverer(hook, n.bus, n.backend) for n in (a, b)]
            tasks = [asyncio.create_task(d.run()) for d in deliverers]
            # one holds the lease and has set its cursor: events from now on are its to send
            await until(lambda: any(d.cursor is not None for d in deliverers))
            for i in range(10):
                (a if i % 2 else b).score("C", i)
            # the receiver logs a key before the sender has read the 200 and counted it
            await until(lambda: len(keys) >= 10 and sum(d.delivered for d in deliverers) >= 10)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        receiver.shutdown()
        receiver.server_close()
    assert keys == [str(n) for n in range(1, 11)]  # each event once, in fleet order
    # and nothing else was sent: one node delivered all ten, the other (no lease) none
    assert sorted(d.delivered for d in deliverers) == [0, 10]

    args = ["events", "--backend", "redis", "--redis-url", redis_server.url]
    capsys.readouterr()  # forget the log lines so far
    assert await asyncio.to_thread(cli_main, [*args, "--json", "--since", "7"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [8, 9, 10]
    assert await asyncio.to_thread(cli_main, [*args, "--tail", "2"]) == 0
    assert capsys.readouterr().out.count("score") == 2


async def test_one_event_that_cannot_be_written_or_read_stops_no_other(redis_server, tmp_path):
    """Issue #21 finding 1, the fleet's side: an event that cannot be serialised made the
    sender spool it, fail again and die (nothing appended after it); a stream entry that is
    not an event killed each node's reader. Now the one is set aside and the other skipped."""
    async with (
        Node(redis_server.url, tmp_path, "a") as a,
        Node(redis_server.url, tmp_path, "b") as b,
    ):
        got = asyncio.create_task(collect(follow(b.bus, b.backend), 3))
        await asyncio.sleep(0.1)
        a.score("A", 0)
        poison = CallStarted(call_id="bad", track=None, source="native", metadata={"a": "\ud800"})
        a.backend._submit(poison, "2025-01-31T12:00:00.000Z", "a")  # as publish hands it over
        a.score("A", 1)
        await a.backend.flush()
        raw = aioredis.from_url(redis_server.url)
        (top,) = await raw.xrevrange("streamguard:events", "+", "-", count=1)
        newest = int(top[0].decode().split("-")[0])
        await raw.xadd("streamguard:events", {"event": b"not an event"}, id=f"{newest + 1}-0")
        await raw.aclose()
        a.score("A", 2)
        events = await got
        assert [(e.call_id, e.start) for e in events] == [("A", 0), ("A", 1), ("A", 2)]
        assert events[2].seq == events[1].seq + 2  # the unreadable entry kept its place
        assert (a.backend.rejected, b.backend.rejected) == (2, 1)  # a wrote and read; b read
        assert a.backend.health()["degraded"] is False and b.backend.health()["degraded"] is False
        rejected = a.metrics.registry.get_sample_value
        assert rejected("streamguard_events_rejected_total", {"type": "call_started"}) == 1
        assert rejected("streamguard_events_rejected_total", {"type": "unreadable"}) == 1
    spool = EventStore(tmp_path / "a.db", readonly=True)
    assert [(t, c) for t, c, _ in spool.rejected_events()] == [("call_started", "bad")]


async def test_a_spool_locked_by_another_daemon_is_one_line_and_exit_2(
    make_daemon, redis_server, tmp_path, tiny_model_dir
):
    """A second ``streamguard serve`` pointed at a running daemon's spool file: the Redis
    backend cannot start, and the process ends with the event log's one line (exit 2), not a
    traceback from closing a backend that never started (issue #22)."""
    import subprocess
    import sys

    spool = tmp_path / "shared.db"
    fleet = {"backend": "redis", "redis_url": redis_server.url, "path": str(spool)}
    await make_daemon(events=fleet)
    config = tmp_path / "second.toml"
    config.write_text(
        f'[events]\nbackend = "redis"\nredis_url = "{redis_server.url}"\npath = "{spool}"\n'
    )
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "streamguard.cli", "serve", "--config", str(config),
         "--model", str(tiny_model_dir), "--port", "0", "--rtp-port", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "in use by another streamguard daemon" in proc.stderr
    assert "Traceback" not in proc.stderr and "Set of Tasks" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "in use by another" in line]
    assert len(errors) == 1, proc.stderr
