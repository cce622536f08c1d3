"""The real daemon on loopback, driven over real WebSockets by the protocols' own wire format."""

from __future__ import annotations

import asyncio
import itertools
import json
import urllib.request

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from streamguard.audio.file import read_audio
from streamguard.client import send_frames
from streamguard.sources.senders import l16_frames, native_frames, twilio_frames

from .conftest import Subscriber, until

pytestmark = pytest.mark.integration


def window_starts(events: list[dict], track: str) -> list[float]:
    return [e["start"] for e in events if e["type"] == "score" and e["track"] == track]


async def test_twilio_call_with_both_tracks(make_daemon, fixtures_dir):
    daemon = await make_daemon()
    rate, stereo = read_audio(fixtures_dir / "speech_stereo_16k.wav")
    base = f"ws://127.0.0.1:{daemon.port}"
    async with Subscriber(f"{base}/alerts") as sub:
        result = await send_frames(f"{base}/twilio", twilio_frames(stereo, rate, call_sid="CA1"))
        assert result.close_code == 1000
        (ended,) = await sub.wait_call_ended()

    started = sub.of_type("call_started")
    assert [e["call_id"] for e in started] == ["CA1"]
    assert started[0]["source"] == "twilio"
    assert "streamSid" in started[0]["metadata"]
    duration = stereo.shape[1] / rate
    for track in ("inbound", "outbound"):
        starts = window_starts(sub.events, track)
        assert starts, f"no score events for {track}"
        # windows every hop (1 s) of call time, each 4 s long, inside the call
        assert starts == sorted(starts)
        assert all(abs(b - a - 1.0) < 1e-6 for a, b in itertools.pairwise(starts))
        for e in sub.of_type("score"):
            assert e["end"] - e["start"] == pytest.approx(4.0)
            assert 0.0 <= e["p_fake"] <= 1.0
    assert ended["call_id"] == "CA1" and ended["reason"] == "stop"
    assert set(ended["tracks"]) == {"inbound", "outbound"}
    assert ended["summary"]["duration"] == pytest.approx(duration, abs=0.05)
    assert ended["summary"]["windows_scored"] == len(sub.of_type("score"))
    assert ended["summary"]["verdict"] in {"fake", "real"}
    seqs = [e["seq"] for e in sub.events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


@pytest.mark.parametrize("protocol", ["native", "l16"])
async def test_ingest_protocols_score_at_call_times(make_daemon, fixtures_dir, protocol):
    daemon = await make_daemon()
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    base = f"ws://127.0.0.1:{daemon.port}"
    frames = (native_frames if protocol == "native" else l16_frames)(mono, rate, call_id="c-1")
    async with Subscriber(f"{base}/alerts?call_id=c-1") as sub:
        await send_frames(f"{base}/ingest", frames)
        (ended,) = await sub.wait_call_ended()
    assert sub.of_type("call_started")[0]["source"] == protocol
    # a 10 s call with hop 1 s: windows [0,4] ... [6,10] where the VAD finds enough speech
    starts = window_starts(sub.events, "0")
    assert starts and set(starts) <= {float(s) for s in range(7)}
    assert ended["summary"]["windows_scored"] + ended["summary"]["windows_skipped"] >= 7


async def test_filtered_subscribers_get_exactly_their_events(make_daemon, fixtures_dir):
    daemon = await make_daemon()
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    base = f"ws://127.0.0.1:{daemon.port}"
    async with (
        Subscriber(f"{base}/alerts") as everything,
        Subscriber(f"{base}/alerts?call_id=A&types=call_ended") as only_a_end,
        Subscriber(f"{base}/alerts?types=score") as scores,
    ):
        await asyncio.gather(
            send_frames(f"{base}/ingest", native_frames(mono, rate, call_id="A")),
            send_frames(f"{base}/ingest", native_frames(mono, rate, call_id="B")),
        )
        await everything.wait_call_ended(2)
        await only_a_end.wait_call_ended(1)
        await asyncio.sleep(0.1)
    assert [(e["type"], e["call_id"]) for e in only_a_end.events] == [("call_ended", "A")]
    assert {e["type"] for e in scores.events} == {"score"}
    assert len(scores.events) == len(everything.of_type("score"))


async def test_bad_first_frame_is_closed_with_reason_and_others_continue(make_daemon, fixtures_dir):
    daemon = await make_daemon()
    base = f"ws://127.0.0.1:{daemon.port}"
    async with connect(f"{base}/ingest") as ws:
        await ws.send(json.dumps({"hello": "world"}))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1008
        assert "protocol" in ws.close_reason or "metadata" in ws.close_reason
    async with connect(f"{base}/ingest") as ws:
        await ws.send(json.dumps({"sample_rate": 11, "encoding": "pcm_s16le", "channels": 1}))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1003
    # the daemon still serves a good call afterwards
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    async with Subscriber(f"{base}/alerts") as sub:
        await send_frames(f"{base}/ingest", native_frames(mono, rate, call_id="ok"))
        (ended,) = await sub.wait_call_ended()
    assert ended["call_id"] == "ok"


async def test_healthz_and_metrics_answer_over_http(make_daemon, fixtures_dir):
    daemon = await make_daemon()
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    base = f"127.0.0.1:{daemon.port}"
    async with Subscriber(f"ws://{base}/alerts") as sub:
        await send_frames(f"ws://{base}/ingest", native_frames(mono, rate, call_id="m"))
        await sub.wait_call_ended()

    def get(path: str) -> tuple[int, str]:
        with urllib.request.urlopen(f"http://{base}{path}", timeout=5) as response:
            return response.status, response.read().decode()

    status, body = await asyncio.to_thread(get, "/healthz")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ready" and health["model"] == "tiny"
    # the CPU's production backend scored the call: the start-up probe's choice for this CPU
    # (probed and cached once per test run, tiny_onnx_build)
    probed = daemon.runners[0].backend_probe
    assert probed is not None and health["backend"] == probed["choice"]
    assert health["backend"] in ("onnxruntime-int8", "onnxruntime", "torch-bf16")
    assert daemon.runners[0].backend_parity <= 0.01
    status, text = await asyncio.to_thread(get, "/metrics")
    assert status == 200
    scored = [
        line for line in text.splitlines() if line.startswith("streamguard_windows_scored_total")
    ]
    assert scored and float(scored[0].split()[-1]) > 0


async def test_sigterm_style_drain_delivers_call_ended_mid_call(make_daemon, fixtures_dir):
    """Stopping the daemon mid-call still scores what is buffered and ends the call."""
    daemon = await make_daemon()
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    base = f"ws://127.0.0.1:{daemon.port}"
    half = mono[:, : mono.shape[1] // 2 + rate]  # ~6 s sent, no stop message
    frames = [f for f in native_frames(half, rate, call_id="mid") if not isinstance(f[1], str)]
    async with Subscriber(f"{base}/alerts") as sub:
        async with connect(f"{base}/ingest") as ws:
            await ws.send(
                json.dumps(
                    {"call_id": "mid", "sample_rate": rate, "encoding": "pcm_s16le", "channels": 1}
                )
            )
            for _, frame in frames:
                await ws.send(frame)
            await sub.wait_for(lambda ev: any(e["type"] == "score" for e in ev))
            await asyncio.wait_for(daemon.stop(), 30)
        (ended,) = sub.of_type("call_ended")
    assert ended["call_id"] == "mid" and ended["reason"] == "shutdown"
    assert ended["summary"]["duration"] == pytest.approx(half.shape[1] / rate, abs=0.05)


def test_senders_round_trip_sample_count():
    """The Twilio sender's chunks cover the audio exactly (20 ms of 8 kHz mu-law each)."""
    audio = np.zeros((2, 8000), dtype=np.float32)
    frames = list(twilio_frames(audio, 8000))
    media = [json.loads(f) for _, f in frames if '"media"' in f]
    assert len(media) == 2 * 50
    assert {m["media"]["track"] for m in media} == {"inbound", "outbound"}


async def test_audio_sent_to_the_alerts_endpoint_is_refused_with_a_reason(make_daemon):
    daemon = await make_daemon()
    async with connect(f"ws://127.0.0.1:{daemon.port}/alerts") as ws:
        await ws.send(b"\x00\x01" * 160)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 1008 and "feeds go to /twilio or /ingest" in ws.close_reason


@pytest.mark.parametrize("subprotocol", ["audio.jambonz.org", "audio.drachtio.org"])
async def test_fork_subprotocols_are_echoed_so_jambonz_and_mod_audio_fork_connect(
    make_daemon, fixtures_dir, subprotocol
):
    """jambonz `listen` and mod_audio_fork ask for their subprotocol; their clients drop a
    handshake that does not echo it. Others (Twilio, subscribers) ask for none and get none."""
    daemon = await make_daemon()
    rate, stereo = read_audio(fixtures_dir / "speech_stereo_16k.wav")
    base = f"ws://127.0.0.1:{daemon.port}"
    async with Subscriber(f"{base}/alerts") as sub:
        async with connect(f"{base}/ingest", subprotocols=[subprotocol]) as ws:
            assert ws.subprotocol == subprotocol
            for _, frame in l16_frames(stereo, rate, call_id="fork-1"):
                await ws.send(frame)
        (ended,) = await sub.wait_call_ended()
    assert ended["call_id"] == "fork-1" and set(ended["tracks"]) == {"0", "1"}
    async with connect(f"{base}/ingest", subprotocols=["something.else"]) as ws:
        assert ws.subprotocol is None


async def test_jambonz_listen_stereo_fork_as_siprec_delivers_it(make_daemon, fixtures_dir):
    """The SIPREC path of docs/sources.md: jambonz (as SIPREC server) forks both streams with
    `listen` (mixType stereo): subprotocol audio.jambonz.org, a first JSON frame with the call
    attributes plus sampleRate and mixType, then interleaved 16-bit little-endian PCM."""
    daemon = await make_daemon()
    rate, stereo = read_audio(fixtures_dir / "speech_stereo_16k.wav")
    first = {
        "callSid": "aad0115d-ec21-40db-aa02-31b7b01540c5",
        "direction": "inbound",
        "from": "+15083084809",
        "to": "+15083728363",
        "callId": "fc5f8190-718a-123b-e6ba-023fd61c5256",
        "sipStatus": 200,
        "callStatus": "in-progress",
        "accountSid": "4bfe85c1-96bb-4af7-ac83-68fe7ebd562d",
        "applicationSid": "3badbf0f-e778-44bb-a89a-dc2ca31f2f9c",
        "sampleRate": rate,
        "mixType": "stereo",
    }
    pcm = np.clip(stereo.T, -1, 1 - 2**-15) * 32768
    raw = pcm.astype("<i2").tobytes()  # interleaved: channel 0, channel 1, channel 0, ...
    base = f"ws://127.0.0.1:{daemon.port}"
    async with Subscriber(f"{base}/alerts") as sub:
        async with connect(f"{base}/ingest", subprotocols=["audio.jambonz.org"]) as ws:
            assert ws.subprotocol == "audio.jambonz.org"
            await ws.send(json.dumps(first))
            for i in range(0, len(raw), 1280):  # 20 ms of 16 kHz stereo
                await ws.send(raw[i : i + 1280])
        (ended,) = await sub.wait_call_ended()
    (started,) = sub.of_type("call_started")
    assert started["call_id"] == first["callSid"] and started["source"] == "l16"
    assert started["metadata"]["direction"] == "inbound"
    assert {e["track"] for e in sub.of_type("score")} == {"0", "1"}
    assert ended["reason"] == "closed"
    assert ended["summary"]["duration"] == pytest.approx(stereo.shape[1] / rate, abs=0.05)


@pytest.fixture
def long_call(fixtures_dir, tmp_path):
    """60 s of real speech (the 10 s fixture six times) as a WAV file."""
    import soundfile

    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    audio = np.tile(mono, 6)
    path = tmp_path / "long_call.wav"
    soundfile.write(path, audio.T, rate)
    return path, rate, audio


async def test_a_daemon_stopping_mid_call_closes_1001_and_the_sender_counts_what_went_out(
    make_daemon, long_call
):
    daemon = await make_daemon()
    _, rate, audio = long_call
    frames = list(native_frames(audio, rate, call_id="cut"))
    sending = asyncio.create_task(
        send_frames(
            f"ws://127.0.0.1:{daemon.port}/ingest", frames, realtime=True, speed=10
        )  # 6 s of wall time
    )
    while not daemon.registry.sessions:  # the call is open: stop the daemon under it
        await asyncio.sleep(0.01)
    await asyncio.wait_for(daemon.stop(), 30)
    result = await asyncio.wait_for(sending, 30)
    assert (result.close_code, result.close_reason) == (1001, "server shutting down")
    assert not result.complete and not result.ended_normally
    assert 1 <= result.frames < len(frames)
    assert result.audio_seconds < audio.shape[1] / rate


async def test_feed_says_how_much_it_sent_when_the_daemon_closes_early(make_daemon, long_call):
    """``streamguard feed``: an early close (here [limits] max_call_seconds: 1008) is an error
    line naming the close and how much of the file went out, never "sent every frame"."""
    import sys

    daemon = await make_daemon(limits={"max_call_seconds": 2.0})
    path, rate, audio = long_call
    total = len(list(native_frames(audio, rate, call_id="x")))
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "streamguard.cli", "feed", str(path), "--protocol", "native"],
        *["--url", f"ws://127.0.0.1:{daemon.port}", "--realtime", "--speed", "10"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 1 and out == b""
    (line,) = err.decode().splitlines()
    prefix = "streamguard: error: the daemon closed the call early (1008 call length limit reached)"
    assert line.startswith(prefix), line
    sent, of = (int(x) for x in line.split(" after ", 1)[1].split(" frames", 1)[0].split(" of "))
    assert of == total and 2 * rate / 160 <= sent < total  # at least the 2 s the daemon took


async def test_retention_follows_the_events_settings(make_daemon, fixtures_dir, tmp_path):
    """``[events] retain_hours`` of one second: the daemon's writer deletes a finished call's
    events once they are older (all but the newest row, which carries the numbering), and a
    subscriber that asks for everything is told what retention took."""
    from streamguard.alerts.store import EventStore

    path = tmp_path / "events.db"
    daemon = await make_daemon(events={"path": str(path), "retain_hours": 1 / 3600})
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    base = f"ws://127.0.0.1:{daemon.port}"
    async with Subscriber(f"{base}/alerts") as sub:
        await send_frames(f"{base}/ingest", native_frames(mono[:, : 5 * rate], rate, call_id="a"))
        (ended,) = await sub.wait_call_ended()
    newest = ended["seq"]

    def deleted() -> float:
        sample = "streamguard_events_retention_deleted_total"
        return daemon.metrics.registry.get_sample_value(sample) or 0.0

    await until(lambda: deleted() >= newest - 1)  # the idle writer looks every few seconds
    reader = EventStore(path, readonly=True)
    try:
        assert reader.oldest_seq() == reader.last_seq == newest
    finally:
        reader.close()
    async with Subscriber(f"{base}/alerts?since=0") as late:
        await late.wait_for(lambda ev: len(ev) >= 2)
    notice, kept = late.events[:2]
    assert notice["type"] == "dropped" and notice["reason"] == "retention"
    assert (notice["first_seq"], notice["last_seq"]) == (1, newest - 1)
    assert kept["seq"] == newest and kept["type"] == "call_ended"


@pytest.mark.parametrize(
    ("stride", "scored_starts"),
    # stride 3: two calm scores, two windows thinned, one scored, ...; the last window of a
    # track (6 s, cut when the call ends) is always scored
    [(1, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), (3, [0.0, 1.0, 4.0, 6.0])],
)
async def test_adaptive_stride_from_the_config_thins_a_calm_track(
    make_daemon, tiny_detector, fixtures_dir, stride, scored_starts
):
    """``[track] adaptive_stride``: after two calm scores (here every score: the tiny model's
    ~0.44 is far below 0.99) only every stride-th window is scored. The audio goes in one
    second at a time, each once the windows it completed are scored or thinned, so scores come
    back before the next window is cut, as on a live call."""
    from streamguard.model import Detector

    calm = Detector(tiny_detector.module, tiny_detector.info.replace(threshold=0.99), device="cpu")
    daemon = await make_daemon(
        detector=calm, track={"adaptive_stride": stride, "adaptive_below": 1.0}
    )
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    frames = list(native_frames(mono, rate, call_id="calm"))
    base = f"ws://127.0.0.1:{daemon.port}"

    def counter(name: str) -> float:
        return daemon.metrics.registry.get_sample_value(f"streamguard_{name}") or 0.0

    async with Subscriber(f"{base}/alerts") as sub, connect(f"{base}/ingest") as ws:

        def handled() -> float:  # windows scored, thinned or skipped (VAD) so far
            scored = len(sub.of_type("score"))
            return scored + counter("windows_thinned_total") + counter("windows_skipped_total")

        sent = 0
        for second in range(4, 11):  # windows end at 4, 5, ... 10 s: starts 0 .. 6
            # half a second past the window's end: the resampler holds a few ms back
            batch = [f for t, f in frames if t < second + 0.5 or second == 10]
            for frame in batch[sent:]:
                await ws.send(frame)
            sent = len(batch)
            await until(lambda s=second: handled() >= s - 3)
        (ended,) = await sub.wait_call_ended()
    starts = [e["start"] for e in sub.of_type("score")]
    assert starts == scored_starts
    assert counter("windows_thinned_total") == 7 - len(scored_starts)
    assert ended["summary"]["windows_scored"] == len(scored_starts)
