"""One bad window must never cost another call anything (issue: the NaN hang).

A real daemon on loopback serves a real detector that is broken the way real models break
(NaN on some windows, an exception on some windows); real calls stream in over /ingest.
Every call must still end with its ``call_ended``, nothing non-finite may be published, and a
shutdown must complete.
"""

from __future__ import annotations

import asyncio
import math

import pytest

from streamguard.audio.file import read_audio
from streamguard.client import send_frames
from streamguard.daemon import Daemon
from streamguard.errors import StreamguardError
from streamguard.sources.senders import native_frames
from tests.conftest import misbehaving_detector

from .conftest import Subscriber, daemon_settings, until

pytestmark = pytest.mark.integration

#: A liveness bound, not a speed target: without the fix the drain below never returns.
STOP_BOUND_SECONDS = 20


@pytest.mark.parametrize("mode", ["nan", "raise"])
async def test_broken_windows_fail_alone_and_every_call_still_ends(
    tiny_detector, fixtures_dir, mode
):
    broken = misbehaving_detector(tiny_detector, mode=mode)
    daemon = Daemon(
        daemon_settings(model={"torchscript": False, "max_wait_ms": 20}), detector=broken
    )
    await daemon.start()
    try:
        rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
        base = f"ws://127.0.0.1:{daemon.port}"
        calls = [f"call-{i}" for i in range(3)]
        async with Subscriber(f"{base}/alerts") as sub:
            await asyncio.gather(
                *(
                    send_frames(f"{base}/ingest", native_frames(mono, rate, call_id=c))
                    for c in calls
                )
            )
            ended = await sub.wait_call_ended(count=len(calls))
        assert sorted(e["call_id"] for e in ended) == calls
        for event in ended:
            summary = event["summary"]
            assert summary["windows_failed"] > 0  # the loud windows
            assert summary["windows_scored"] > 0  # the others kept their scores
            assert summary["windows_dropped"] == 0  # a model fault is not a capacity drop
        for event in sub.of_type("score"):
            assert math.isfinite(event["p_fake"]) and math.isfinite(event["smoothed"])
        reason = "nonfinite" if mode == "nan" else "error"
        failed = daemon.metrics.registry.get_sample_value(
            "streamguard_windows_failed_total", {"reason": reason}
        )
        assert failed == sum(e["summary"]["windows_failed"] for e in ended)
        assert daemon.health().to_dict()["windows_failed"] == failed
    finally:
        await asyncio.wait_for(daemon.stop(), STOP_BOUND_SECONDS)


async def test_shutdown_mid_call_with_a_nan_model_ends_the_call(tiny_detector, fixtures_dir):
    broken = misbehaving_detector(tiny_detector, mode="nan")
    daemon = Daemon(daemon_settings(model={"torchscript": False}), detector=broken)
    await daemon.start()
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    base = f"ws://127.0.0.1:{daemon.port}"
    frames = list(native_frames(mono, rate, call_id="mid"))[:-1]  # never says stop
    async with Subscriber(f"{base}/alerts") as sub:
        sender = asyncio.create_task(send_frames(f"{base}/ingest", frames))
        await sub.wait_for(lambda ev: any(e["type"] == "call_started" for e in ev))
        # Mid-call: windows have reached the broken model, the feed is still open (it never
        # says stop, and the sender waits for the daemon to close it). Awaiting the sender
        # first raced its close timeout against the daemon's idle timeout (both 30 s).
        await until(lambda: daemon.engine.stats.failed >= 1, timeout=60)
        await asyncio.wait_for(daemon.stop(), STOP_BOUND_SECONDS)
        await sender
        (ended,) = await sub.wait_call_ended()
    assert ended["reason"] == "shutdown"


async def test_a_model_that_returns_nan_on_the_probe_is_refused_at_start(tiny_detector):
    always_nan = misbehaving_detector(tiny_detector, mode="nan", loud=-1.0, name="nan-model")
    daemon = Daemon(daemon_settings(model={"torchscript": False}), detector=always_nan)
    with pytest.raises(StreamguardError, match="nan-model returns invalid scores"):
        await daemon.start()
    await asyncio.wait_for(daemon.stop(), STOP_BOUND_SECONDS)
    assert daemon.server is None  # refused before any port was opened
