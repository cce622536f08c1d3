"""The operator loop's HTTP handlers (evidence, labels) as plain functions on real stores.

The front door routes and guards; these tests check what each handler decides, on a real
evidence folder and, for labels, a real SQLite event log behind a real bus.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import soundfile as sf
from hypothesis import given
from hypothesis import strategies as st

from streamguard.alerts.bus import AlertBus
from streamguard.alerts.events import EvidenceDeleted, Label
from streamguard.alerts.oneshot import publish_and_wait
from streamguard.alerts.store import EventStore
from streamguard.config import EventsSettings
from streamguard.evidence import EvidenceStore, TrackRecorder
from streamguard.evidence.api import (
    evidence_url,
    handle_delete_evidence,
    handle_get_clip,
    handle_get_evidence,
)
from streamguard.labels import handle_post_labels

RATE = 8000
CALL = "CA/odd id?&"  # a call id that must be encoded in a URL and never reach a path


def alerting_clip(store: EvidenceStore, call_id: str = CALL) -> None:
    """One alert's clip on a track: 10 s of a tone, raised at 3 s, cleared at 5 s."""
    rec = TrackRecorder(RATE, keep="alerts", lookback_seconds=8.0)
    tone = (0.3 * np.sin(np.arange(10 * RATE) * 2 * np.pi * 440 / RATE)).astype(np.float32)
    ops = rec.push(tone[: 6 * RATE]) + rec.raised(3.0) + rec.cleared(5.0)
    ops += rec.push(tone[6 * RATE :]) + rec.finish()
    store.apply(ops, call_id=call_id, track="inbound", source="twilio", rate=RATE)


def test_listing_names_each_clip_with_a_url_that_serves_its_wav(tmp_path):
    store = EvidenceStore(tmp_path / "ev")
    alerting_clip(store)
    status, headers, body = handle_get_evidence(store, CALL)
    assert status == 200 and headers["Content-Type"] == "application/json"
    listing = json.loads(body)
    assert listing["call_id"] == CALL
    [clip] = listing["clips"]
    assert (clip["track"], clip["start"], clip["end"]) == ("inbound", 2.0, 6.0)
    assert clip["url"] == evidence_url(CALL, clip["clip"])
    assert clip["url"].startswith("/api/calls/CA%2Fodd%20id%3F%26/evidence/")
    status, headers, path = handle_get_clip(store, CALL, clip["clip"])
    assert status == 200 and headers["Content-Type"] == "audio/wav"
    assert isinstance(path, Path) and int(headers["Content-Length"]) == clip["bytes"]
    audio, rate = sf.read(path, dtype="int16")
    assert rate == RATE and len(audio) == 4 * RATE


def test_unknown_calls_and_clips_are_empty_or_404_never_an_error(tmp_path):
    store = EvidenceStore(tmp_path / "ev")
    alerting_clip(store)
    assert json.loads(handle_get_evidence(store, "other")[2]) == {"call_id": "other", "clips": []}
    assert json.loads(handle_get_evidence(None, CALL)[2])["clips"] == []  # evidence off
    clip = json.loads(handle_get_evidence(store, CALL)[2])["clips"][0]["clip"]
    assert handle_get_clip(store, "other", clip)[0] == 404  # a clip of another call
    assert handle_get_clip(store, CALL, "../../etc/passwd")[0] == 404
    assert handle_get_clip(store, CALL, "0" * 16)[0] == 404
    assert handle_get_evidence(store, "x" * 300)[0] == 400
    assert handle_get_evidence(store, "")[0] == 400


def test_delete_removes_the_files_and_publishes_one_event(tmp_path):
    store = EvidenceStore(tmp_path / "ev")
    alerting_clip(store)
    alerting_clip(store, "keep-me")
    published = []
    status, _, body = handle_delete_evidence(store, CALL, published.append)
    assert (status, body) == (204, b"")
    [event] = published
    assert isinstance(event, EvidenceDeleted) and event.reason == "request" and event.bytes > 0
    assert json.loads(handle_get_evidence(store, CALL)[2])["clips"] == []
    assert [p.suffix for p in (tmp_path / "ev").rglob("*.wav")] == [".wav"]  # keep-me's
    assert handle_delete_evidence(store, CALL, published.append)[0] == 204
    assert len(published) == 1  # nothing left: no second event


def test_a_label_is_answered_with_the_event_the_durable_log_stored(tmp_path):
    """POST /api/labels through a real bus and SQLite log: 201 with its seq; a bad body is a
    4xx and nothing reaches the log."""
    from streamguard.alerts.backends import SqliteBackend

    async def main():
        settings = EventsSettings(path=str(tmp_path / "events.db"), commit_interval_ms=5)
        backend = SqliteBackend(settings)
        bus = AlertBus("tiny")
        await backend.start(bus)
        try:

            def commit(draft):
                return publish_and_wait(bus, draft, timeout=5)

            body = json.dumps({"call_id": "CA1", "label": "real", "note": "IVR greeting"})
            ok = await handle_post_labels(body.encode(), who="analyst", commit=commit)
            bad = await handle_post_labels(b'{"call_id": "CA1", "label": "maybe"}', who="x",
                                           commit=commit)  # fmt: skip
        finally:
            await backend.close()
        return ok, bad

    ok, bad = asyncio.run(main())
    status, headers, body = ok
    stored = json.loads(body)
    assert status == 201 and headers["Content-Type"] == "application/json"
    assert stored["type"] == "label" and stored["seq"] == 1 and stored["who"] == "analyst"
    assert bad[0] == 422 and "label" in json.loads(bad[2])["error"]
    events = EventStore(tmp_path / "events.db", readonly=True).read(0).events
    assert [(e.type, e.seq) for e in events] == [("label", 1)]
    assert isinstance(events[0], Label) and events[0].note == "IVR greeting"


_JSONISH = st.one_of(st.text(max_size=20), st.integers(), st.none())
MODEL_BODIES = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.dictionaries(st.sampled_from(["model", "x"]), _JSONISH, max_size=2).map(
        lambda d: json.dumps(d).encode()
    ),
)


@given(MODEL_BODIES)
def test_any_model_request_body_is_a_4xx_or_a_swap_never_an_exception(body):
    """POST /api/model: whatever arrives, a clear status; only {"model": SPEC} reaches swap."""
    from streamguard.model_swap import handle_post_model

    asked = []

    async def swap(spec):
        asked.append(spec)
        from streamguard.model_swap import SwapRefused

        raise SwapRefused(f"cannot load model {spec!r}")

    status, headers, raw = asyncio.run(handle_post_model(body, swap=swap))
    assert status in (400, 413, 422) and headers["Content-Type"] == "application/json"
    assert json.loads(raw)["error"]
    if asked:
        assert (
            json.loads(body) == {"model": asked[0]} or json.loads(body)["model"].strip() == asked[0]
        )
