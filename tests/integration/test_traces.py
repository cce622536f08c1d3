"""Traces of a real daemon and a real call: the SDK's in-memory exporter, a real OTLP/HTTP
export to a receiver on loopback that decodes the protobuf, and no SDK at all when off.

Each call is the speech fixture streamed over ``/ingest`` by a websockets client; webhooks go
to the real HTTP receiver of test_webhooks.py (its first attempt fails, so retries show).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streamguard.audio.file import read_audio
from streamguard.client import send_frames
from streamguard.daemon import Daemon
from streamguard.sources.senders import native_frames

from .conftest import Subscriber, daemon_settings, until
from .test_webhooks import SECRET, Receiver

pytestmark = pytest.mark.integration


def attrs(span) -> dict:
    """A span's attributes without the ``streamguard.`` prefix."""
    return {k.removeprefix("streamguard."): v for k, v in span.attributes.items()}


async def stream_call(daemon: Daemon, fixtures_dir, call_id: str) -> list[dict]:
    """Stream the speech fixture as one /ingest call; its events as /alerts saw them."""
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    base = f"ws://127.0.0.1:{daemon.port}"
    async with Subscriber(f"{base}/alerts") as sub:
        await send_frames(f"{base}/ingest", native_frames(mono, rate, call_id=call_id))
        await sub.wait_call_ended()
    return [e for e in sub.events if e["call_id"] == call_id]


async def test_a_call_its_windows_and_its_webhook_deliveries_share_one_trace(
    tiny_detector, fixtures_dir
):
    receiver = Receiver(fail_first=1)  # the first POST fails: two attempts, two spans
    exporter = InMemorySpanExporter()
    settings = daemon_settings(
        events={"backend": "memory"},
        webhooks=[
            {
                "url": receiver.url,
                "secret": SECRET,
                "types": ["call_ended"],
                "backoff_seconds": 0.02,
                "max_backoff_seconds": 0.1,
            }
        ],
    )
    daemon = Daemon(settings, detector=tiny_detector, span_exporter=exporter)
    await daemon.start()
    try:
        events = await stream_call(daemon, fixtures_dir, "trace-1")
        await until(lambda: receiver.accepted, timeout=20)
    finally:
        await asyncio.wait_for(daemon.stop(), 30)
        receiver.close()
    spans = exporter.get_finished_spans()
    by_name: dict[str, list] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)

    (call,) = by_name["call"]
    ended = next(e for e in events if e["type"] == "call_ended")
    assert attrs(call) | {"tracks": tuple(attrs(call)["tracks"])} == attrs(call) | {
        "call_id": "trace-1",
        "source": "native",
        "verdict": ended["summary"]["verdict"],
        "reason": ended["reason"],
        "windows_scored": ended["summary"]["windows_scored"],
        "tracks": tuple(ended["tracks"]),
    }
    assert call.parent is None  # a call is a trace of its own
    trace_id = call.context.trace_id

    # One score span per window, children of the call, in the call's order, with its P(fake).
    scores = [e for e in events if e["type"] == "score"]
    assert len(scores) >= 5
    windows = sorted(by_name["score"], key=lambda s: attrs(s)["start"])
    assert len(windows) == len(scores)
    for span, event in zip(windows, scores, strict=True):  # events round P(fake) to 4 places
        assert attrs(span)["p_fake"] == pytest.approx(event["p_fake"], abs=5.1e-5)
    for span, event in zip(windows, scores, strict=True):
        a = attrs(span)
        assert span.context.trace_id == trace_id and span.parent.span_id == call.context.span_id
        assert (a["call_id"], a["track"], a["model"]) == ("trace-1", event["track"], "tiny")
        assert (a["start"], a["end"]) == (event["start"], event["end"])
        assert a["batch_size"] >= 1 and a["inference_seconds"] > 0
        assert 0 <= a["queue_wait_seconds"] < 5
        # the span runs from submit to the outcome: it holds the wait and the inference
        assert span.end_time - span.start_time >= a["inference_seconds"] * 1e9 * 0.99
        assert call.start_time <= span.start_time and span.end_time <= call.end_time

    # The webhook's attempts: one failed (500, retried), then the delivery; same trace.
    hooks = [s for s in by_name["webhook"] if attrs(s)["call_id"] == "trace-1"]
    # An attempt the loaded box timed out (no HTTP status) is one more retry span, so keep the
    # answered ones: the 500 (retried), then the delivery; every attempt numbered, in order.
    seen = [(attrs(s)["attempt"], attrs(s).get("status"), attrs(s)["outcome"]) for s in hooks]
    assert [n for n, _, _ in seen] == list(range(1, len(seen) + 1)), seen
    answered = [(status, outcome) for _, status, outcome in seen if status is not None]
    assert answered == [(500, "retry"), (204, "ok")], seen
    assert all(outcome == "retry" for _, status, outcome in seen if status is None), seen
    for span in hooks:
        assert span.context.trace_id == trace_id and span.parent.span_id == call.context.span_id
        assert attrs(span)["type"] == "call_ended" and attrs(span)["seq"] == ended["seq"]
        assert attrs(span)["endpoint"] == receiver.url.removeprefix("http://")


@pytest.mark.requires_tool("redis-server")
async def test_redis_appends_are_spans_linked_to_their_calls(
    tiny_detector, fixtures_dir, redis_server, tmp_path
):
    exporter = InMemorySpanExporter()
    settings = daemon_settings(
        events={"backend": "redis", "redis_url": redis_server.url, "path": str(tmp_path / "s")}
    )
    daemon = Daemon(settings, detector=tiny_detector, span_exporter=exporter)
    await daemon.start()
    try:
        events = await stream_call(daemon, fixtures_dir, "trace-redis")
    finally:
        await asyncio.wait_for(daemon.stop(), 30)
    spans = exporter.get_finished_spans()
    (call,) = [s for s in spans if s.name == "call"]
    appends = [s for s in spans if s.name == "redis"]
    assert appends and all(s.parent is None for s in appends)
    ours = [s for s in appends if "trace-redis" in attrs(s)["call_ids"]]
    # every event of the call went through an append span that names it
    assert sum(attrs(s)["events"] for s in ours) >= len(events)
    # ...and, once the call span exists, links to it
    linked = [s for s in ours if any(link.context == call.context for link in s.links)]
    assert len(linked) >= len(ours) - 1  # the first append carries call_started itself


def test_with_telemetry_off_the_sdk_is_never_imported(tiny_model_dir, fixtures_dir, tmp_path):
    """A real daemon (default [telemetry]: off) takes a real call in a fresh interpreter;
    nothing of OpenTelemetry is imported, before, during or after."""
    script = textwrap.dedent(
        f"""
        import asyncio, json, sys
        from streamguard.audio.file import read_audio
        from streamguard.client import send_frames
        from streamguard.config import load_config
        from streamguard.daemon import Daemon
        from streamguard.model import load_detector
        from streamguard.sources.senders import native_frames

        async def main():
            settings = load_config(None, {{
                "server": {{"host": "127.0.0.1", "port": 0}},
                "sources": {{"rtp": {{"enabled": False}}}},
                "events": {{"backend": "memory"}},
                "logging": {{"level": "warning"}},
            }})
            daemon = Daemon(settings, detector=load_detector({str(tiny_model_dir)!r}))
            await daemon.start()
            rate, mono = read_audio({str(fixtures_dir / "speech_10s_8k.wav")!r})
            await send_frames(
                f"ws://127.0.0.1:{{daemon.port}}/ingest", native_frames(mono, rate, call_id="x")
            )
            await daemon.stop()
            return daemon.engine.stats.scored

        scored = asyncio.run(main())
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        print(json.dumps({{"scored": scored, "loaded": loaded}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["scored"] >= 5  # the call really went through the engine
    assert result["loaded"] == []


class OtlpReceiver:
    """A real OTLP/HTTP trace receiver on loopback: decodes each POST to /v1/traces with
    opentelemetry-proto's ExportTraceServiceRequest, as a collector does."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        self.requests: list = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.paths.append(self.path)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.requests.append((self.headers["Content-Type"], request))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> list[tuple[dict, object]]:
        """(resource attributes, span) for every span received."""
        out = []
        for _, request in self.requests:
            for rs in request.resource_spans:
                resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                out += [(resource, span) for ss in rs.scope_spans for span in ss.spans]
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _otlp_attrs(span) -> dict:
    out = {}
    for a in span.attributes:
        kind = a.value.WhichOneof("value")
        out[a.key.removeprefix("streamguard.")] = getattr(a.value, kind)
    return out


async def test_otlp_export_reaches_a_real_receiver(tiny_detector, fixtures_dir):
    receiver = OtlpReceiver()
    settings = daemon_settings(
        events={"backend": "memory"},
        telemetry={"otlp_endpoint": receiver.url, "service_name": "sg-test"},
    )
    daemon = Daemon(settings, detector=tiny_detector)
    await daemon.start()
    try:
        events = await stream_call(daemon, fixtures_dir, "otlp-1")
    finally:
        await asyncio.wait_for(daemon.stop(), 30)  # the drain exports what is batched
        receiver.close()
    assert set(receiver.paths) == {"/v1/traces"}
    assert {ctype for ctype, _ in receiver.requests} == {"application/x-protobuf"}
    spans = receiver.spans()
    assert {r["service.name"] for r, _ in spans} == {"sg-test"}
    (call,) = [s for _, s in spans if s.name == "call"]
    assert _otlp_attrs(call)["call_id"] == "otlp-1"
    scores = [s for _, s in spans if s.name == "score"]
    assert len(scores) == sum(e["type"] == "score" for e in events)
    assert all(s.trace_id == call.trace_id and s.parent_span_id == call.span_id for s in scores)
    assert all(_otlp_attrs(s)["batch_size"] >= 1 for s in scores)
