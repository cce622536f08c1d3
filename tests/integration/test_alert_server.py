"""The daemon's HTTP/WebSocket port with real sockets and real clients on 127.0.0.1.

Server: websockets ``serve`` + WebSocketRouter + make_process_request + AlertBus.
Clients: websockets.asyncio.client.connect, http.client, and the ``watch`` command.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from streamguard.alerts.bus import AlertBus
from streamguard.alerts.events import Alert, CallEnded, CallStarted, Score, parse_event
from streamguard.alerts.subscriptions import alerts_handler
from streamguard.commands.watch import format_event, subscription_url, watch
from streamguard.metrics import Metrics
from streamguard.server.health import Health, healthz_route, metrics_route
from streamguard.server.httputil import BEARER_PREFIX, select_subprotocol
from streamguard.server.router import WebSocketRouter, make_process_request

pytestmark = pytest.mark.integration
#: A bound for a broken daemon, not a speed target: `watch` is a fresh interpreter, which on
#: a loaded 2-core machine can take over 10 s to import before it subscribes.
TIMEOUT = 30


class Daemonish:
    """The pieces the daemon wires, on a free port."""

    def __init__(self, *, token=None, small_queue=4, max_connections=None):
        self.metrics = Metrics()
        self.bus = AlertBus("tiny", metrics=self.metrics, history=100)
        self.status = "ready"
        self.started = time.monotonic()

        async def ingest(connection):  # a stand-in feed handler: echo one message
            await connection.send(await connection.recv())

        self.router = WebSocketRouter(
            {
                "/alerts": alerts_handler(self.bus, max_queue=256),
                "/alerts-small": alerts_handler(self.bus, max_queue=small_queue),
                "/alerts-evicting": alerts_handler(
                    self.bus, max_queue=small_queue, disconnect_after_lost=50, close_timeout=0.5
                ),
                "/ingest": ingest,
            }
        )
        self.process_request = make_process_request(
            self.router,
            http_routes={
                "/healthz": healthz_route(self.health),
                "/metrics": metrics_route(self.metrics),
            },
            token=token,
            protected_paths={"/alerts", "/alerts-small", "/alerts-evicting", "/ingest"},
            max_connections=max_connections,
        )

    def health(self) -> Health:
        return Health(
            status=self.status,
            model="tiny",
            uptime_seconds=time.monotonic() - self.started,
            open_calls=3,
            engine_queue_depth=1,
        )

    @contextlib.asynccontextmanager
    async def running(self, *, sndbuf: int | None = None):
        # Accepted sockets inherit SO_SNDBUF from the listener (Linux), and a fixed size turns
        # off the kernel's send-buffer autotuning (up to 4 MB here), making backpressure real.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if sndbuf:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        listener.bind(("127.0.0.1", 0))
        async with serve(
            self.router,
            sock=listener,
            process_request=self.process_request,
            select_subprotocol=select_subprotocol,
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            self.server = server
            yield self

    def url(self, path="/alerts"):
        return f"ws://127.0.0.1:{self.port}{path}"

    async def until_subscribers(self, n):
        while self.bus.subscriber_count != n:
            await asyncio.sleep(0.005)

    def score(self, call="A", i=0, track="inbound"):
        return self.bus.publish(
            Score(
                call_id=call,
                track=track,
                source="twilio",
                start=i,
                end=i + 4,
                p_fake=0.9,
                smoothed=0.8,
            )
        )

    def alert(self, call="A"):
        return self.bus.publish(
            Alert(
                call_id=call,
                track="inbound",
                source="twilio",
                state="raised",
                smoothed=0.8,
                threshold=0.5,
                start=0,
                end=5,
            )
        )

    def ended(self, call="A"):
        summary = dict(
            duration=9,
            speech_seconds=8,
            windows_scored=5,
            windows_skipped=0,
            windows_dropped=0,
            max_smoothed=0.8,
            mean_smoothed=0.7,
            verdict="fake",
        )
        return self.bus.publish(
            CallEnded(call_id=call, track=None, source="twilio", summary=summary, reason="stop")
        )


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


async def read_until(ws, last_seq):
    events = []
    while True:
        event = parse_event(await ws.recv())
        events.append(event)
        if event.seq >= last_seq and event.type != "dropped":
            return events


def http_get(port, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_filtered_subscribers_get_exactly_their_events():
    async def main():
        d = Daemonish()
        async with (
            d.running(),
            connect(d.url()) as everything,
            connect(d.url() + "?call_id=B") as only_b,
            connect(d.url() + "?types=alert,call_ended") as alerts,
            connect(d.url() + "?call_id=A&types=score") as a_scores,
        ):
            await d.until_subscribers(4)
            d.bus.publish(
                CallStarted(call_id="A", track=None, source="twilio", metadata={"x": 1})
            )  # 1
            d.score("A", 0)  # 2
            d.score("B", 0)  # 3
            d.alert("A")  # 4
            d.score("A", 1)  # 5
            d.ended("A")  # 6
            d.ended("B")  # 7
            got_all = await read_until(everything, 7)
            got_b = await read_until(only_b, 7)
            got_alerts = await read_until(alerts, 7)
            got_a = await read_until(a_scores, 5)
            d.score("A", 2)  # 8: proves nothing else was queued before it for a_scores
            got_a += await read_until(a_scores, 8)
        assert [e.seq for e in got_all] == [1, 2, 3, 4, 5, 6, 7]
        assert [e.seq for e in got_b] == [3, 7]
        assert [e.seq for e in got_alerts] == [4, 6, 7]
        assert [e.seq for e in got_a] == [2, 5, 8]
        assert got_all[0].metadata == {"x": 1} and got_all[3].state == "raised"

    run(main())


def test_burst_beyond_a_small_queue_gives_one_dropped_notice_others_get_all():
    async def main():
        d = Daemonish(small_queue=4)
        async with (
            d.running(),
            connect(d.url("/alerts-small")) as slow,
            connect(d.url()) as fast,
        ):
            await d.until_subscribers(2)
            for i in range(50):  # synchronous burst: no chance to send in between
                d.score("A", i)
            got_slow = await read_until(slow, 50)
            got_fast = await read_until(fast, 50)
        assert [e.seq for e in got_fast] == list(range(1, 51))
        assert got_slow[0].type == "dropped"
        assert (got_slow[0].count, got_slow[0].first_seq, got_slow[0].last_seq) == (46, 1, 46)
        assert [e.seq for e in got_slow[1:]] == [47, 48, 49, 50]

    run(main())


def test_a_subscriber_that_stops_reading_never_slows_the_others():
    """Real backpressure: a client with a tiny socket buffer that does not read."""

    async def main():
        d = Daemonish(small_queue=8)
        n = 1000
        async with d.running(sndbuf=4096):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", d.port))
            async with (
                connect(d.url("/alerts-small"), sock=sock) as stuck,
                connect(d.url()) as fast,
            ):
                await d.until_subscribers(2)
                received = []

                async def reader():
                    received.extend(await read_until(fast, n))

                task = asyncio.create_task(reader())
                for i in range(n):
                    # random padding: permessage-deflate would shrink a repeated one to nothing
                    padding = os.urandom(1000).hex()
                    d.bus.publish(
                        CallStarted(
                            call_id=f"C{i}", track=None, source="native", metadata={"p": padding}
                        )
                    )
                    await asyncio.sleep(0)
                await task
                drops = d.metrics.registry.get_sample_value("streamguard_subscriber_drops_total")
                # now the stuck client reads: at some point it is told what it lost
                told = []
                while not told:
                    event = parse_event(await stuck.recv())
                    if event.type == "dropped":
                        told.append(event)
        assert [e.seq for e in received] == list(range(1, n + 1))
        assert drops > 0
        assert told[0].count >= 1 and told[0].first_seq <= told[0].last_seq

    run(main())


def test_a_subscriber_that_stays_behind_is_disconnected_and_memory_stays_bounded():
    """A real client that stops reading: its queue overflows into a dropped notice, then,
    50 lost events later, the daemon closes it (4001) or cuts it off; the others never wait."""

    async def main():
        d = Daemonish(small_queue=8)
        n = 600
        async with d.running(sndbuf=4096):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", d.port))
            async with (
                connect(d.url("/alerts-evicting"), sock=sock, close_timeout=0.5) as stuck,
                connect(d.url()) as fast,
            ):
                await d.until_subscribers(2)
                task = asyncio.create_task(read_until(fast, n))
                for i in range(n):
                    padding = os.urandom(1000).hex()
                    d.bus.publish(
                        CallStarted(
                            call_id=f"C{i}", track=None, source="native", metadata={"p": padding}
                        )
                    )
                    await asyncio.sleep(0)
                received = await task
                await d.until_subscribers(1)  # the stuck one is gone
                slow = d.metrics.registry.get_sample_value(
                    "streamguard_subscriber_disconnects_total", {"reason": "slow"}
                )
                # what the stuck client finds when it reads at last: the end of its stream
                with contextlib.suppress(ConnectionClosedError):
                    while True:
                        await stuck.recv()
        return received, slow, stuck

    received, slow, stuck = run(main())
    assert [e.seq for e in received] == list(range(1, 601))
    assert slow == 1
    # the close frame made it (4001 and the reason) or, buffers full, the TCP connection was cut
    assert stuck.close_code in (4001, 1006)
    if stuck.close_code == 4001:
        assert "too slow" in stuck.close_reason


def test_unknown_type_or_parameter_closes_1008_with_reason():
    async def main():
        d = Daemonish()
        reasons = []
        async with d.running():
            for query in ("?types=alert,bogus", "?callid=A", "?since=abc"):
                async with connect(d.url() + query) as ws:
                    with pytest.raises(ConnectionClosedError):
                        await ws.recv()
                    reasons.append((ws.close_code, ws.close_reason))
        return reasons

    reasons = run(main())
    assert [code for code, _ in reasons] == [1008, 1008, 1008]
    assert "bogus" in reasons[0][1] and "callid" in reasons[1][1] and "since" in reasons[2][1]


def test_since_replays_retained_events_over_the_wire():
    async def main():
        d = Daemonish()
        async with d.running():
            for i in range(5):
                d.score("A", i)
            async with connect(d.url() + "?since=2") as ws:
                return await read_until(ws, 5)

    assert [e.seq for e in run(main())] == [3, 4, 5]


def test_healthz_and_metrics_over_real_http():
    async def main():
        d = Daemonish()
        async with d.running():
            d.score("A", 0)
            ok = await asyncio.to_thread(http_get, d.port, "/healthz")
            metrics = await asyncio.to_thread(http_get, d.port, "/metrics")
            d.status = "draining"
            draining = await asyncio.to_thread(http_get, d.port, "/healthz?verbose=1")
            missing = await asyncio.to_thread(http_get, d.port, "/nope")
            plain_ws_path = await asyncio.to_thread(http_get, d.port, "/alerts")
        return ok, metrics, draining, missing, plain_ws_path

    ok, metrics, draining, missing, plain = run(main())
    status, headers, body = ok
    assert status == 200 and headers["Content-Type"] == "application/json"
    health = json.loads(body)
    assert health["status"] == "ready" and health["model"] == "tiny"
    assert health["open_calls"] == 3 and health["engine_queue_depth"] == 1
    assert health["uptime_seconds"] >= 0
    status, headers, body = metrics
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert b'streamguard_events_published_total{type="score"} 1.0' in body
    assert b"streamguard_calls_active" in body
    assert draining[0] == 503 and json.loads(draining[2])["status"] == "draining"
    assert missing[0] == 404
    assert plain[0] == 426  # a WebSocket path asked for without an upgrade


def test_token_auth_refuses_missing_and_wrong_accepts_right():
    async def main():
        d = Daemonish(token="s3cret")
        results = {}
        async with d.running():
            for name, kwargs, path in [
                ("none", {}, "/alerts"),
                ("wrong", {"additional_headers": {"Authorization": "Bearer nope"}}, "/alerts"),
                ("wrong-query", {}, "/alerts?token=nope"),
                ("ingest-none", {}, "/ingest"),
            ]:
                with pytest.raises(InvalidStatus) as info:
                    async with connect(d.url(path), **kwargs):
                        pass
                results[name] = info.value.response.status_code
            async with connect(
                d.url(), additional_headers={"Authorization": "Bearer s3cret"}
            ) as ws:
                await d.until_subscribers(1)
                d.score("A", 0)
                results["header"] = parse_event(await ws.recv()).seq
            async with connect(d.url("/alerts?token=s3cret&types=score")) as ws:
                await d.until_subscribers(1)
                d.score("A", 1)
                results["query"] = parse_event(await ws.recv()).seq
            async with connect(
                d.url("/ingest"), additional_headers={"Authorization": "Bearer s3cret"}
            ) as ws:
                await ws.send("hello")
                results["ingest"] = await ws.recv()
            results["healthz"] = (await asyncio.to_thread(http_get, d.port, "/healthz"))[0]
            status, headers, _ = await asyncio.to_thread(http_get, d.port, "/alerts")
            results["http"] = (status, headers.get("WWW-Authenticate"))
        return results

    r = run(main())
    assert r["none"] == r["ingest-none"] == 401  # nothing presented
    assert r["wrong"] == r["wrong-query"] == 403  # a wrong token presented
    assert (r["header"], r["query"], r["ingest"]) == (1, 2, "hello")
    assert r["healthz"] == 200  # probes need no secret
    assert r["http"] == (401, "Bearer")


def bearer_subprotocol(token: str) -> str:
    return BEARER_PREFIX + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def test_a_browser_carries_its_token_in_the_subprotocol_and_tail_replays_recent_events():
    """What the dashboard does: no header, no token in the URL."""

    async def main():
        d = Daemonish(token="s3cret")
        async with d.running():
            for i in range(5):
                d.score("A", i)
            with pytest.raises(InvalidStatus) as info:
                async with connect(
                    d.url(), subprotocols=["streamguard.v1", bearer_subprotocol("nope")]
                ):
                    pass
            wrong = info.value.response.status_code
            async with connect(
                d.url("/alerts?tail=2"),
                subprotocols=["streamguard.v1", bearer_subprotocol("s3cret")],
            ) as ws:
                chosen = ws.subprotocol
                replayed = [parse_event(await ws.recv()).seq for _ in range(2)]
            return wrong, chosen, replayed

    wrong, chosen, replayed = run(main())
    assert wrong == 403
    assert chosen == "streamguard.v1"  # the bearer entry is never echoed back
    assert replayed == [4, 5]


def test_max_connections_answers_503():
    async def main():
        d = Daemonish(max_connections=1)
        async with d.running(), connect(d.url()):
            await d.until_subscribers(1)
            with pytest.raises(InvalidStatus) as info:
                async with connect(d.url()):
                    pass
            return info.value.response.status_code

    assert run(main()) == 503


# ---------------------------------------------------------------- the watch command


def test_format_event_lines():
    d = Daemonish()
    score = d.score("CA1", 3)
    alert = d.alert("CA1")
    ended = d.ended("CA1")
    line = format_event(score)
    assert "CA1/inbound" in line and "p_fake=0.90" in line and "[3.0-7.0s]" in line
    assert "!! ALERT raised" in format_event(alert)
    assert "verdict=FAKE" in format_event(ended) and "reason=stop" in format_event(ended)
    assert format_event(score.to_dict()) == line  # dicts (raw JSON) format the same
    assert "\n" not in line


def test_subscription_url_adds_filters():
    url = subscription_url(
        "ws://h:1/alerts?token=t", call_id="CA 1", types="alert,call_ended", since=None
    )
    assert url == "ws://h:1/alerts?token=t&call_id=CA+1&types=alert%2Ccall_ended"


def test_watch_prints_filtered_events_then_reports_server_shutdown():
    async def main():
        d = Daemonish()
        out = io.StringIO()
        async with d.running():
            task = asyncio.create_task(watch(d.url() + "?types=alert", out=out))
            await d.until_subscribers(1)
            d.score("A", 0)
            d.alert("A")
            while "ALERT" not in out.getvalue():
                await asyncio.sleep(0.01)
        return await task, out.getvalue()

    code, text = run(main())
    assert code == 1  # the server went away (1001): scripts should notice
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "!! ALERT raised" in lines[0]


def test_watch_cli_errors_are_one_line_and_exit_2(capsys):
    from streamguard.cli import main

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["watch", f"ws://127.0.0.1:{port}/alerts"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("streamguard: error: cannot connect") and "\n" not in err

    async def refused():
        d = Daemonish(token="s3cret")
        async with d.running():
            return await asyncio.to_thread(main, ["watch", d.url(), "--types", "alert"])

    assert run(refused()) == 2
    assert "HTTP 401 (no token sent: --token)" in capsys.readouterr().err


def test_watch_ctrl_c_exits_0():
    async def main():
        d = Daemonish()
        async with d.running():
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "streamguard.cli",
                "watch",
                d.url(),
                "--json",
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            await d.until_subscribers(1)
            event = d.score("A", 0)
            line = await proc.stdout.readline()
            proc.send_signal(signal.SIGINT)
            code = await proc.wait()
            return event, line, code, await proc.stderr.read()

    event, line, code, err = run(main())
    assert json.loads(line) == event.to_dict()
    assert code == 0, err
