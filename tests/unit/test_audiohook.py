"""AudioHook protocol core: the specification's session and its faults, driven without a network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.audio.codecs import decode, encode
from streamguard.sources.audiohook import (
    NULL_UUID,
    AudioHookProtocol,
    parse_duration,
    select_media,
)
from streamguard.sources.base import (
    Audio,
    CallEnd,
    CallStart,
    Gap,
    ProtocolViolation,
    Reject,
    TrackEnd,
    TrackStart,
    sequence_problems,
)
from streamguard.sources.edges.websocket import CLOSE_CODES
from tests.audiohook_client import EXTERNAL, INTERNAL, SAMPLE_ORG_ID, SAMPLE_PARTICIPANT, STEREO

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SESSION = "30b0e395-84d3-4570-ac13-9a62d8f514c0"
CONVERSATION = "090eaa2f-72fa-480a-83e0-8667ff89c0ec"
L16_STEREO = {**STEREO, "format": "L16"}


class Client:
    """Builds client messages the way the specification numbers them."""

    def __init__(self, core: AudioHookProtocol, session: str = SESSION) -> None:
        self.core, self.session = core, session
        self.seq = 0
        self.samples = 0
        self.events: list = []
        self.replies: list[dict] = []

    def text(self, kind: str, params: dict | None = None, **override) -> list:
        self.seq += 1
        msg = {
            "version": "2",
            "id": self.session,
            "type": kind,
            "seq": self.seq,
            "serverseq": self.replies[-1]["seq"] if self.replies else 0,
            "position": f"PT{self.samples / 8000:g}S",
            "parameters": params if params is not None else {},
            **override,
        }
        return self._took(self.core.receive_text(json.dumps(msg)))

    def audio(self, frame: bytes, channels: int = 2) -> list:
        self.samples += len(frame) // channels
        return self._took(self.core.receive_bytes(frame))

    def open(self, media=None, **params) -> list:
        return self.text(
            "open",
            {
                "organizationId": SAMPLE_ORG_ID,
                "conversationId": CONVERSATION,
                "participant": SAMPLE_PARTICIPANT,
                "media": media or [STEREO, EXTERNAL, INTERNAL],
                "language": "en-US",
                **params,
            },
        )

    def _took(self, events: list) -> list:
        self.events += events
        self.replies += [json.loads(r) for r in self.core.data_to_send()]
        return events


def stereo_speech(seconds: float = 2.0) -> np.ndarray:
    audio, rate = sf.read(FIXTURES / "speech_stereo_8k.wav", dtype="float32")
    assert rate == 8000
    return audio[: int(seconds * rate)].T.copy()  # [2, n]


def interleaved(channels: np.ndarray, encoding: str) -> bytes:
    return encode(encoding, np.ascontiguousarray(channels.T).reshape(-1))


def chunks(raw: bytes, size: int) -> list[bytes]:
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def test_documented_session_open_stream_ping_close():
    core = AudioHookProtocol(session_id=SESSION, organization_id=SAMPLE_ORG_ID)
    client = Client(core)
    events = client.open()
    assert events[0] == CallStart(
        CONVERSATION,
        "audiohook",
        {
            "organizationId": SAMPLE_ORG_ID,
            "conversationId": CONVERSATION,
            "sessionId": SESSION,
            "participant": {
                "id": SAMPLE_PARTICIPANT["id"],
                "ani": "[redacted]",
                "aniName": "[redacted]",
                "dnis": "+1-800-555-6789",
            },
            "media": STEREO,
            "encoding": "mulaw",
            "sample_rate": 8000,
            "language": "en-US",
        },
    )
    assert events[1:] == [TrackStart("external", 8000), TrackStart("internal", 8000)]
    (opened,) = client.replies
    assert opened == {
        "version": "2",
        "type": "opened",
        "seq": 1,
        "clientseq": 1,
        "id": SESSION,
        "parameters": {"startPaused": False, "media": [STEREO]},
    }

    speech = stereo_speech()
    raw = interleaved(speech, "mulaw")
    for frame in chunks(raw, 3200):  # 200 ms of stereo PCMU, as Genesys sends it
        client.audio(frame)
    client.text("ping")
    assert client.replies[-1]["type"] == "pong" and client.replies[-1]["clientseq"] == client.seq
    events = client.text("close", {"reason": "end"})
    assert events == [TrackEnd("external"), TrackEnd("internal"), CallEnd("stop")]
    assert client.replies[-1]["type"] == "closed" and client.replies[-1]["seq"] == 3
    assert core.finished
    assert sequence_problems(client.events) == []
    for i, track in enumerate(("external", "internal")):
        got = np.concatenate(
            [e.samples for e in client.events if isinstance(e, Audio) and e.track == track]
        )
        np.testing.assert_array_equal(got, decode("mulaw", encode("mulaw", speech[i])))
    assert core.stats.audio_frames == len(chunks(raw, 3200))


def test_include_ani_keeps_the_callers_number():
    client = Client(AudioHookProtocol(include_ani=True))
    start = client.open()[0]
    assert start.metadata["participant"]["ani"] == "+1-555-555-1234"
    assert start.metadata["participant"]["aniName"] == "John Doe"


def test_mono_and_l16_offers():
    client = Client(AudioHookProtocol())
    client.open(media=[INTERNAL])
    assert client.replies[0]["parameters"]["media"] == [INTERNAL]
    assert client.events[1:] == [TrackStart("internal", 8000)]

    client = Client(AudioHookProtocol())
    client.open(media=[L16_STEREO])
    speech = stereo_speech(0.5)
    client.audio(interleaved(speech, "pcm_s16le"), channels=4)  # 2 bytes x 2 channels
    external = [e for e in client.events if isinstance(e, Audio) and e.track == "external"]
    np.testing.assert_array_equal(
        external[0].samples, decode("pcm_s16le", encode("pcm_s16le", speech[0]))
    )


@pytest.mark.parametrize(
    ("offer", "chosen"),
    [
        ([EXTERNAL, STEREO, INTERNAL], STEREO),
        ([L16_STEREO, STEREO], STEREO),
        ([{**EXTERNAL, "format": "L16"}, L16_STEREO], L16_STEREO),
        ([{**STEREO, "rate": 4000}, EXTERNAL], EXTERNAL),
        ([{**STEREO, "format": "opus"}], None),
        ([{**STEREO, "channels": ["external", "external"]}], None),
        ("nonsense", None),
    ],
)
def test_media_selection_prefers_pcmu_stereo(offer, chosen):
    assert select_media(offer) == chosen


def test_pause_resume_discarded_become_gaps_and_audio_while_paused_is_refused():
    client = Client(AudioHookProtocol())
    client.open()
    frame = interleaved(stereo_speech(0.2), "mulaw")
    client.audio(frame)
    client.text("paused")
    assert client.core.state == "paused"
    client.samples += 8000  # one second discarded while paused
    events = client.text("resumed", {"start": "PT0.2S", "discarded": "PT1S"})
    assert events == [Gap("external", 8000), Gap("internal", 8000)]
    assert client.core.state == "active"
    client.samples += 1600
    events = client.text("discarded", {"start": "PT1.2S", "discarded": "PT0.2S"})
    assert events == [Gap("external", 1600), Gap("internal", 1600)]
    client.audio(frame)
    client.text("paused")
    events = client.audio(frame)
    assert events[-1] == Reject("protocol", "audio while the stream is paused")
    assert client.replies[-1]["type"] == "disconnect"
    assert client.replies[-1]["parameters"]["reason"] == "error"
    assert sequence_problems(client.events) == []


def test_server_pause_and_resume_requests():
    client = Client(AudioHookProtocol())
    client.core.pause()  # before open: nothing to pause
    assert client.core.data_to_send() == []
    client.open()
    client.core.pause()
    client.core.resume()
    assert [json.loads(m)["type"] for m in client.core.data_to_send()] == ["pause", "resume"]


def test_update_gets_updated_and_client_errors_are_recorded():
    client = Client(AudioHookProtocol())
    client.open()
    client.text("update", {"language": "fr-FR"})
    assert client.replies[-1]["type"] == "updated" and client.core.language == "fr-FR"
    client.text("error", {"code": 429, "message": "rate limited", "retryAfter": "PT2S"})
    assert client.core.stats.client_errors == [(429, "rate limited")]
    assert not client.core.finished


def test_position_ahead_is_filled_and_behind_is_refused():
    client = Client(AudioHookProtocol())
    client.open()
    client.audio(interleaved(stereo_speech(0.2), "mulaw"))
    client.samples += 800  # 100 ms the client counted but never sent
    events = client.text("ping")
    assert events == [Gap("external", 800), Gap("internal", 800)]
    client.samples -= 1600
    events = client.text("ping")
    assert isinstance(events[-1], Reject) and "behind" in events[-1].reason
    assert sequence_problems(client.events) == []


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"seq": 5}, "seq 2 out of order"),
        ({"serverseq": 9}, "serverseq 9"),
        ({"id": "11111111-2222-3333-4444-555555555555"}, "not this session"),
        ({"version": "1"}, "version"),
        ({"position": "12s"}, "duration"),
        ({"type": "opened"}, "not a client message"),
    ],
)
def test_sequence_id_version_and_position_are_checked(override, fragment):
    client = Client(AudioHookProtocol(session_id=SESSION))
    client.open()
    if "seq" in override:
        override = {"seq": 5}
        fragment = "seq 5 out of order"
    events = client.text("ping", **override)
    assert events[:3] == [TrackEnd("external"), TrackEnd("internal"), CallEnd("error")]
    assert isinstance(events[3], Reject) and fragment in events[3].reason
    assert client.replies[-1]["type"] == "disconnect"
    assert fragment in client.replies[-1]["parameters"]["info"]
    assert client.core.finished


def test_open_from_another_organisation_is_unauthorized():
    client = Client(AudioHookProtocol(organization_id="11111111-2222-3333-4444-555555555555"))
    events = client.open()
    assert events == [
        Reject("protocol", "organizationId does not match the Audiohook-Organization-Id header")
    ]
    assert client.replies[-1]["parameters"]["reason"] == "unauthorized"


def test_nothing_we_can_decode_is_unsupported_media():
    client = Client(AudioHookProtocol())
    events = client.open(media=[{**STEREO, "format": "opus"}])
    assert isinstance(events[-1], Reject) and CLOSE_CODES[events[-1].kind] == 1003


def test_connection_probe_is_answered_without_a_call():
    client = Client(AudioHookProtocol())
    client.text(
        "open",
        {
            "organizationId": SAMPLE_ORG_ID,
            "conversationId": NULL_UUID,
            "participant": {"id": NULL_UUID, "ani": "", "aniName": "", "dnis": ""},
            "media": [STEREO],
        },
    )
    assert client.replies[-1]["type"] == "opened"
    assert client.text("close", {"reason": "end"}) == []
    assert client.replies[-1]["type"] == "closed" and client.events == []


@pytest.mark.parametrize(
    ("action", "fragment"),
    [
        (lambda c: c.audio(b"\xff" * 160), "audio before"),
        (lambda c: c.text("ping"), "before open"),
        (lambda c: c.core.receive_text("{"), "not valid JSON"),
        (lambda c: c.core.receive_text("x" * 70000), "too large"),
    ],
)
def test_before_open(action, fragment):
    client = Client(AudioHookProtocol())
    events = action(client)
    assert isinstance(events[-1], Reject) and fragment in events[-1].reason


def test_odd_sized_stereo_frame_is_refused_and_connection_loss_ends_the_call():
    client = Client(AudioHookProtocol())
    client.open()
    events = client.audio(b"\xff" * 3)
    assert isinstance(events[-1], Reject) and "whole" in events[-1].reason

    client = Client(AudioHookProtocol())
    client.open()
    assert client.core.close() == [TrackEnd("external"), TrackEnd("internal"), CallEnd("closed")]
    assert client.core.receive_bytes(b"\xff\xff") == []


def test_server_side_completed_disconnect():
    client = Client(AudioHookProtocol())
    client.open()
    assert client.core.disconnect("call length limit") == [
        TrackEnd("external"),
        TrackEnd("internal"),
        CallEnd("stop"),
    ]
    (msg,) = [json.loads(m) for m in client.core.data_to_send()]
    assert msg["type"] == "disconnect" and msg["parameters"]["reason"] == "completed"
    client.replies.append(msg)
    assert client.text("close", {"reason": "disconnect"}) == []
    assert client.replies[-1]["type"] == "closed"


@pytest.mark.parametrize(
    ("text", "seconds"), [("PT0S", 0.0), ("PT1.25S", 1.25), ("PT.5S", 0.5), ("PT12.S", 12.0)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["P1S", "PT-1S", "PT1.2.3S", "PT1M", 3, None, "PT S"])
def test_bad_durations(bad):
    with pytest.raises(ProtocolViolation):
        parse_duration(bad)


_messages = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64),
    st.fixed_dictionaries(
        {
            "version": st.sampled_from(["2", "1"]),
            "id": st.sampled_from([SESSION, NULL_UUID, "x"]),
            "type": st.sampled_from(
                ["open", "close", "ping", "paused", "resumed", "discarded", "update", "error", "x"]
            ),
            "seq": st.integers(0, 4),
            "serverseq": st.integers(0, 3),
            "position": st.sampled_from(["PT0S", "PT0.02S", "PT5S", "bad"]),
            "parameters": st.one_of(
                st.just({}),
                st.just({"reason": "end"}),
                st.just({"start": "PT0S", "discarded": "PT0.5S"}),
                st.just(
                    {
                        "organizationId": SAMPLE_ORG_ID,
                        "conversationId": CONVERSATION,
                        "participant": SAMPLE_PARTICIPANT,
                        "media": [STEREO],
                    }
                ),
            ),
        }
    ).map(json.dumps),
)


@settings(max_examples=300)
@given(st.lists(_messages, max_size=12))
def test_arbitrary_input_never_raises_and_keeps_the_invariants(inputs):
    core = AudioHookProtocol()
    events = []
    seqs = []
    for item in inputs:
        events += core.receive_bytes(item) if isinstance(item, bytes) else core.receive_text(item)
        seqs += [json.loads(m)["seq"] for m in core.data_to_send()]
    events += core.close()
    assert sequence_problems(events) == []
    assert seqs == list(range(1, len(seqs) + 1))


def test_close_before_open_is_answered_without_a_call():
    client = Client(AudioHookProtocol())
    assert client.text("close", {"reason": "error"}) == []
    assert client.replies[-1]["type"] == "closed" and client.core.finished
