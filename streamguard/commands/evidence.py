"""``streamguard evidence list|get|delete CALL_ID``: the evidence audio, without the dashboard.

Reads the store ``[evidence] path`` names (the same files the daemon writes and
``GET /api/calls/{call_id}/evidence`` lists). ``get`` copies a clip's WAV out (0600; ``-``
writes it to stdout). ``delete`` removes the call's clips and logs an ``evidence_deleted``
event: itself when no daemon runs, else by asking the daemon (``DELETE
/api/calls/{call_id}/evidence``), since the daemon may be writing the call's clip.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "list, copy out or delete a call's evidence audio ([evidence])"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="the call's clips: id, track, start, end, bytes")
    get = sub.add_parser("get", help="copy one clip's WAV out")
    rm = sub.add_parser("delete", help="delete every clip of the call (logs evidence_deleted)")
    for p in (ls, get, rm):
        p.add_argument("call_id", metavar="CALL_ID")
        p.add_argument("--config", type=Path, help="the daemon's config file ([evidence])")
    ls.add_argument("--json", action="store_true", help="the listing as the API returns it")
    get.add_argument("clip", metavar="CLIP", help="the clip's id (from list)")
    get.add_argument("-o", "--output", help="where to write it (default: ./CLIP.wav; '-': stdout)")
    get.add_argument("--force", action="store_true", help="overwrite an existing --output")


def _store(settings):
    from streamguard.evidence import EvidenceStore

    root = settings.evidence.resolved_path(settings.events)
    if not root.is_dir():
        return None  # nothing was ever kept: list is empty, get finds nothing
    return EvidenceStore(
        root,
        retention_days=settings.evidence.retention_days,
        max_bytes=settings.evidence.max_bytes,
    )


def run(args: argparse.Namespace) -> int:
    from streamguard.config import load_config

    settings = load_config(args.config)
    return {"list": _list, "get": _get, "delete": _delete}[args.action](args, settings)


def _list(args, settings) -> int:
    import json

    from streamguard.errors import ConfigError
    from streamguard.evidence.api import handle_get_evidence

    status, _, body = handle_get_evidence(_store(settings), args.call_id)
    data = json.loads(body)
    if status != 200:
        raise ConfigError(data["error"])
    if args.json:
        print(json.dumps(data))
        return 0
    if not data["clips"]:
        print(f"no evidence for call {args.call_id}")
    for c in data["clips"]:
        print(
            f"{c['clip']}  {c['track']:<10} {c['start']:9.3f}-{c['end']:<9.3f}s {c['bytes']:>10} B"
        )
    return 0


def _get(args, settings) -> int:
    import os
    import shutil

    from streamguard.errors import ConfigError, StreamguardError
    from streamguard.evidence.api import handle_get_clip

    status, _, path = handle_get_clip(_store(settings), args.call_id, args.clip)
    if status != 200 or not isinstance(path, Path):
        raise StreamguardError(f"call {args.call_id} has no complete clip {args.clip!r}")
    if args.output == "-":
        with open(path, "rb") as src:
            shutil.copyfileobj(src, sys.stdout.buffer)
        return 0
    out = Path(args.output or f"{args.clip}.wav")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if args.force else os.O_EXCL)
    try:
        fd = os.open(out, flags, 0o600)
    except FileExistsError:
        raise ConfigError(f"{out} exists (pass --force to overwrite it)") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as dst, open(path, "rb") as src:
        shutil.copyfileobj(src, dst)
    print(out)
    return 0


def _delete(args, settings) -> int:
    import asyncio
    from urllib.parse import quote

    from streamguard.alerts.oneshot import DaemonOwnsLog, offline_log, publish_and_wait
    from streamguard.api_client import api_request
    from streamguard.errors import StreamguardError
    from streamguard.evidence.api import handle_delete_evidence

    async def offline() -> int:
        async with offline_log(settings.events, model=settings.model.spec or "none") as bus:
            drafts: list = []
            handle_delete_evidence(_store(settings), args.call_id, drafts.append)
            for draft in drafts:
                await publish_and_wait(bus, draft)
            return sum(len(d.clips) for d in drafts)

    try:
        count = asyncio.run(offline())
    except DaemonOwnsLog:
        path = f"/api/calls/{quote(args.call_id, safe='')}/evidence"
        status, answer = api_request(settings, "DELETE", path)
        if status != 204:
            message = answer.get("error") if isinstance(answer, dict) else ""
            raise StreamguardError(f"the daemon refused the delete: {status} {message}") from None
        print(f"deleted the evidence of call {args.call_id} (through the daemon)")
        return 0
    print(f"deleted {count} clips of call {args.call_id}")
    return 0
