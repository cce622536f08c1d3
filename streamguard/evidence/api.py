"""The evidence endpoints as plain functions: request inputs in, ``(status, headers, body)`` out.

No server here: the front door routes, guards (like ``/alerts``: the alerts token when one is
configured, refused beyond loopback without one) and writes the response; these functions only
decide it, so each is unit-tested on a real store and wiring one is one line in a route table.

``body`` is ``bytes``, or a :class:`~pathlib.Path` for ``GET`` of a clip (the server streams the
file rather than reading a 460 MB four-hour clip into memory). The store does blocking file I/O
and is used by one thread: the daemon calls these on its evidence thread (the one that writes
clips), never on the event loop.

=====================================  =====================================================
``GET /api/calls/{call_id}/evidence``  :func:`handle_get_evidence` -> 200 JSON, clips listed
``GET /api/calls/{call_id}/evidence/{clip}``  :func:`handle_get_clip` -> 200 ``audio/wav``
``DELETE /api/calls/{call_id}/evidence``  :func:`handle_delete_evidence` -> 204
=====================================  =====================================================
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from streamguard.alerts.events import EventBase, EvidenceDeleted
from streamguard.evidence.store import ClipInfo, EvidenceStore, valid_clip_id
from streamguard.sources.base import MAX_CALL_ID_CHARS, is_text

__all__ = [
    "Response",
    "clip_json",
    "evidence_url",
    "handle_delete_evidence",
    "handle_get_clip",
    "handle_get_evidence",
]

#: ``(status, headers, body)``; ``body`` a Path means "send this file".
Response = tuple[int, dict[str, str], bytes | Path]

_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _json(status: int, data: Any) -> Response:
    body = json.dumps(data, separators=(",", ":")).encode()
    return status, {"Content-Type": "application/json", **_NO_STORE}, body


def _problem(status: int, message: str) -> Response:
    return _json(status, {"error": message})


def _bad_call_id(call_id: str) -> Response | None:
    if not call_id or len(call_id) > MAX_CALL_ID_CHARS or not is_text(call_id):
        return _problem(400, f"not a call id (text of 1 to {MAX_CALL_ID_CHARS} characters)")
    return None


def evidence_url(call_id: str, clip: str) -> str:
    """The path of a clip's audio (the call id percent-encoded: it is feed data)."""
    return f"/api/calls/{quote(call_id, safe='')}/evidence/{clip}"


def clip_json(info: ClipInfo) -> dict[str, Any]:
    """One clip as the listing shows it (call seconds, bytes of the WAV)."""
    return {
        "clip": info.clip,
        "track": info.track,
        "start": info.start,
        "end": info.end,
        "bytes": info.bytes,
        "url": evidence_url(info.call_id, info.clip),
    }


def handle_get_evidence(store: EvidenceStore | None, call_id: str) -> Response:
    """``GET /api/calls/{call_id}/evidence``: the call's complete clips (an empty list when it
    has none, or when evidence is off: ``store`` None). ``call_id`` is the path segment,
    percent-decoded."""
    bad = _bad_call_id(call_id)
    if bad is not None:
        return bad
    clips = [] if store is None else [c for c in store.clips(call_id) if c.complete]
    return _json(200, {"call_id": call_id, "clips": [clip_json(c) for c in clips]})


def handle_get_clip(store: EvidenceStore | None, call_id: str, clip: str) -> Response:
    """``GET /api/calls/{call_id}/evidence/{clip}``: the clip's WAV (404 when the call has no
    such complete clip). ``inline``: the dashboard's ``<audio>`` plays it."""
    bad = _bad_call_id(call_id)
    if bad is not None:
        return bad
    if not valid_clip_id(clip):
        return _problem(404, "no such clip")
    path = None if store is None else store.wav_path(call_id, clip)
    if path is None:
        return _problem(404, "no such clip")
    headers = {
        "Content-Type": "audio/wav",
        "Content-Length": str(path.stat().st_size),
        "Content-Disposition": f'inline; filename="{clip}.wav"',
        **_NO_STORE,
    }
    return 200, headers, path


def handle_delete_evidence(
    store: EvidenceStore | None,
    call_id: str,
    publish: Callable[[EventBase], Any],
) -> Response:
    """``DELETE /api/calls/{call_id}/evidence``: remove the call's clips (a clip still being
    written stops there) and ``publish`` one ``evidence_deleted``; 204 either way (deleting
    what is not there leaves the same state), and no event when there was nothing.

    ``publish`` is called on the thread this runs on: from the evidence thread, pass one that
    hops to the loop (``lambda e: loop.call_soon_threadsafe(bus.publish, e)``).
    """
    bad = _bad_call_id(call_id)
    if bad is not None:
        return bad
    event: EvidenceDeleted | None = None if store is None else store.delete_call(call_id)
    if event is not None:
        publish(event)
    return 204, dict(_NO_STORE), b""
