"""``streamguard watch URL``: follow a daemon's ``/alerts`` stream in the terminal.

One line per event, alerts standing out (``!! ALERT raised``); ``--json`` prints the raw event
lines for piping into ``jq``. No reconnect: if the daemon is not there, or goes away, the
command says so on one line and exits non-zero, so scripts notice. Ctrl-C exits 0.

:func:`format_event` is pure and shared with the ``demo`` command.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlunsplit

HELP = "follow a daemon's /alerts event stream and print events as they arrive"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "url",
        nargs="?",
        default="ws://127.0.0.1:8765/alerts",
        help="the daemon's alerts URL (default: %(default)s)",
    )
    parser.add_argument("--call-id", help="only this call's events")
    parser.add_argument(
        "--types",
        help="comma-separated event types: call_started,score,alert,call_ended (default: all)",
    )
    parser.add_argument("--since", type=int, help="replay retained events after this seq first")
    parser.add_argument("--json", action="store_true", help="print raw JSON event lines")
    parser.add_argument(
        "--token",
        help="bearer token if the daemon sets [auth] alerts_token or token (default: "
        "$STREAMGUARD_AUTH__ALERTS_TOKEN, else $STREAMGUARD_AUTH__TOKEN)",
    )


def _num(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_event(event: Any) -> str:
    """One readable line for an event (an events.py model or its dict).

    ``HH:MM:SS.mmm  call/track  type  details``; unknown types fall back to their JSON.
    """
    from streamguard.policy.verdict import format_threshold

    e = event.to_dict() if hasattr(event, "to_dict") else dict(event)
    ts = str(e.get("ts", ""))
    clock = ts[11:23] if len(ts) >= 23 else ts
    who = str(e.get("call_id") or "-")
    if e.get("track") is not None:
        who += f"/{e['track']}"
    kind = e.get("type")
    window = f"[{_num(e.get('start'), 1)}-{_num(e.get('end'), 1)}s]"
    if kind == "score":
        detail = f"p_fake={_num(e.get('p_fake'))} smoothed={_num(e.get('smoothed'))} {window}"
        if e.get("allowlisted"):
            detail += f" allowlisted={e['allowlisted']}"
        label = "score"
    elif kind == "alert":
        state = str(e.get("state", "?"))
        label = "!! ALERT raised" if state == "raised" else "-- alert cleared"
        threshold = e.get("threshold")
        shown = "-" if threshold is None else format_threshold(threshold)
        detail = f"smoothed={_num(e.get('smoothed'))} threshold={shown} {window}"
    elif kind == "call_started":
        label = "call started"
        meta = e.get("metadata") or {}
        bits = [f"source={e.get('source')}"]
        if e.get("sample_rate"):
            bits.append(f"rate={e['sample_rate']}")
        bits += [f"{k}={v}" for k, v in meta.items() if isinstance(v, str | int | float)][:4]
        detail = " ".join(bits)
    elif kind == "call_ended":
        s = e.get("summary") or {}
        verdict = str(s.get("verdict", "?"))
        label = "call ended"
        detail = (
            f"verdict={verdict.upper()} max={_num(s.get('max_smoothed'))} "
            f"mean={_num(s.get('mean_smoothed'))} scored={s.get('windows_scored', 0)} "
            f"speech={_num(s.get('speech_seconds'), 1)}s/{_num(s.get('duration'), 1)}s "
            f"reason={e.get('reason')}"
        )
        if verdict == "fake":
            label = "!! call ended"
    elif kind == "dropped" and e.get("reason") == "retention":
        label = "!! expired"
        detail = (
            f"{e.get('count')} events older than the log keeps "
            f"(seq {e.get('first_seq')}..{e.get('last_seq')}); oldest available: "
            f"{(e.get('last_seq') or 0) + 1}"
        )
    elif kind == "dropped":
        label = "!! dropped"
        detail = (
            f"{e.get('count')} events lost (seq {e.get('first_seq')}..{e.get('last_seq')}): "
            "this watcher fell behind"
        )
    elif kind == "label":
        label = "label"
        detail = f"{str(e.get('label')).upper()} by {e.get('who')}"
        if e.get("note"):
            detail += f" note={e['note']!r}"
    elif kind == "evidence_saved":
        label = "evidence saved"
        detail = f"clip={e.get('clip')} {window} bytes={e.get('bytes')}"
    elif kind == "evidence_deleted":
        label = "evidence deleted"
        detail = (
            f"{len(e.get('clips') or [])} clips, {e.get('bytes')} bytes, reason={e.get('reason')}"
        )
    elif kind == "model_changed":
        label = "model changed"
        detail = f"{(e.get('old') or {}).get('name')} -> {(e.get('new') or {}).get('name')}"
    else:
        import json

        label, detail = str(kind), json.dumps(e, separators=(",", ":"))
    return f"{clock}  {who:<24} {label:<16} {detail}".rstrip()


def subscription_url(url: str, *, call_id: str | None, types: str | None, since: int | None) -> str:
    """``url`` with the filter query parameters added (existing ones kept)."""
    from streamguard.client import FEED_PATHS, split_ws_url
    from streamguard.errors import StreamguardError

    parts = split_ws_url(url)
    if parts.path.rstrip("/") in FEED_PATHS:  # a feed endpoint would wait for audio forever
        raise StreamguardError(
            f"{url} is a feed endpoint; subscribe to the daemon's /alerts (e.g. "
            f"{parts.scheme}://{parts.netloc}/alerts)"
        )
    # A flag replaces the same parameter written in the URL; the URL's own filters stay.
    given = {
        k for k, v in (("call_id", call_id), ("types", types), ("since", since)) if v or v == 0
    }
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in given]
    if call_id:
        query.append(("call_id", call_id))
    if types:
        query.append(("types", types))
    if since is not None:
        query.append(("since", str(since)))
    return urlunsplit(parts._replace(query=urlencode(query)))


async def watch(
    url: str, *, token: str | None = None, as_json: bool = False, out: Any = None
) -> int:
    """Connect and print until the server closes. Raises StreamguardError on refusal."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

    from streamguard.alerts.events import EventParseError, parse_event
    from streamguard.errors import StreamguardError

    out = out or sys.stdout
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        connection = await connect(url, additional_headers=headers, open_timeout=10)
    except InvalidStatus as exc:
        code = exc.response.status_code
        hint = {401: " (no token sent: --token)", 403: " (wrong token: check --token)"}.get(
            code, ""
        )
        raise StreamguardError(f"{url}: server refused: HTTP {code}{hint}") from None
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise StreamguardError(f"cannot connect to {url}: {exc}") from None
    async with connection:
        try:
            async for message in connection:
                if as_json:
                    print(message if isinstance(message, str) else message.decode(), file=out)
                else:
                    try:
                        line = format_event(parse_event(message))
                    except EventParseError:
                        line = f"? {message!s}"
                    print(line, file=out)
                out.flush()
        except ConnectionClosed:
            pass
    close = connection.protocol.close_rcvd
    if close is not None and close.code == 1008:  # policy: our filter or path was refused
        raise StreamguardError(f"server refused the subscription: {close.reason}")
    if close is not None and close.code == 1000:
        return 0
    why = f"{close.code} {close.reason}".rstrip() if close is not None else "connection lost"
    print(f"streamguard: server closed the stream ({why})", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    import asyncio
    import os

    url = subscription_url(args.url, call_id=args.call_id, types=args.types, since=args.since)
    token = (
        args.token
        or os.environ.get("STREAMGUARD_AUTH__ALERTS_TOKEN")
        or os.environ.get("STREAMGUARD_AUTH__TOKEN")
    )
    try:
        return asyncio.run(watch(url, token=token, as_json=args.json))
    except KeyboardInterrupt:
        return 0
