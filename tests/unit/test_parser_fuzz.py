"""Every parser, fed arbitrary input, raises only its own error type (or nothing).

The protocol cores never raise at all (they answer with a Reject); the byte-level parsers raise
their documented error. Twilio/Telnyx JSON and random frame sequences for /ingest are fuzzed in
test_twilio.py and test_native.py; this file covers the rest: structured /ingest handshakes,
RTP headers with CSRC/extension/padding and the demux behind them, G.711 and the other codecs,
the config loader, event parsing and the handshake's token reader, and nested or oversized
call metadata in every core that carries it (native, Twilio/Telnyx, AudioHook).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.datastructures import Headers
from websockets.http11 import Request

from streamguard.alerts.events import EVENT_TYPES, CallStarted, EventParseError, parse_event
from streamguard.audio.codecs import ENCODINGS, CodecError, StreamDecoder, decode
from streamguard.config import load_config
from streamguard.errors import ConfigError
from streamguard.server.httputil import request_token
from streamguard.sources.audiohook import AudioHookProtocol
from streamguard.sources.base import (
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    MAX_METADATA_KEYS,
    Audio,
    CallStart,
    Reject,
    metadata_problem,
    sequence_problems,
)
from streamguard.sources.native import IngestProtocol
from streamguard.sources.rtp import RtpDemux, RtpError, parse_rtp
from streamguard.sources.twilio import MediaStreamProtocol
from tests.audiohook_client import SAMPLE_ORG_ID, SAMPLE_PARTICIPANT, STEREO

SESSION = "30b0e395-84d3-4570-ac13-9a62d8f514c0"
CONVERSATION = "090eaa2f-72fa-480a-83e0-8667ff89c0ec"

FUZZ = settings(max_examples=150)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=16),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


# ---------------------------------------------------------------- /ingest handshakes

handshake_keys = st.sampled_from(
    ["sample_rate", "encoding", "channels", "tracks", "call_id", "sampleRate", "mixType",
     "event", "content-type", "callSid", "uuid", "conversation_uuid"]
)  # fmt: skip
handshake_values = st.one_of(
    values,
    st.sampled_from(
        [8000, 16000, 64000, 7999, "16000", " 8000 ", 1.5, 2, 9, "stereo", "mono", "MIXED",
         "pcm_s16le", "f32le", "mulaw", "opus", "websocket:connected", "audio/l16;rate=16000",
         "audio/L16 ; rate=8000 ;", "audio/l16", ["a", "b"], ["a", "a"]]
    ),
)  # fmt: skip


@FUZZ
@given(
    meta=st.dictionaries(handshake_keys, handshake_values, max_size=6),
    audio=st.lists(st.binary(max_size=40), max_size=4),
)
def test_any_ingest_handshake_is_accepted_or_rejected_never_raised(meta, audio):
    core = IngestProtocol()
    try:
        first = json.dumps(meta)
    except ValueError:  # NaN is not JSON: send it the way a careless client would
        first = json.dumps(meta, allow_nan=True)
    events = core.receive_text(first)
    for chunk in audio:
        events += core.receive_bytes(chunk)
    events += core.close()
    assert sequence_problems(events) == []


# ---------------------------------------------------------------- metadata from strangers


@st.composite
def hostile_metadata(draw) -> dict:
    """Metadata as a hostile client shapes it: nested (dicts or lists, up to far beyond the
    bound), wide (many keys), padded (up to twice the byte bound), with odd text."""
    leaf = draw(values | st.sampled_from(["\ud800", "é" * 50, 10**40, "Bearer x"]))
    for _ in range(draw(st.integers(0, 3 * MAX_METADATA_DEPTH))):
        leaf = {"k": leaf} if draw(st.booleans()) else [leaf]
    width = draw(st.integers(0, 2 * MAX_METADATA_KEYS))
    pad = draw(st.integers(0, 2 * MAX_METADATA_BYTES))
    return {"deep": leaf, "wide": {f"k{i}": i for i in range(width)}, "pad": "x" * pad}


def key_count(value: object) -> int:
    if isinstance(value, dict):
        return len(value) + sum(key_count(v) for v in value.values())
    if isinstance(value, list):
        return sum(key_count(v) for v in value)
    return 0


def first_frames(kind: str, meta: dict) -> list[str]:
    if kind == "native":
        return [json.dumps({"sample_rate": 8000, "encoding": "mulaw", **meta})]
    if kind == "twilio":
        start = {"callSid": "CA1", "tracks": ["inbound"], "customParameters": meta}
        return [json.dumps({"event": "start", "start": start})]
    start = {"call_control_id": "v3:1", "custom_parameters": meta}  # telnyx
    return [json.dumps({"event": "start", "sequence_number": "1", "start": start})]


@FUZZ
@given(kind=st.sampled_from(["native", "twilio", "telnyx"]), meta=hostile_metadata())
def test_nested_or_oversized_metadata_is_bounded_by_every_core(kind, meta):
    """A call starts only with metadata within the bounds (and then its call_started
    serialises); everything else is a Reject of kind ``metadata``, never an exception."""
    core = IngestProtocol() if kind == "native" else MediaStreamProtocol()
    events = [e for frame in first_frames(kind, meta) for e in core.receive_text(frame)]
    events += core.close()
    assert sequence_problems(events) == []
    starts = [e for e in events if isinstance(e, CallStart)]
    # The client's part as the core stores it (Twilio/Telnyx nest it one level down); the
    # core adds a few fields of its own, so near the bounds either answer is right.
    own = meta if kind == "native" else {"customParameters": meta}
    problem = metadata_problem(own)
    near = len(json.dumps(own)) > MAX_METADATA_BYTES - 200 or key_count(own) > MAX_METADATA_KEYS - 8
    if starts:
        (start,) = starts
        assert metadata_problem(start.metadata) is None and problem is None
        CallStarted(call_id=start.call_id, track=None, source=start.source,
                    metadata=start.metadata).to_json()  # fmt: skip
    else:
        (reject,) = [e for e in events if isinstance(e, Reject)]
        assert reject.kind == "metadata", reject
        assert problem is not None or near


@FUZZ
@given(meta=hostile_metadata())
def test_nested_or_oversized_custom_config_is_bounded_by_audiohook(meta):
    core = AudioHookProtocol(session_id=SESSION)
    params = {
        "organizationId": SAMPLE_ORG_ID,
        "conversationId": CONVERSATION,
        "participant": SAMPLE_PARTICIPANT,
        "media": [STEREO],
        "customConfig": meta,
    }
    message = {"version": "2", "id": SESSION, "type": "open", "seq": 1, "serverseq": 0,
               "position": "PT0S", "parameters": params}  # fmt: skip
    events = core.receive_text(json.dumps(message)) + core.close()
    assert sequence_problems(events) == []
    starts = [e for e in events if isinstance(e, CallStart)]
    if starts:
        assert metadata_problem(starts[0].metadata) is None
    else:
        (reject,) = [e for e in events if isinstance(e, Reject)]
        assert reject.kind == "metadata", reject


def test_nan_and_inf_float_audio_become_silence_not_nan():
    core = IngestProtocol()
    core.receive_text('{"sample_rate": 16000, "encoding": "f32le", "call_id": "f"}')
    raw = np.array([np.nan, np.inf, -np.inf, 0.5, 1e30, -1e30], "<f4").tobytes()
    (audio,) = core.receive_bytes(raw)
    assert isinstance(audio, Audio) and np.isfinite(audio.samples).all()
    assert audio.samples.min() >= -1.0 and audio.samples.max() < 1.0


# ---------------------------------------------------------------- RTP


@st.composite
def rtp_like(draw):
    """A header with every flag combination and a tail that may or may not fit it."""
    b0 = 0x80 | draw(st.integers(0, 0x3F))  # V=2, any P/X/CC
    head = bytes([b0, draw(st.integers(0, 255))]) + draw(st.binary(min_size=10, max_size=10))
    return head + draw(st.binary(max_size=90))


@settings(max_examples=400)
@given(rtp_like())
def test_rtp_headers_with_csrc_extension_padding_raise_only_rtp_error(data):
    try:
        packet = parse_rtp(data)
    except RtpError:
        return
    assert len(packet.csrcs) == data[0] & 0x0F
    assert (packet.extension is not None) == bool(data[0] & 0x10)
    assert len(packet.payload) + packet.padding <= len(data) - 12 - 4 * len(packet.csrcs)


@FUZZ
@given(
    st.lists(
        st.tuples(
            rtp_like() | st.binary(max_size=40),
            st.sampled_from([("127.0.0.1", 5000), ("::1", 5000, 0, 0), ("10.0.0.1", 1)]),
        ),
        max_size=30,
    )
)
def test_the_rtp_demux_never_raises_on_arbitrary_datagrams(datagrams):
    demux = RtpDemux({96: ("pcm_s16be", 16000)}, idle_timeout=0.5)
    out = []
    for i, (data, addr) in enumerate(datagrams):
        out += demux.push(data, addr, i * 0.02)
    out += demux.poll(10.0) + demux.close()
    by_call: dict[str, list] = {}
    for call_id, event in out:
        by_call.setdefault(call_id, []).append(event)
    for events in by_call.values():
        assert sequence_problems(events) == []


# ---------------------------------------------------------------- codecs (G.711 and PCM)


@settings(max_examples=300)
@given(encoding=st.sampled_from([*ENCODINGS, "opus", ""]), payload=st.binary(max_size=64))
def test_decode_raises_only_codec_error(encoding, payload):
    try:
        samples = decode(encoding, payload)
    except CodecError:
        return
    assert samples.dtype == np.float32 and np.isfinite(samples).all()
    assert samples.size == 0 or (samples.min() >= -1.0 and samples.max() < 1.0)


@given(st.integers(-3, 9), st.sampled_from([*ENCODINGS, "x"]), st.binary(max_size=30))
def test_stream_decoder_setup_and_input_raise_only_codec_error(channels, encoding, data):
    try:
        decoder = StreamDecoder(encoding, channels)
    except CodecError:
        return
    frames = decoder.push(data)
    assert frames.shape[1] == channels and np.isfinite(frames).all()


# ---------------------------------------------------------------- config


section = st.sampled_from(
    ["server", "auth", "model", "track", "smoothing", "verdict", "sources", "alerts", "logging",
     "limits", "bogus"]
)  # fmt: skip


@FUZZ
@given(st.dictionaries(section, values, max_size=4))
def test_any_config_data_loads_or_is_one_config_error(overrides):
    try:
        settings_ = load_config(None, overrides)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    assert settings_.server.port >= 0


@FUZZ
@given(st.binary(max_size=200))
def test_any_config_file_loads_or_is_one_config_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)


# ---------------------------------------------------------------- events


event_keys = st.sampled_from(
    ["type", "seq", "ts", "call_id", "track", "source", "model", "start", "end", "p_fake",
     "smoothed", "state", "threshold", "summary", "reason", "count", "first_seq", "last_seq",
     "metadata", "sample_rate", "tracks"]
)  # fmt: skip
event_values = st.one_of(values, st.sampled_from([*EVENT_TYPES, "twilio", 0.5, math.nan]))


@FUZZ
@given(st.dictionaries(event_keys, event_values, max_size=10))
def test_parse_event_raises_only_event_parse_error(data):
    for form in (data, json.dumps(data, allow_nan=True)):
        try:
            event = parse_event(form)
        except EventParseError as exc:
            assert "\n" not in str(exc)
            continue
        assert event.type in EVENT_TYPES


@given(st.one_of(st.text(max_size=80), st.binary(max_size=80)))
def test_parse_event_on_arbitrary_text_raises_only_event_parse_error(data):
    with pytest.raises(EventParseError):
        parse_event(data)


# ---------------------------------------------------------------- the handshake's token reader

header_text = st.text(
    st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters=",\r\n"), max_size=40
)


@given(
    authorization=st.none() | header_text,
    protocols=st.lists(
        st.one_of(header_text, header_text.map(lambda t: "streamguard.bearer." + t)), max_size=3
    ),
    query=header_text,
)
def test_request_token_never_raises(authorization, protocols, query):
    headers = Headers()
    if authorization is not None:
        headers["Authorization"] = authorization
    if protocols:
        headers["Sec-WebSocket-Protocol"] = ", ".join(protocols)
    token = request_token(Request(f"/alerts?token={query}", headers))
    assert token is None or isinstance(token, str)
