"""How the dashboard copes with a busy daemon: N open two-track calls, one score per second per
track, shown live in headless chromium.

    .venv/bin/python benchmarks/dashboard_load.py [--calls 200] [--seconds 40]

A real daemon on 127.0.0.1 with its real bus, /alerts and page; the events are published on
the bus directly (calls' scores without audio or a model: this measures the page, not the
engine). Prints the page's own render time (``body[data-render-ms]``), how long a trivial
script takes to run in the page (is it still responsive?), and whether it kept up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamguard.alerts.events import CallStarted, Score  # noqa: E402
from streamguard.config import load_config  # noqa: E402
from streamguard.daemon import Daemon  # noqa: E402
from streamguard.model import Detector, ModelInfo, build_module  # noqa: E402
from tests.conftest import TINY_MODEL_PARAMS  # noqa: E402
from tests.integration.browser import Browser  # noqa: E402


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


async def main(calls: int, seconds: int) -> None:
    import torch

    torch.manual_seed(0)
    module = build_module("koyelog-resnet", TINY_MODEL_PARAMS)
    info = ModelInfo(name="tiny", architecture="koyelog-resnet")
    detector = Detector(module, info, device="cpu")
    settings = load_config(
        None,
        {
            "server": {"port": 0},
            "sources": {"rtp": {"enabled": False}},
            "logging": {"level": "warning"},
            "alerts": {"subscriber_queue": 4096},
        },
    )
    daemon = Daemon(settings, detector=detector)
    await daemon.start()
    bus = daemon.bus
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with Browser(Path(tmp) / "profile", Path(tmp) / "shots") as browser:
                await browser.get(f"http://127.0.0.1:{daemon.port}/")
                await browser.wait_for(
                    "return document.getElementById('connection').dataset.state === 'live'"
                )
                ids = [f"CA{i:05d}" for i in range(calls)]
                for call_id in ids:
                    bus.publish(
                        CallStarted(call_id=call_id, track=None, source="twilio", sample_rate=8000)
                    )
                render, roundtrip = [], []
                began = time.monotonic()
                for second in range(seconds):
                    for i, call_id in enumerate(ids):
                        p = ((i * 7 + second * 3) % 100) / 100
                        for track in ("inbound", "outbound"):
                            bus.publish(
                                Score(
                                    call_id=call_id,
                                    track=track,
                                    source="twilio",
                                    start=float(second),
                                    end=second + 4.0,
                                    p_fake=p,
                                    smoothed=p,
                                )
                            )
                    await asyncio.sleep(max(0.0, began + second + 1 - time.monotonic()))
                    sent = time.monotonic()
                    ms = await browser.js("return document.body.dataset.renderMs")
                    roundtrip.append((time.monotonic() - sent) * 1000)
                    render.append(float(ms or 0))
                await asyncio.sleep(2)
                first = await browser.js(
                    "return document.querySelector(`article.call .track`).dataset.points"
                )
    finally:
        await daemon.stop()
    steady = render[5:] or render
    trip = roundtrip[5:] or roundtrip
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}, load average {load:.1f}")
    print(f"{calls} open calls x 2 tracks, {2 * calls} score events/s for {seconds} s")
    print(
        f"page render: median {statistics.median(steady):.0f} ms, max {max(steady):.0f} ms; "
        f"script round trip: median {statistics.median(trip):.0f} ms, max {max(trip):.0f} ms"
    )
    print(f"first card's timeline: {first} of {seconds} scores shown 2 s after the last")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=40)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.seconds))
