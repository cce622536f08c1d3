"""``streamguard serve``: run the daemon (what the systemd unit starts)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "run the call-monitoring daemon (WebSocket feeds, RTP, microphone -> alerts)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        help="TOML config (see configs/streamguard.toml); default: built-in defaults + "
        "STREAMGUARD_* environment variables",
    )
    add_override_arguments(parser)


def add_override_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags that override single config keys (shared with ``demo``)."""
    parser.add_argument("--model", metavar="SPEC", help="model spec (overrides [model] spec)")
    parser.add_argument("--device", help="auto | cpu | cuda[:N] (overrides [model] device)")
    parser.add_argument("--host", help="bind address for HTTP/WebSocket (overrides [server] host)")
    parser.add_argument("--port", type=int, help="HTTP/WebSocket port (overrides [server] port)")
    parser.add_argument("--rtp-port", type=int, help="RTP UDP port (overrides [sources.rtp] port)")
    parser.add_argument(
        "--log-format", choices=("json", "console"), help="overrides [logging] format"
    )


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """Turn the override flags into a nested dict for ``load_config``."""
    out: dict[str, dict[str, Any]] = {}

    def put(section: str, key: str, value: Any) -> None:
        if value is not None:
            node = out
            parts = section.split(".")
            for part in parts:
                node = node.setdefault(part, {})
            node[key] = value

    put("model", "spec", args.model)
    put("model", "device", args.device)
    put("server", "host", args.host)
    put("server", "port", args.port)
    put("sources.rtp", "port", args.rtp_port)
    put("logging", "format", args.log_format)
    return out


def run(args: argparse.Namespace) -> int:
    import asyncio

    from streamguard.config import load_config
    from streamguard.daemon import Daemon
    from streamguard.logs import configure_logging

    settings = load_config(args.config, overrides_from(args))
    configure_logging(settings.logging.level, settings.logging.format)
    asyncio.run(Daemon(settings, config_path=args.config).run())
    return 0
