"""``[tracks] score`` on the real daemon: a two-track Twilio call scores only the named leg;
the other is counted, not scored, and its summary says so."""

from __future__ import annotations

import pytest

from streamguard.audio.file import read_audio
from streamguard.client import send_frames
from streamguard.sources.senders import twilio_frames

from .conftest import Subscriber

pytestmark = pytest.mark.integration


async def test_only_the_inbound_leg_is_scored(make_daemon, fixtures_dir):
    daemon = await make_daemon(tracks={"score": ["inbound"]})
    rate, stereo = read_audio(fixtures_dir / "speech_stereo_16k.wav")
    base = f"ws://127.0.0.1:{daemon.port}"
    async with Subscriber(f"{base}/alerts") as sub:
        await send_frames(f"{base}/twilio", twilio_frames(stereo, rate, call_sid="CAlegs"))
        (ended,) = await sub.wait_call_ended()
    assert {e["track"] for e in sub.of_type("score")} == {"inbound"}
    inbound, outbound = ended["tracks"]["inbound"], ended["tracks"]["outbound"]
    assert inbound["windows_scored"] > 0 and inbound["windows_not_scored"] == 0
    assert outbound["windows_scored"] == 0 and outbound["windows_not_scored"] > 0
    assert outbound["verdict"] == "inconclusive" and outbound["duration"] > 0
    assert ended["summary"]["windows_not_scored"] == outbound["windows_not_scored"]
    assert ended["summary"]["verdict"] == inbound["verdict"]
    assert daemon.engine.stats.scored == inbound["windows_scored"]
