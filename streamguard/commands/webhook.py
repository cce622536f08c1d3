"""``streamguard webhook verify``: check a webhook request's signature, as a receiver must.

Give it the secret (``--secret-file``, or ``$STREAMGUARD_WEBHOOK_SECRET``; never on the
command line, where ``ps`` shows it), the ``Streamguard-Signature`` header and the exact body.
Exit 0 and ``valid`` if it matches and is recent, exit 1 with the reason otherwise. The same
check in ten lines of Python is in streamguard/webhooks/signing.py and docs/operations.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "verify a webhook request's Streamguard-Signature (what receivers must check)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    v = sub.add_parser("verify", help="check a signature header against a body")
    v.add_argument(
        "--secret-file",
        type=Path,
        help="file holding the endpoint's secret (default: $STREAMGUARD_WEBHOOK_SECRET)",
    )
    v.add_argument("--header", required=True, help="the Streamguard-Signature header value")
    v.add_argument("--body", required=True, help="file with the exact request body ('-' for stdin)")
    v.add_argument(
        "--tolerance",
        type=float,
        default=300.0,
        help="seconds the signature's timestamp may be from now (default: %(default)g)",
    )


def run(args: argparse.Namespace) -> int:
    import os
    import time

    from streamguard.errors import ConfigError
    from streamguard.webhooks.signing import SignatureError, verify

    if args.secret_file is not None:
        try:
            secret = args.secret_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read --secret-file {args.secret_file}: {exc.strerror}"
            ) from None
    else:
        secret = os.environ.get("STREAMGUARD_WEBHOOK_SECRET", "").strip()
    if not secret:
        raise ConfigError("no secret: pass --secret-file or set $STREAMGUARD_WEBHOOK_SECRET")
    try:
        body = sys.stdin.buffer.read() if args.body == "-" else Path(args.body).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read --body {args.body}: {exc.strerror}") from None
    try:
        timestamp = verify(secret, body, args.header, now=time.time(), tolerance=args.tolerance)
    except SignatureError as exc:
        print(f"streamguard: invalid signature: {exc}", file=sys.stderr)
        return 1
    print(f"valid (signed at {timestamp}, {len(body)} bytes)")
    return 0
