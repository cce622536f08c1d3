"""First-score latency and lag of the cloud feeds (ACS, KVS) in the test setting: prints figures.

Not a speed test (nothing here asserts a time: the machine is shared); it asserts that every
window of a real-time call is scored and prints, per feed, how long after a window's audio was
live its score reached an ``/alerts`` subscriber. Run it on its own and read the output::

    .venv/bin/python -m pytest -s -m slow tests/integration/test_cloud_feed_latency.py

Lag = a score's arrival at the subscriber - when the window's last audio was sent:

* **ACS**: a real WebSocket client sends the two-participant call in real time (one 20 ms
  ``AudioData`` per participant every 20 ms, from ``t0``): the frame ending at call second ``e``
  leaves at ``t0 + e - 0.02``.
* **KVS**: the local stand-in (not AWS) sends one whole ~1 s fragment per second from the first
  ``GetMedia`` (``t0``): the fragment ending at ``e`` leaves at ``t0 + e - 1``. Connect writes a
  fragment once it is whole, so on a real stream add the fragment's own second and KVS's
  delivery (not measurable here) to reach "behind live".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time

import numpy as np
import pytest
import soundfile as sf
from websockets.asyncio.client import connect

from streamguard.sources.senders import acs_frames
from tests.integration.test_daemon_kvs import TOKEN, kvs, kvs_server, post  # noqa: F401
from tests.integration.test_kvs_reader import ARN, CONTACT, aws_environment  # noqa: F401

pytest.importorskip("boto3")
pytestmark = [pytest.mark.integration, pytest.mark.slow]

FRAME = 0.02  # ACS: one AudioData per participant every 20 ms
PACE = 1.0  # KVS: the stand-in sends one ~1 s fragment per second, as Connect writes them


class TimedSubscriber:
    """/alerts events with the monotonic time each one arrived."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[tuple[float, dict]] = []
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> TimedSubscriber:
        ready = asyncio.Event()

        async def run() -> None:
            async with connect(self.url) as ws:
                ready.set()
                async for message in ws:
                    self.events.append((time.monotonic(), json.loads(message)))

        self._task = asyncio.create_task(run())
        await asyncio.wait_for(ready.wait(), 5)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def ended(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(e["type"] == "call_ended" for _, e in self.events):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)

    def lags(self, sent_at) -> list[float]:
        """Per score, in arrival order: its arrival - ``sent_at(window end)``, when the window's
        last audio was sent."""
        return [at - sent_at(e["end"]) for at, e in self.events if e["type"] == "score"]


def report(feed: str, lags: list[float]) -> str:
    first, p50, worst = (round(x * 1000) for x in (lags[0], np.median(lags), max(lags)))
    line = (
        f"{feed}: {len(lags)} scores; first score {first} ms after its window's last audio was "
        f"sent; lag p50 {p50} ms, max {worst} ms"
    )
    print("\n" + line + " (each, ms: " + ", ".join(f"{x * 1000:.0f}" for x in lags) + ")")
    return line


async def test_acs_first_score_and_lag(make_daemon, fixtures_dir):
    daemon = await make_daemon(sources={"acs": {"enabled": True}}, auth={"ingest_token": TOKEN})
    audio, rate = sf.read(fixtures_dir / "speech_stereo_16k.wav", dtype="float32")
    frames = list(acs_frames(audio.T.copy(), rate, participants=["4:+15550100", "8:acs:agent"]))
    url = f"ws://127.0.0.1:{daemon.port}/acs?token={TOKEN}"
    async with TimedSubscriber(f"ws://127.0.0.1:{daemon.port}/alerts") as sub:
        async with connect(url, additional_headers={"x-ms-call-connection-id": "lat"}) as ws:
            t0 = time.monotonic()
            for at, frame in frames:
                if (wait := t0 + at - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                await ws.send(frame)
        await sub.ended()
    lags = sub.lags(lambda end: t0 + end - FRAME)  # the frame ending at `end` left then
    scored = {e["track"] for _, e in sub.events if e["type"] == "score"}
    assert scored == {"p1", "p2"} and len(lags) >= 4
    report("acs", lags)


async def test_kvs_first_score_and_lag(make_daemon, kvs_server):  # noqa: F811
    server = kvs_server(pace=PACE)
    # above the fragment period: the reader's read timeout is its idle timeout
    daemon = await make_daemon(**kvs(server, idle_timeout_seconds=3.0))
    body = {"stream_arn": ARN, "call_id": CONTACT, "start_fragment": server.fragments[0][0]}
    url = f"ws://127.0.0.1:{daemon.port}/alerts?token={TOKEN}"
    async with TimedSubscriber(url) as sub:
        assert (await post(daemon, body))[0] == 202
        await sub.ended()
    t0 = server.get_media_requests()[0]["at"]
    # fragment k (call seconds k..k+1) is sent at t0 + k * pace, whole
    lags = sub.lags(lambda end: t0 + (math.ceil(end - 1e-6) - 1) * PACE)
    scored = {e["track"] for _, e in sub.events if e["type"] == "score"}
    assert scored == {"inbound", "outbound"} and len(lags) >= 4
    report("kvs", lags)
