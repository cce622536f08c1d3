"""Analyst labels: a request's JSON to a ``label`` event, and labelled calls back from the log.

Two pure pieces, one per direction:

* :func:`parse_label_request` turns the body of ``POST /api/labels`` (and the arguments of
  ``streamguard label``) into a :class:`~streamguard.alerts.events.Label` draft, or a
  :class:`LabelRejected` with the HTTP status and one line saying what is wrong. Nothing is
  stored for a rejected request; the caller publishes the draft (the log stamps it).
* :func:`collect_labelled_calls` reads the event log (any ``read(after, filter, limit) ->
  Page``, e.g. :meth:`streamguard.alerts.store.EventStore.read`) and gathers, for every
  labelled call, each track's ``score`` events and its labels (the last label of a call or a
  track wins; a track's own label beats the call's), as the
  :class:`~streamguard.calibration.LabelledCall` that calibration replays.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from streamguard.alerts.bus import SubscriptionFilter
from streamguard.alerts.events import (
    LABEL_VALUES,
    MAX_LABEL_NOTE_CHARS,
    CallEnded,
    EventBase,
    Label,
    Score,
)
from streamguard.alerts.store import Page
from streamguard.calibration import LabelledCall, TrackScores
from streamguard.sources.base import MAX_CALL_ID_CHARS, is_text

__all__ = [
    "MAX_LABEL_REQUEST_BYTES",
    "MAX_TRACK_CHARS",
    "LabelRejected",
    "collect_labelled_calls",
    "handle_post_labels",
    "iter_log",
    "latest_labels",
    "parse_label_request",
]

#: Largest ``POST /api/labels`` body read (a label is a few hundred bytes).
MAX_LABEL_REQUEST_BYTES = 8192
#: Longest track name a label may name.
MAX_TRACK_CHARS = 128
_FIELDS = ("call_id", "label", "track", "note")


@dataclass(frozen=True)
class LabelRejected:
    """A request that stores nothing: ``status`` (400 malformed, 413 too large, 422 a field
    is wrong) and one line for the response body."""

    status: int
    message: str


def parse_label_request(
    body: bytes | str | dict[str, Any],
    *,
    who: str,
    max_bytes: int = MAX_LABEL_REQUEST_BYTES,
) -> Label | LabelRejected:
    """The ``label`` draft for a request body ``{"call_id", "label", "track"?, "note"?}``.

    ``who`` is the caller as the server knows it (the token's name, or ``"local"``), never
    taken from the body. A ``dict`` is a body already parsed (the CLI's arguments).
    """
    if isinstance(body, dict):
        data: Any = body
    else:
        raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
        if len(raw) > max_bytes:
            return LabelRejected(413, f"request body larger than {max_bytes} bytes")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            return LabelRejected(400, "request body is not JSON")
    if not isinstance(data, dict):
        return LabelRejected(
            400, 'request body must be a JSON object: {"call_id": ..., "label": ...}'
        )
    unknown = sorted(str(k) for k in data if k not in _FIELDS)
    if unknown:
        return LabelRejected(
            422, f"unknown field {unknown[0][:40]!r} (fields: {', '.join(_FIELDS)})"
        )
    call_id = data.get("call_id")
    if not isinstance(call_id, str) or not call_id.strip():
        return LabelRejected(422, "call_id: required, a non-empty string")
    if len(call_id) > MAX_CALL_ID_CHARS or not is_text(call_id):
        return LabelRejected(422, f"call_id: not a call id (text of at most {MAX_CALL_ID_CHARS})")
    label = data.get("label")
    if label not in LABEL_VALUES:
        return LabelRejected(422, "label: required, one of fake, real, unsure")
    track = data.get("track")
    if track is not None and (
        not isinstance(track, str)
        or not track.strip()
        or len(track) > MAX_TRACK_CHARS
        or not is_text(track)
    ):
        return LabelRejected(
            422, f"track: a track name (text of 1 to {MAX_TRACK_CHARS} characters) or absent"
        )
    note = data.get("note")
    if note is not None:
        if not isinstance(note, str) or not is_text(note):
            return LabelRejected(422, "note: text, or absent")
        note = note.strip() or None
        if note is not None and len(note) > MAX_LABEL_NOTE_CHARS:
            return LabelRejected(422, f"note: longer than {MAX_LABEL_NOTE_CHARS} characters")
    return Label(call_id=call_id, track=track, source=None, label=label, note=note, who=who)


# ------------------------------------------------------------------------ the endpoint

#: ``(status, headers, body)``, as :mod:`streamguard.evidence.api` returns them.
Response = tuple[int, dict[str, str], bytes]


def _json_response(status: int, data: Any) -> Response:
    body = json.dumps(data, separators=(",", ":")).encode()
    return status, {"Content-Type": "application/json", "Cache-Control": "no-store"}, body


async def handle_post_labels(
    body: bytes,
    *,
    who: str,
    commit: Callable[[Label], Awaitable[EventBase]],
) -> Response:
    """``POST /api/labels``: 201 with the stored ``label`` event (its ``seq`` and ``ts``), or
    the 4xx of :func:`parse_label_request` with nothing stored. ``who``: the token's name, or
    ``"local"``; ``commit``: publish and wait for the log (:func:`streamguard.alerts.oneshot.
    publish_and_wait` bound to the daemon's bus). A log that does not commit in time: 503
    (the label may still land)."""
    parsed = parse_label_request(body, who=who)
    if isinstance(parsed, LabelRejected):
        return _json_response(parsed.status, {"error": parsed.message})
    try:
        stored = await commit(parsed)
    except TimeoutError:
        return _json_response(503, {"error": "the event log did not commit the label in time"})
    return _json_response(201, stored.to_dict())


# ------------------------------------------------------------------------ reading the log

#: ``read(after, filter, limit=n) -> Page``: the event log's read API
#: (:meth:`streamguard.alerts.store.EventStore.read`).
Read = Callable[..., Page]


def iter_log(
    read: Read, flt: SubscriptionFilter | None = None, *, page: int = 500
) -> Iterator[EventBase]:
    """Every logged event matching ``flt``, oldest first, a page at a time."""
    after = 0
    while True:
        got = read(after, flt, limit=page)
        yield from got.events
        if got.scanned_to <= after:  # nothing further was committed: the end of the log
            return
        after = got.scanned_to


def latest_labels(
    events: Iterator[EventBase] | list[EventBase],
) -> dict[tuple[str, str | None], Label]:
    """The last label per ``(call_id, track)`` (``track`` None: the whole call)."""
    out: dict[tuple[str, str | None], Label] = {}
    for event in events:
        if isinstance(event, Label) and event.call_id is not None:
            out[(event.call_id, event.track)] = event
    return out


def collect_labelled_calls(read: Read, *, page: int = 500) -> list[LabelledCall]:
    """Every labelled call in the log with its tracks' scores (two reads: the labels, then
    the scores and ends of the labelled calls only), in the order of their first label."""
    labels = latest_labels(
        iter_log(read, SubscriptionFilter(types=frozenset({"label"})), page=page)
    )
    wanted = {call_id for call_id, _ in labels}
    windows: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
    speech: dict[str, dict[str, float]] = {}
    scores_and_ends = SubscriptionFilter(types=frozenset({"score", "call_ended"}))
    for event in iter_log(read, scores_and_ends, page=page):
        if event.call_id not in wanted:
            continue
        if isinstance(event, Score) and event.track is not None:
            windows.setdefault(event.call_id, {}).setdefault(event.track, []).append(
                (event.start, event.end, event.p_fake)
            )
        elif isinstance(event, CallEnded):
            for name, summary in event.tracks.items():
                speech.setdefault(event.call_id, {})[name] = summary.speech_seconds
    calls: list[LabelledCall] = []
    seen: set[str] = set()
    for call_id, _ in labels:
        if call_id in seen:
            continue
        seen.add(call_id)
        tracks = {
            name: TrackScores.of(w, speech_seconds=speech.get(call_id, {}).get(name))
            for name, w in windows.get(call_id, {}).items()
        }
        names = set(tracks) | {t for c, t in labels if c == call_id and t is not None}
        whole = labels.get((call_id, None))
        resolved = {}
        for name in sorted(names):
            own = labels.get((call_id, name))
            chosen = own or whole
            if chosen is not None:
                resolved[name] = chosen.label
        for name in resolved:
            tracks.setdefault(name, TrackScores())
        calls.append(LabelledCall(call_id, tracks, resolved))
    return calls
