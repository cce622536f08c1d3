"""The tracer facade: off is free and hands callbacks back untouched; settings are checked;
sampling decides per call; the engine's timing reaches only callbacks that want it."""

from __future__ import annotations

import numpy as np
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streamguard.audio.windows import Window
from streamguard.config import TelemetrySettings, load_config
from streamguard.errors import ConfigError, StreamguardError
from streamguard.scoring.outcome import BatchTiming, TimedCallback, Unscored, stamp_timing
from streamguard.telemetry import NOOP, OtelTracer, from_settings, otlp_url

WINDOW = Window(start_sample=16_000, samples=np.zeros(64_000, np.float32), speech_ratio=1.0)


def test_off_by_default_is_the_noop_tracer_that_returns_the_callback_itself():
    assert from_settings(load_config(None).telemetry) is NOOP
    deliver = print  # any callable
    assert NOOP.score(NOOP.start_call("c", "native"), "0", WINDOW, deliver) is deliver
    with NOOP.webhook_attempt(None, "ep", 1) as span:  # type: ignore[arg-type]
        span.set(status=200)
    with NOOP.redis_append([]) as span:
        span.set(events=0)


@pytest.mark.parametrize("url", ["127.0.0.1:4318", "grpc://collector:4317", "http://", "x"])
def test_an_endpoint_that_is_no_http_url_is_one_config_error(url):
    with pytest.raises(ConfigError, match="otlp_endpoint"):
        load_config(None, {"telemetry": {"otlp_endpoint": url}})


def test_sample_ratio_is_bounded():
    with pytest.raises(ConfigError, match="sample_ratio"):
        load_config(None, {"telemetry": {"sample_ratio": 1.5}})


def test_the_traces_path_is_added_only_when_the_url_has_none():
    assert otlp_url("http://127.0.0.1:4318") == "http://127.0.0.1:4318/v1/traces"
    assert otlp_url("https://otel.example.com/") == "https://otel.example.com/v1/traces"
    assert otlp_url("https://otel.example.com/in/traces") == "https://otel.example.com/in/traces"


def _tracer(ratio: float) -> tuple[OtelTracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracer = from_settings(TelemetrySettings(sample_ratio=ratio), exporter=exporter, model="m")
    assert isinstance(tracer, OtelTracer)
    return tracer, exporter


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_sampling_takes_or_leaves_a_call_whole(ratio):
    tracer, exporter = _tracer(ratio)
    got = []
    for i in range(20):
        call = tracer.start_call(f"c{i}", "native")
        tracer.score(call, "0", WINDOW, got.append)(0.5)
        tracer.score(call, "0", WINDOW, got.append)(Unscored("lag"))
        tracer.end_call(call, None, ["0"])
    assert len(got) == 40  # the callback always runs, traced or not
    spans = exporter.get_finished_spans()
    assert len(spans) == (60 if ratio else 0)


def test_a_score_span_carries_the_engines_timing_and_the_outcome():
    tracer, exporter = _tracer(1.0)
    call = tracer.start_call("c", "twilio")
    scored, dropped = (tracer.score(call, "inbound", WINDOW, lambda o: None) for _ in range(2))

    plain = lambda o: None  # noqa: E731  (a callback that does not trace)
    # the engine's (callback, enqueued) per window of the batch
    stamp_timing([(scored, 9.5), (plain, 9.0)], taken=10.0, inference_seconds=0.03)
    assert scored.timing == BatchTiming(queue_wait=0.5, batch_size=2, inference_seconds=0.03)
    assert not isinstance(plain, TimedCallback)
    scored(0.75)
    dropped(Unscored("queue"))  # never reached a batch: no timing
    tracer.end_call(call, None, ["inbound"])
    a, b = (
        {k.removeprefix("streamguard."): v for k, v in s.attributes.items()}
        for s in exporter.get_finished_spans()
        if s.name == "score"
    )
    assert a == {
        "call_id": "c",
        "track": "inbound",
        "start": 1.0,
        "end": 5.0,
        "model": "m",
        "p_fake": 0.75,
        "queue_wait_seconds": 0.5,
        "batch_size": 2,
        "inference_seconds": 0.03,
    }
    assert b["unscored"] == "queue" and "batch_size" not in b


def test_a_callback_that_raises_still_ends_its_span():
    tracer, exporter = _tracer(1.0)
    call = tracer.start_call("c", "native")

    def broken(outcome):
        raise RuntimeError("bug in a call")

    with pytest.raises(RuntimeError):
        tracer.score(call, "0", WINDOW, broken)(0.1)
    assert [s.name for s in exporter.get_finished_spans()] == ["score"]


def test_a_collector_that_never_answers_cannot_hold_the_drain():
    """The last export blocks (a collector that accepts and never answers, or keeps refusing
    while the exporter retries): shutdown stops the exporter after FLUSH_SECONDS."""
    import threading

    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class Stuck(SpanExporter):
        def __init__(self):
            self.released = threading.Event()
            self.outcomes: list[bool] = []

        def export(self, spans):
            self.outcomes.append(self.released.wait(30))  # True: released by shutdown
            return SpanExportResult.FAILURE

        def shutdown(self):
            self.released.set()

    exporter = Stuck()
    tracer = OtelTracer(exporter)  # batched, as the daemon exports to a collector
    tracer.end_call(tracer.start_call("c", "native"), None, [])
    tracer.shutdown()
    assert exporter.outcomes == [True]


def test_an_endpoint_without_the_otel_extra_is_one_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    settings = TelemetrySettings(otlp_endpoint="http://127.0.0.1:4318")
    with pytest.raises(StreamguardError, match=r"pip install 'streamguard\[otel\]'"):
        from_settings(settings)
