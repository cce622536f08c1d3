"""Command-line entry point: ``streamguard <command> ...``.

Each command lives in ``streamguard/commands/<name>.py`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Command modules keep heavy imports (torch,
websockets) inside ``run`` so that ``streamguard --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from streamguard import __version__
from streamguard.errors import StreamguardError

COMMANDS = (
    "serve",
    "demo",
    "scan",
    "feed",
    "watch",
    "events",
    "webhook",
    "model",
    "train",
    "evaluate",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamguard",
        description="Detect synthetic (deepfake) voices on live calls.",
    )
    parser.add_argument("--version", action="version", version=f"streamguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"streamguard.commands.{name}")
        except ModuleNotFoundError as exc:  # a command not built yet in this checkout
            if exc.name != f"streamguard.commands.{name}":
                raise
            continue
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except StreamguardError as exc:
        print(f"streamguard: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
