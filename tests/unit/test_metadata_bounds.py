"""Call metadata is data from strangers: every core bounds it the same way (sources/base.py).

Issue #21, finding 1 and 8: a value nested hundreds of levels deep (it parses, and pydantic then
refuses to serialise it), a megabyte of metadata, a lone surrogate escape (``"\\ud800"``: it
parses, and no event holding it can be written as UTF-8) were accepted into ``call_started``.
Each core now refuses them with 1008 and a ``Reject`` of kind ``metadata``, before any call
starts; whatever a core does accept serialises.
"""

from __future__ import annotations

import json

import pytest

from streamguard.alerts.events import CallStarted
from streamguard.sources.audiohook import AudioHookProtocol
from streamguard.sources.base import (
    MAX_CALL_ID_CHARS,
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    MAX_METADATA_KEYS,
    CallStart,
    Reject,
    metadata_problem,
    sequence_problems,
)
from streamguard.sources.edges.websocket import CLOSE_CODES
from streamguard.sources.native import IngestProtocol
from streamguard.sources.twilio import MediaStreamProtocol
from tests.audiohook_client import EXTERNAL, INTERNAL, SAMPLE_ORG_ID, SAMPLE_PARTICIPANT, STEREO

SESSION = "30b0e395-84d3-4570-ac13-9a62d8f514c0"
CONVERSATION = "090eaa2f-72fa-480a-83e0-8667ff89c0ec"


def nested(levels: int, leaf: object = 1, container: str = "dict") -> object:
    """A value ``levels`` containers deep (``nested(0)`` is the leaf itself)."""
    value = leaf
    for _ in range(levels):
        value = {"k": value} if container == "dict" else [value]
    return value


def test_the_bounds_count_depth_keys_and_bytes():
    assert metadata_problem({}) is None
    assert metadata_problem(nested(MAX_METADATA_DEPTH)) is None
    assert "nested deeper than 8" in metadata_problem(nested(MAX_METADATA_DEPTH + 1))
    assert "nested deeper" in metadata_problem(nested(MAX_METADATA_DEPTH + 1, container="list"))
    assert "nested deeper" in metadata_problem({"a": nested(990)})  # passes json's own guard
    assert metadata_problem({f"k{i}": 0 for i in range(MAX_METADATA_KEYS)}) is None
    many = {"a": {f"k{i}": 0 for i in range(MAX_METADATA_KEYS)}, "b": 1}
    assert "more than 128 keys" in metadata_problem(many)
    assert metadata_problem({"pad": "x" * (MAX_METADATA_BYTES - 20)}) is None
    assert "larger than 8192 bytes" in metadata_problem({"pad": "x" * MAX_METADATA_BYTES})
    assert "larger than" in metadata_problem({"pad": "é" * (MAX_METADATA_BYTES // 2)})
    assert "larger than" in metadata_problem({"list": [0] * 100_000})  # stops counting early
    assert "UTF-8" in metadata_problem({"a": "\ud800"})
    assert "UTF-8" in metadata_problem({"\udfff": 1})


# ---------------------------------------------------------------- each core


def native(meta: dict) -> list:
    core = IngestProtocol()
    first = {"sample_rate": 16000, "encoding": "pcm_s16le", "call_id": "n1", **meta}
    return core.receive_text(json.dumps(first)) + core.close()


def twilio(params: object, call_sid: str = "CA1") -> list:
    core = MediaStreamProtocol()
    start = {
        "event": "start",
        "streamSid": "MZ1",
        "start": {
            "accountSid": "AC1",
            "callSid": call_sid,
            "tracks": ["inbound"],
            "customParameters": params,
        },
    }
    return core.receive_text(json.dumps(start)) + core.close()


def telnyx(params: object) -> list:
    core = MediaStreamProtocol()
    start = {
        "event": "start",
        "sequence_number": "1",
        "stream_id": "s1",
        "start": {"call_control_id": "v3:1", "custom_parameters": params},
    }
    return core.receive_text(json.dumps(start)) + core.close()


def audiohook(custom: object) -> tuple[list, list[dict]]:
    core = AudioHookProtocol(session_id=SESSION)
    msg = {
        "version": "2",
        "id": SESSION,
        "type": "open",
        "seq": 1,
        "serverseq": 0,
        "position": "PT0S",
        "parameters": {
            "organizationId": SAMPLE_ORG_ID,
            "conversationId": CONVERSATION,
            "participant": SAMPLE_PARTICIPANT,
            "media": [STEREO, EXTERNAL, INTERNAL],
            "customConfig": custom,
        },
    }
    events = core.receive_text(json.dumps(msg))
    return events + core.close(), [json.loads(m) for m in core.data_to_send()]


HOSTILE = {
    "nested": nested(300),
    "nested_list": nested(300, container="list"),
    "deep_enough": nested(MAX_METADATA_DEPTH),
    "large": "x" * 60_000,  # under AudioHook's own 64 K message bound
    "many_keys": {f"k{i}": i for i in range(1000)},
    "surrogate": "\ud800",
}


def refused_for_metadata(events: list) -> Reject:
    assert sequence_problems(events) == []
    assert not any(isinstance(e, CallStart) for e in events)
    (reject,) = [e for e in events if isinstance(e, Reject)]
    assert (CLOSE_CODES[reject.kind], reject.kind) == (1008, "metadata")
    return reject


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest.mark.parametrize("core", [native, twilio, telnyx])
def test_hostile_metadata_is_refused_by_every_core(core, case):
    events = core({"extra": HOSTILE[case]})
    reason = refused_for_metadata(events).reason
    assert "metadata" in reason and len(reason.encode()) <= 123


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_custom_config_is_refused_before_audiohook_answers_opened(case):
    events, replies = audiohook({"extra": HOSTILE[case]})
    refused_for_metadata(events)
    assert [r["type"] for r in replies] == ["disconnect"]
    assert replies[0]["parameters"]["reason"] == "error"
    assert "metadata" in replies[0]["parameters"]["info"]


@pytest.mark.parametrize(
    "core, wrap",
    [(native, 1), (twilio, 2), (telnyx, 2), (lambda m: audiohook(m)[0], 2)],
    ids=["native", "twilio", "telnyx", "audiohook"],
)
def test_metadata_within_the_bounds_starts_a_call_that_serialises(core, wrap):
    # The core's own object (and Twilio's customParameters) are levels too.
    meta = {"ok": nested(MAX_METADATA_DEPTH - wrap), "note": "é" * 100}
    (start,) = [e for e in core(meta) if isinstance(e, CallStart)]
    event = CallStarted(
        call_id=start.call_id, track=None, source=start.source, metadata=start.metadata
    )
    assert json.loads(event.to_json())["metadata"] == start.metadata


def test_the_reported_megabyte_of_metadata_is_refused():
    assert "larger than 8192" in refused_for_metadata(native({"blob": "x" * 1_040_000})).reason


def test_call_ids_and_track_names_are_bounded_text():
    refused_for_metadata(twilio({}, call_sid="C" * (MAX_CALL_ID_CHARS + 1)))
    refused_for_metadata(twilio({}, call_sid="CA\ud800"))
    core = MediaStreamProtocol()
    events = core.receive_text(
        json.dumps({"event": "start", "start": {"callSid": "CA1", "tracks": ["in\ud800"]}})
    )
    assert sequence_problems(events) == [] and isinstance(events[-1], Reject)
    # /ingest picks the first call id key that is short text; a long one gets a fresh id
    (start,) = [e for e in native({"call_id": "x" * 300}) if isinstance(e, CallStart)]
    assert len(start.call_id) == 32
