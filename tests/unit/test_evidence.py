"""Evidence audio: which spans a track keeps (the recorder) and the clips on disk (the store)."""

from __future__ import annotations

import itertools
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import example, given
from hypothesis import strategies as st

from streamguard.alerts.events import EvidenceDeleted, EvidenceSaved, parse_event
from streamguard.audio.file import read_audio
from streamguard.config import EventsSettings, EvidenceSettings
from streamguard.evidence import (
    CloseClip,
    EvidenceStore,
    OpenClip,
    TrackRecorder,
    WriteClip,
    call_key,
    lookback_seconds,
)

RATE = 8000


def ramp(start: int, n: int) -> np.ndarray:
    """Samples whose int16 value encodes their index in the stream (exact through int16)."""
    return (((np.arange(start, start + n) % 20011) - 10000) / 32768.0).astype(np.float32)


def ramp16(start: int, stop: int) -> np.ndarray:
    return ((np.arange(start, stop) % 20011) - 10000).astype(np.int16)


def ids():
    counter = itertools.count()
    return lambda: f"{next(counter):016x}"


def collect(ops, clips: dict[str, dict]) -> None:
    """Replay clip operations into {clip: {start, end, audio}} (what the store would write)."""
    for op in ops:
        if isinstance(op, OpenClip):
            assert op.clip not in clips
            clips[op.clip] = {"start": op.start, "end": None, "parts": []}
        elif isinstance(op, WriteClip):
            assert clips[op.clip]["end"] is None, "write after close"
            assert op.samples.dtype == np.int16
            clips[op.clip]["parts"].append(op.samples)
        elif isinstance(op, CloseClip):
            clips[op.clip]["end"] = op.end


def audio(clip: dict) -> np.ndarray:
    return np.concatenate(clip["parts"]) if clip["parts"] else np.zeros(0, np.int16)


def recorder(keep="alerts", lookback=12.0, **kw) -> TrackRecorder:
    return TrackRecorder(RATE, keep=keep, lookback_seconds=lookback, new_id=ids(), **kw)


# ------------------------------------------------------------------ the recorder's rule


def test_an_alert_keeps_a_second_before_its_first_window_to_a_second_after_its_clear():
    rec, clips = recorder(), {}
    collect(rec.push(ramp(0, 10 * RATE)), clips)
    assert clips == {}  # nothing kept before an alert
    collect(rec.raised(5.0), clips)  # the run's first window started at 5 s
    collect(rec.push(ramp(10 * RATE, 3 * RATE)), clips)
    collect(rec.cleared(12.0), clips)
    collect(rec.push(ramp(13 * RATE, 30 * RATE)), clips)
    (clip,) = clips.values()
    assert (clip["start"], clip["end"]) == (4 * RATE, 13 * RATE)
    assert np.array_equal(audio(clip), ramp16(4 * RATE, 13 * RATE))


def test_a_cleared_clip_closes_only_once_no_later_alert_can_reach_back_into_it():
    rec, clips = recorder(lookback=12.0), {}
    collect(rec.push(ramp(0, 10 * RATE)), clips)
    collect(rec.raised(5.0) + rec.cleared(9.0), clips)
    collect(rec.push(ramp(10 * RATE, 20 * RATE)), clips)  # head 30 s, past 10 s + 12 s
    (clip,) = clips.values()
    assert clip["end"] == 10 * RATE  # closed: 9 + 1 s, head passed 10 + 12 s

    rec, clips = recorder(lookback=12.0), {}
    collect(rec.push(ramp(0, 10 * RATE)), clips)
    collect(rec.raised(5.0) + rec.cleared(9.0), clips)
    collect(rec.push(ramp(10 * RATE, 5 * RATE)), clips)  # head 15 s: still within reach
    assert next(iter(clips.values()))["end"] is None


def test_overlapping_alerts_share_one_clip_and_separate_ones_get_their_own():
    rec, clips = recorder(lookback=12.0), {}
    collect(rec.push(ramp(0, 10 * RATE)), clips)
    collect(rec.raised(4.0) + rec.cleared(8.0), clips)  # keeps [3, 9)
    collect(rec.push(ramp(10 * RATE, 4 * RATE)), clips)
    collect(rec.raised(9.5), clips)  # wants [8.5, ...): touches the first -> merged
    collect(rec.push(ramp(14 * RATE, 2 * RATE)), clips)
    collect(rec.cleared(15.0), clips)  # keeps to 16 s
    collect(rec.push(ramp(16 * RATE, 30 * RATE)), clips)  # head 46 s
    collect(rec.raised(40.0), clips)  # far away: a clip of its own
    collect(rec.cleared(43.0), clips)  # came back 3 s late: what was written since stays
    collect(rec.finish(), clips)
    spans = sorted((c["start"], c["end"]) for c in clips.values())
    assert spans == [(3 * RATE, 16 * RATE), (39 * RATE, 46 * RATE)]
    for c in clips.values():
        assert np.array_equal(audio(c), ramp16(c["start"], c["end"]))


def test_an_alert_still_raised_at_the_end_runs_to_the_end_of_the_track():
    rec, clips = recorder(), {}
    collect(rec.push(ramp(0, 8 * RATE)), clips)
    collect(rec.raised(3.0), clips)
    collect(rec.push(ramp(8 * RATE, RATE // 2)) + rec.finish(), clips)
    (clip,) = clips.values()
    assert (clip["start"], clip["end"]) == (2 * RATE, 8 * RATE + RATE // 2)
    assert rec.finish() == [] and rec.raised(1.0) == []


def test_a_raise_reaching_beyond_the_look_back_starts_at_the_oldest_audio_held():
    rec, clips = recorder(lookback=5.0), {}
    collect(rec.push(ramp(0, 20 * RATE)), clips)
    collect(rec.raised(2.0) + rec.finish(), clips)
    (clip,) = clips.values()
    assert clip["start"] == 15 * RATE  # 20 s - 5 s held
    assert np.array_equal(audio(clip), ramp16(15 * RATE, 20 * RATE))


def test_keep_all_records_the_whole_track_and_gaps_as_silence():
    rec, clips = recorder(keep="all"), {}
    collect(rec.push(ramp(0, RATE)), clips)
    collect(rec.push_silence(RATE // 2), clips)
    collect(rec.raised(0.2) + rec.cleared(0.5), clips)  # alerts change nothing in "all"
    collect(rec.push(ramp(0, RATE)) + rec.finish(), clips)
    (clip,) = clips.values()
    assert (clip["start"], clip["end"]) == (0, 2 * RATE + RATE // 2)
    got = audio(clip)
    assert np.array_equal(got[:RATE], ramp16(0, RATE))
    assert not got[RATE : RATE + RATE // 2].any()


def test_clips_can_be_written_at_another_rate():
    rec, clips = TrackRecorder(RATE, keep="all", lookback_seconds=5, rate=16000, new_id=ids()), {}
    t = np.arange(3 * RATE) / RATE
    collect(rec.push((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)), clips)
    collect(rec.finish(), clips)
    (clip,) = clips.values()
    assert abs(clip["end"] - 3 * 16000) <= 2  # 3 s at 16 kHz (the resampler flushed)
    assert audio(clip).size == clip["end"]


def test_lookback_covers_the_raising_run_the_lag_and_the_context():
    # 4 s window + 2 hops (raise_after 3) + 5 s lag + 0.1 s coalescing + 1 s + margin
    assert lookback_seconds(
        window_seconds=4, hop_seconds=1, raise_after=3, max_lag_seconds=5, coalesce_ms=100
    ) == pytest.approx(12.6)


actions = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(1, 3 * RATE)),
        st.tuples(st.just("gap"), st.integers(1, RATE)),
        st.tuples(st.just("flip"), st.floats(0, 1)),
    ),
    max_size=40,
)


@given(actions)
# found by hypothesis: a second alert merged into the first and cleared earlier cut the first
# alert's end and context off the clip
@example(
    [("flip", 0.0), ("push", 5427), ("flip", 1.0), ("flip", 1.0), ("flip", 0.0), ("push", 2574)]
)
def test_clips_hold_exactly_the_stream_never_overlap_and_cover_every_alert(script):
    """Whatever the audio and alerts, every clip is the stream's own samples over its span,
    clips are disjoint, and each alert's span (context included, as far as the look-back
    reached) lies inside one clip."""
    lookback = 6.0
    rec, clips = recorder(lookback=lookback), {}
    stream: list[np.ndarray] = []
    head = 0
    raised_at: float | None = None
    last_start = 0.0
    wanted: list[tuple[int, int | None]] = []  # alert spans, samples: [start, end or None)
    for kind, value in script:
        if kind == "push":
            collect(rec.push(ramp(head, value)), clips)
            stream.append(ramp16(head, head + value))
            head += value
        elif kind == "gap":
            collect(rec.push_silence(value), clips)
            stream.append(np.zeros(value, np.int16))
            head += value
        elif raised_at is None:  # raise: a run that started within reach of the look-back,
            reach = (lookback - 1.0) * RATE  # never before an earlier run (windows in order)
            start = max(last_start, (head - value * min(head, reach)) / RATE)
            last_start = start
            raised_at = start
            collect(rec.raised(start), clips)
            wanted.append((max(0, round(start * RATE) - RATE), None))
        else:  # clear: at a time between the raise and now
            end = raised_at + value * (head / RATE - raised_at)
            raised_at = None
            collect(rec.cleared(end), clips)
            wanted[-1] = (wanted[-1][0], round(end * RATE) + RATE)
    collect(rec.finish(), clips)
    whole = np.concatenate(stream) if stream else np.zeros(0, np.int16)
    spans = sorted((c["start"], c["end"]) for c in clips.values())
    for c in clips.values():
        assert c["end"] is not None, "every clip is closed at the end"
        assert np.array_equal(audio(c), whole[c["start"] : c["end"]])
    for (_, a_end), (b_start, _) in itertools.pairwise(spans):
        assert a_end <= b_start
    for start, end in wanted:
        stop = head if end is None else min(end, head)
        assert any(s <= start and stop <= e for s, e in spans), (start, stop, spans)


# ------------------------------------------------------------------ the store


@pytest.fixture
def store(tmp_path):
    clock = iter(float(t) for t in itertools.count(1_000_000, 10))
    return EvidenceStore(tmp_path / "evidence", clock=lambda: next(clock))


def record(store, call_id, track="inbound", seconds=(2.0, 5.0), *, signal=None):
    """One alert's clip of a real recording, through the recorder and the store."""
    rate, mono = read_audio(Path(__file__).parents[1] / "fixtures" / "speech_10s_8k.wav")
    x = mono[0] if signal is None else signal
    rec = TrackRecorder(rate, keep="alerts", lookback_seconds=12.0)
    ops = rec.push(x[: 6 * rate])
    ops += rec.raised(seconds[0]) + rec.cleared(seconds[1])
    ops += rec.push(x[6 * rate :]) + rec.finish()
    return store.apply(ops, call_id=call_id, track=track, source="twilio", rate=rate), x, rate


def test_a_clip_is_a_private_wav_of_the_calls_audio_with_its_sidecar(store):
    (saved,), x, rate = record(store, "CA-1")
    assert isinstance(saved, EvidenceSaved)
    assert (saved.call_id, saved.track, saved.start, saved.end) == ("CA-1", "inbound", 1.0, 6.0)
    assert parse_event(saved.to_json()) == saved
    (info,) = store.clips("CA-1")
    wav = store.wav_path("CA-1", info.clip)
    assert wav is not None and wav.stat().st_size == saved.bytes == info.bytes
    got, got_rate = sf.read(wav, dtype="int16")
    assert got_rate == rate and got.size == 5 * rate
    expected = np.clip(np.rint(x[rate : 6 * rate] * 32768), -32768, 32767).astype(np.int16)
    assert np.array_equal(got, expected)
    assert stat.S_IMODE(wav.stat().st_mode) == 0o600
    assert stat.S_IMODE(wav.with_suffix(".json").stat().st_mode) == 0o600
    assert stat.S_IMODE(wav.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    assert wav.parent.name == call_key("CA-1") and "CA-1" not in str(wav)


def test_the_index_survives_a_restart_and_refuses_foreign_ids(store, tmp_path):
    (saved,), _, _ = record(store, "CA-1")
    record(store, "CA-2", track="outbound")
    again = EvidenceStore(store.root)
    assert [c.clip for c in again.clips("CA-1")] == [saved.clip]
    assert again.clips("nobody") == []
    assert again.wav_path("CA-2", saved.clip) is None  # another call's clip
    assert again.wav_path("CA-1", "../../etc/passwd") is None
    assert again.wav_path("CA-1", saved.clip.upper()) is None
    assert {c.call_id for c in again.all_clips()} == {"CA-1", "CA-2"}


def test_delete_by_call_removes_its_files_and_says_what_it_freed(store):
    (a,), _, _ = record(store, "CA-1")
    (b,), _, _ = record(store, "CA-1", track="outbound")
    record(store, "CA-2")
    deleted = store.delete_call("CA-1")
    assert isinstance(deleted, EvidenceDeleted)
    assert (deleted.reason, sorted(deleted.clips), deleted.bytes) == (
        "request",
        sorted([a.clip, b.clip]),
        a.bytes + b.bytes,
    )
    assert store.clips("CA-1") == [] and not (store.root / call_key("CA-1")).exists()
    assert len(store.clips("CA-2")) == 1
    assert store.delete_call("CA-1") is None


def test_deleting_a_call_while_it_records_drops_the_rest_of_the_clip(store):
    store.open_clip("00000000000000aa", call_id="c", track="0", source=None, rate=RATE, start=0)
    store.write("00000000000000aa", ramp16(0, RATE))
    assert store.delete_call("c").clips == ["00000000000000aa"]
    store.write("00000000000000aa", ramp16(0, RATE))  # the recorder does not know yet
    assert store.close_clip("00000000000000aa", 2.0) is None
    assert list(store.all_clips()) == []


def test_retention_deletes_by_age_then_the_oldest_over_the_size_cap(tmp_path):
    now = [0.0]
    store = EvidenceStore(tmp_path / "ev", retention_days=30, max_bytes=10**9, clock=lambda: now[0])
    made = {}
    for day, call in ((0, "old"), (20, "mid"), (25, "new"), (26, "new")):
        now[0] = day * 86_400.0
        (saved,), _, _ = record(store, call, track=f"t{day}")
        made[day] = saved
    assert store.sweep(29 * 86_400.0) == []
    (aged,) = store.sweep(31 * 86_400.0)
    assert (aged.call_id, aged.reason, aged.clips) == ("old", "retention", [made[0].clip])
    # now cap the size so that only the newest clip fits: oldest first, one event per call
    store.max_bytes = made[26].bytes
    events = store.sweep(31 * 86_400.0)
    assert [(e.call_id, e.reason, e.clips) for e in events] == [
        ("mid", "size", [made[20].clip]),
        ("new", "size", [made[25].clip]),
    ]
    assert [c.clip for c in store.all_clips()] == [made[26].clip]
    assert store.used_bytes() == made[26].bytes


def test_retention_never_deletes_a_clip_being_written(store):
    store.open_clip("00000000000000bb", call_id="c", track="0", source=None, rate=RATE, start=0)
    store.write("00000000000000bb", ramp16(0, RATE))
    store.max_bytes = 1
    assert store.sweep(10**12) == []
    assert store.close_clip("00000000000000bb", 1.0) is not None


CRASH = """
import os, sys, numpy as np
from streamguard.evidence import EvidenceStore
s = EvidenceStore(sys.argv[1])
s.open_clip("00000000000000cc", call_id="c", track="0", source="native", rate=8000, start=2.0)
s.write("00000000000000cc", (np.arange(12000) % 1000).astype(np.int16))
s._open["00000000000000cc"].fh.flush()
os._exit(0)   # dies without closing the clip: a kill -9 after the last write reached the disk
"""


def test_a_clip_left_open_by_a_crash_is_closed_at_the_next_start(tmp_path):
    root = tmp_path / "ev"
    subprocess.run([sys.executable, "-c", CRASH, str(root)], check=True)
    (info,) = EvidenceStore(root).all_clips()
    assert not info.complete
    (saved,) = EvidenceStore(root).recover()
    assert (saved.clip, saved.start, saved.end) == ("00000000000000cc", 2.0, 3.5)
    got, rate = sf.read(EvidenceStore(root).wav_path("c", "00000000000000cc"), dtype="int16")
    assert rate == 8000 and np.array_equal(got, (np.arange(12000) % 1000).astype(np.int16))
    sidecar = json.loads(next(root.glob("*/*.json")).read_text())
    assert sidecar["closed"] is not None and sidecar["bytes"] == saved.bytes
    assert EvidenceStore(root).recover() == []


def test_a_broken_sidecar_is_skipped_not_fatal(store):
    record(store, "CA-1")
    folder = store.root / call_key("CA-1")
    (folder / "0123456789abcdef.json").write_text("{not json")
    (folder / "fedcba9876543210.json").write_text(json.dumps({"clip": "x"}))
    assert len(store.clips("CA-1")) == 1


def test_settings_default_to_a_folder_beside_the_event_log(tmp_path):
    events = EventsSettings(path=str(tmp_path / "state" / "events.db"))
    assert EvidenceSettings().resolved_path(events) == tmp_path / "state" / "evidence"
    assert EvidenceSettings(path=str(tmp_path / "x")).resolved_path(events) == tmp_path / "x"
    assert EvidenceSettings().keep == "none"


def test_an_unwritable_root_is_one_clear_error(tmp_path):
    from streamguard.evidence import EvidenceError

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(EvidenceError, match="cannot create the evidence folder"):
        EvidenceStore(blocker / "evidence")
    assert os.path.exists(blocker)
