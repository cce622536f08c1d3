"""Command-line entry point: ``streamguard <command> ...``.

Each command lives in ``streamguard/commands/<name>.py`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Command modules keep heavy imports (torch,
websockets) inside ``run`` so that ``streamguard --help`` stays instant.

Every error is one ``streamguard: error: ...`` line on stderr (README): a usage error too (exit
2, with where to read the usage), and output into a pipe whose reader has gone
(``streamguard model info | head``) ends quietly with 141, as a tool killed by SIGPIPE does.

A crash in native code (torch, ONNX Runtime: SIGSEGV, SIGFPE, SIGABRT, SIGBUS, SIGILL) still
leaves the Python stack of every thread on stderr (``faulthandler``), so a unit's journal says
where it died; the stack names functions and lines only, never values.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import os
import sys
from typing import NoReturn

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
    "label",
    "evidence",
    "calibrate",
    "allowlist",
)


#: The exit status of a command whose stdout reader went away (128 + SIGPIPE, as the shell
#: reports for ``cat`` in the same place).
EXIT_BROKEN_PIPE = 141


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus where to look), like every other error.

    Sub-commands' parsers are made by ``add_subparsers``, which uses this class too, so
    ``self.prog`` names the command that was mistyped (``streamguard scan``).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"streamguard: error: {message} (try '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="streamguard",
        description="Detect synthetic (deepfake) voices on live calls.",
    )
    parser.add_argument("--version", action="version", version=f"streamguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"streamguard.commands.{name}")
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    if not faulthandler.is_enabled():
        faulthandler.enable(all_threads=True)
    try:
        args = build_parser().parse_args(argv)  # --help into a closed pipe, too
        code = int(args._run(args) or 0)
        sys.stdout.flush()  # buffered output meets a closed pipe here, not at exit
        return code
    except StreamguardError as exc:
        print(f"streamguard: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE


def _silence_stdout() -> None:
    """Point stdout at /dev/null: the interpreter's own flush at exit would hit the closed
    pipe again and print a traceback (what Python's signal docs recommend for EPIPE)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a test's capture: nothing to do
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
