"""Evidence audio on the real daemon: an alerting call leaves a clip that holds the call's own
samples, that lists and plays through the handlers, survives a restart, and is deleted by
request and by retention, each deletion an event on /alerts."""

from __future__ import annotations

import json
import os
import stat
import time

import numpy as np
import pytest
import soundfile as sf

from streamguard.audio.file import read_audio
from streamguard.audio.pcm import float_to_int16
from streamguard.client import send_frames
from streamguard.evidence.api import handle_delete_evidence, handle_get_clip, handle_get_evidence
from streamguard.sources.senders import native_frames

from .conftest import Subscriber

pytestmark = pytest.mark.integration

#: Every window alerts (on 0) and nothing clears (off 0): the clip runs from 1 s before the
#: first window to the end of the call.
ALWAYS = {"on_threshold": 0.0, "off_threshold": 0.0, "raise_after": 1}


def evidence(tmp_path, **more):
    return {"keep": "alerts", "path": str(tmp_path / "evidence"), **more}


async def test_an_alerting_call_leaves_its_audio_as_evidence(make_daemon, fixtures_dir, tmp_path):
    daemon = await make_daemon(smoothing=ALWAYS, evidence=evidence(tmp_path))
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    base = f"ws://127.0.0.1:{daemon.port}"
    async with Subscriber(f"{base}/alerts?call_id=ev-1") as sub:
        await send_frames(f"{base}/ingest", native_frames(mono, rate, call_id="ev-1"))
        await sub.wait_call_ended()
        await sub.wait_for(lambda events: any(e["type"] == "evidence_saved" for e in events))
        first = sub.of_type("alert")[0]
        (saved,) = sub.of_type("evidence_saved")
        assert saved["track"] == "0" and saved["start"] == max(0.0, first["start"] - 1.0)
        assert saved["end"] == pytest.approx(mono.shape[1] / rate, abs=0.01)

        status, _, body = await daemon.evidence.call(handle_get_evidence, "ev-1")
        [clip] = json.loads(body)["clips"]
        assert status == 200 and clip["clip"] == saved["clip"] and clip["bytes"] == saved["bytes"]
        status, headers, path = await daemon.evidence.call(handle_get_clip, "ev-1", clip["clip"])
        assert status == 200 and headers["Content-Type"] == "audio/wav"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        audio, clip_rate = sf.read(path, dtype="int16")
        assert clip_rate == rate  # the track's own rate, as it arrived
        begin = round(saved["start"] * rate)
        expected = float_to_int16(mono[0])[begin:]
        assert np.array_equal(audio, expected[: len(audio)]) and len(audio) == len(expected)

        status, _, _ = await daemon.evidence.call(
            handle_delete_evidence, "ev-1", daemon.evidence.publish_threadsafe
        )
        assert status == 204
        await sub.wait_for(lambda events: any(e["type"] == "evidence_deleted" for e in events))
    (deleted,) = sub.of_type("evidence_deleted")
    assert deleted["clips"] == [clip["clip"]] and deleted["reason"] == "request"
    assert not path.exists()


async def test_evidence_survives_a_restart_and_retention_deletes_it(
    make_daemon, fixtures_dir, tmp_path
):
    settings = {"smoothing": ALWAYS, "evidence": evidence(tmp_path, retention_days=2e-5)}
    daemon = await make_daemon(**settings)
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    base = f"ws://127.0.0.1:{daemon.port}"
    async with Subscriber(f"{base}/alerts?call_id=ev-2") as sub:
        await send_frames(f"{base}/ingest", native_frames(mono, rate, call_id="ev-2"))
        await sub.wait_for(lambda events: any(e["type"] == "evidence_saved" for e in events))
    await daemon.stop()

    again = await make_daemon(**settings)  # the same folder: the index is the files
    _, _, body = await again.evidence.call(handle_get_evidence, "ev-2")
    assert len(json.loads(body)["clips"]) == 1
    base = f"ws://127.0.0.1:{again.port}"
    async with Subscriber(f"{base}/alerts?call_id=ev-2&types=evidence_deleted") as sub:
        time.sleep(2.0)  # older than retention_days (1.7 s)
        await again.evidence.sweep()
        await sub.wait_for(lambda events: events)
    assert sub.events[0]["reason"] == "retention"
    assert not list((tmp_path / "evidence").rglob("*.wav"))


async def test_keep_none_writes_nothing(make_daemon, fixtures_dir, tmp_path):
    daemon = await make_daemon(smoothing=ALWAYS, evidence={"path": str(tmp_path / "ev")})
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    base = f"ws://127.0.0.1:{daemon.port}"
    async with Subscriber(f"{base}/alerts?call_id=n") as sub:
        await send_frames(f"{base}/ingest", native_frames(mono, rate, call_id="n"))
        await sub.wait_call_ended()
    assert sub.of_type("alert") and daemon.evidence is None
    assert not (tmp_path / "ev").exists()
