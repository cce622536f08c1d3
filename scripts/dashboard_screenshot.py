"""Make docs/img/dashboard.png: the dashboard during a live call, with the bundled model.

    .venv/bin/python scripts/dashboard_screenshot.py [--out docs/img/dashboard.png]

A real daemon (bundled starter model, 127.0.0.1, a free port) and Debian's headless chromium
(scripts/system-deps.sh). Over /twilio it streams two calls that end first (the bundled demo
call's human agent alone, then the whole demo call, faster than real time) and then the demo
call again in real time; the picture is taken while that one is live and its synthetic caller
has raised an alert. Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamguard.audio.file import read_audio  # noqa: E402
from streamguard.client import send_frames  # noqa: E402
from streamguard.commands.demo import demo_call_path  # noqa: E402
from streamguard.config import load_config  # noqa: E402
from streamguard.daemon import Daemon  # noqa: E402
from streamguard.sources.senders import twilio_frames  # noqa: E402
from tests.integration.browser import Browser  # noqa: E402

LIVE = "CA4d9e0b7c21f84a6f9a5b3c2e1d0f7a61"
ENDED_FAKE = "CA1b2c3d4e5f60718293a4b5c6d7e8f901"
ENDED_REAL = "CA90f8e7d6c5b4a39281706f5e4d3c2b1a"


async def main(out: Path) -> None:
    settings = load_config(
        None,
        {
            "server": {"host": "127.0.0.1", "port": 0},
            "sources": {"rtp": {"enabled": False}},
            "logging": {"level": "warning"},
        },
    )
    daemon = Daemon(settings)
    await daemon.start()
    rate, audio = read_audio(demo_call_path())
    twilio = f"ws://127.0.0.1:{daemon.port}/twilio"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with Browser(Path(tmp) / "profile", Path(tmp) / "shots", height=1080) as b:
                await b.get(f"http://127.0.0.1:{daemon.port}/")
                await b.wait_for(
                    "return document.getElementById('connection').dataset.state === 'live'",
                    what="the page",
                )
                agent = audio[1:2]
                await send_frames(
                    twilio, twilio_frames(agent, rate, call_sid=ENDED_REAL), realtime=True, speed=6
                )
                await send_frames(
                    twilio, twilio_frames(audio, rate, call_sid=ENDED_FAKE), realtime=True, speed=6
                )
                live = asyncio.create_task(
                    send_frames(twilio, twilio_frames(audio, rate, call_sid=LIVE), realtime=True)
                )
                await b.wait_for(
                    f"return document.querySelector(`article.call[data-call-id='{LIVE}']"
                    "[data-alert='true']`)",
                    timeout=40,
                    what="the live call's alert",
                )
                await asyncio.sleep(14)  # let the timelines grow past the alert
                await b.js("document.getElementById('banner').hidden = true")
                shot = await b.screenshot("dashboard")
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(shot.read_bytes())
                live.cancel()
    finally:
        await daemon.stop()
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "dashboard.png")
    asyncio.run(main(parser.parse_args().out))
