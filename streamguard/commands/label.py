"""``streamguard label CALL_ID fake|real|unsure``: an analyst's verdict into the event log.

The same ``label`` event ``POST /api/labels`` stores (validated by the same
:func:`streamguard.labels.parse_label_request`), with ``who`` = ``local``. With no daemon
running it is written to the configured log directly (the SQLite file, or the Redis stream of
the fleet); while a daemon owns the SQLite log, the daemon is asked over its API. Prints the
stored event (``--json``: as stored).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "label a call (or one track) fake, real or unsure: for calibrate and train --from-labels"

WHO = "local"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("call_id", metavar="CALL_ID", help="the call's id, as its events name it")
    parser.add_argument("label", choices=("fake", "real", "unsure"), help="the verdict")
    parser.add_argument("--track", help="label one track (default: the whole call)")
    parser.add_argument("--note", help="a remark (at most 1,000 characters)")
    parser.add_argument("--config", type=Path, help="the daemon's config file (for [events])")
    parser.add_argument("--json", action="store_true", help="print the stored event as JSON")


def run(args: argparse.Namespace) -> int:
    import asyncio

    from streamguard.alerts.events import parse_event
    from streamguard.alerts.oneshot import DaemonOwnsLog, publish_once
    from streamguard.api_client import api_request
    from streamguard.commands.watch import format_event
    from streamguard.config import load_config
    from streamguard.errors import ConfigError, StreamguardError
    from streamguard.labels import LabelRejected, parse_label_request

    body = {"call_id": args.call_id, "label": args.label}
    if args.track is not None:
        body["track"] = args.track
    if args.note is not None:
        body["note"] = args.note
    draft = parse_label_request(body, who=WHO)
    if isinstance(draft, LabelRejected):
        raise ConfigError(draft.message)
    settings = load_config(args.config)
    try:
        [stored] = asyncio.run(
            publish_once(settings.events, [draft], model=settings.model.spec or "none")
        )
    except DaemonOwnsLog:
        status, answer = api_request(settings, "POST", "/api/labels", body)
        if status != 201 or not isinstance(answer, dict):
            message = answer.get("error") if isinstance(answer, dict) else None
            raise StreamguardError(
                f"the daemon refused the label: {status} {message or ''}"
            ) from None
        stored = parse_event(answer)
    print(stored.to_json() if args.json else format_event(stored))
    return 0
