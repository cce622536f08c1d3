"""``streamguard demo``: the daemon, a subscriber and a demo call, in one command (``make run``).

It starts the real daemon (default configuration, default model unless told otherwise),
subscribes to ``/alerts`` over a real WebSocket, streams the bundled demo call through
``/twilio`` in real time (as Twilio would) and prints every event as it arrives. The daemon
then keeps running for other feeds until Ctrl-C, which drains it cleanly.

Without ``--config`` (or ``STREAMGUARD_EVENTS__BACKEND``) the event log is in memory: a demo's
events are not operational data, and a demo must never contend with a running ``serve`` for
its log file. The help and the start banner say so.
"""

from __future__ import annotations

import argparse
import math
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from streamguard.commands.serve import add_override_arguments, overrides_from

HELP = "start the daemon, stream the bundled demo call through it and print the events"


def demo_call_path() -> Path:
    return Path(str(resources.files("streamguard") / "demo" / "demo_call.wav"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        help="daemon TOML config (default: built-in, with the event log in memory: nothing is "
        "kept after the demo; a config or STREAMGUARD_EVENTS__BACKEND chooses a kept log)",
    )
    add_override_arguments(parser)
    parser.add_argument(
        "--file",
        type=Path,
        help="call to stream instead of the bundled demo (stereo = inbound + outbound)",
    )
    parser.add_argument(
        "--protocol", choices=("twilio", "native", "l16"), default="twilio", help="feed protocol"
    )
    parser.add_argument(
        "--speed", type=float, default=1.0, help="playback speed of the demo call (default 1.0)"
    )
    parser.add_argument(
        "--once", action="store_true", help="stop the daemon after the demo call instead of idling"
    )


def run(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from streamguard.config import load_config
    from streamguard.logs import configure_logging

    overrides = overrides_from(args)
    overrides.setdefault("logging", {}).setdefault("format", "console")
    if args.config is None and "STREAMGUARD_EVENTS__BACKEND" not in os.environ:
        # A demo's events are not operational data, and a demo must never contend with a
        # running `serve` for its event log: nothing is kept unless a config asks for it.
        overrides.setdefault("events", {}).setdefault("backend", "memory")
    settings = load_config(args.config, overrides)
    # Events are what the demo shows; the daemon's own log only speaks up for problems.
    configure_logging("warning", settings.logging.format)
    path = args.file or demo_call_path()
    if not path.exists():
        print(f"streamguard: error: demo call not found: {path}", file=sys.stderr)
        return 2
    if not math.isfinite(args.speed) or args.speed <= 0:
        print("streamguard: error: --speed must be a number > 0", file=sys.stderr)
        return 2
    from streamguard.audio.file import read_audio

    audio = read_audio(path)  # a bad --file fails here, before a daemon is started for it
    return asyncio.run(_demo(settings, args, path, audio))


def event_log_text(events: Any) -> str:
    """Where the demo's events go (``[events]``), for its start banner."""
    if events.backend == "memory":
        return "in memory, not kept (pass --config with an [events] table to keep it)"
    if events.backend == "redis":
        return f"redis stream {events.redis_stream}"
    return f"sqlite {events.resolved_path()}"


async def _demo(settings, args: argparse.Namespace, path: Path, audio: tuple) -> int:
    import asyncio
    import contextlib

    from websockets.asyncio.client import connect

    from streamguard.alerts.events import parse_event
    from streamguard.client import send_frames
    from streamguard.commands.feed import DEFAULT_PATHS
    from streamguard.commands.watch import format_event
    from streamguard.daemon import Daemon
    from streamguard.policy.verdict import format_threshold
    from streamguard.server.dashboard import dashboard_url
    from streamguard.sources.senders import frames_for

    out = sys.stdout
    daemon = Daemon(settings, config_path=args.config)
    runner = asyncio.create_task(daemon.run())
    while not daemon.ready:
        if runner.done():
            runner.result()  # start-up failed: raise its error (one line via the CLI)
            return 1
        await asyncio.sleep(0.05)

    host = settings.server.host
    base = f"ws://{host}:{daemon.port}"
    info = daemon.detector.info
    alerts = settings.alerts.path
    print(
        f"streamguard daemon ready on {base}  (feeds: /twilio /ingest, alerts: {alerts})", file=out
    )
    print(f"  dashboard: {dashboard_url(host, daemon.port)}", file=out)
    if daemon.rtp_port is not None:
        print(f"  RTP on udp://{settings.sources.rtp.host}:{daemon.rtp_port}", file=out)
    print(f"  event log: {event_log_text(settings.events)}", file=out)
    print(
        f"model: {info.name} ({info.architecture}), threshold {format_threshold(info.threshold)}, "
        f"window {info.window_seconds:g} s, device {daemon.detector.device}",
        file=out,
    )
    rate, channels = audio
    print(
        f"streaming {path.name} ({channels.shape[1] / rate:.1f} s, {channels.shape[0]} track(s)) "
        f"over {args.protocol} at {args.speed:g}x real time ...\n",
        file=out,
    )
    out.flush()

    call_ended = asyncio.Event()

    async def subscriber() -> None:
        async with connect(f"{base}{settings.alerts.path}") as ws:
            async for message in ws:
                event = parse_event(message)
                print(format_event(event), file=out, flush=True)
                if event.type == "call_ended" and event.call_id == "demo-call":
                    call_ended.set()

    watcher = asyncio.create_task(subscriber())
    await asyncio.sleep(0.2)  # let the subscription settle before the call starts
    frames = frames_for(args.protocol, channels, rate, call_id="demo-call")
    try:
        await send_frames(
            f"{base}{DEFAULT_PATHS[args.protocol]}", frames, realtime=True, speed=args.speed
        )
        # Ctrl-C while streaming: the drain ends the call; wait for the daemon, say nothing more.
        ended_or_stopping = asyncio.create_task(call_ended.wait())
        await asyncio.wait(
            {ended_or_stopping, runner}, timeout=30, return_when=asyncio.FIRST_COMPLETED
        )
        ended_or_stopping.cancel()
        if args.once or daemon.stopping:
            daemon.request_stop()
        else:
            print(
                f"\ndemo call done. The daemon keeps running: stream your own call with\n"
                f"  streamguard feed FILE --url {base} --realtime\n"
                f"watch with  streamguard watch {base}{settings.alerts.path}\n"
                f"or open     {dashboard_url(host, daemon.port)}\n"
                "Ctrl-C stops it.",
                file=out,
                flush=True,
            )
        await runner
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
        if not runner.done():
            daemon.request_stop()
            await runner
    return 0
