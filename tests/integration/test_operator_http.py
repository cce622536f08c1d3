"""The operator loop's ``/api`` routes on a real daemon, with a real HTTP client on 127.0.0.1:
evidence listed, played and deleted; a label posted and stored (bad ones refused, nothing
stored); a model swap asked for (a bad one refused, a good one served)."""

from __future__ import annotations

import asyncio
import http.client
import json

import pytest
import soundfile as sf

from streamguard.audio.file import read_audio
from streamguard.client import send_frames
from streamguard.sources.senders import native_frames

from .conftest import Subscriber

pytestmark = pytest.mark.integration

ALWAYS = {"on_threshold": 0.0, "off_threshold": 0.0, "raise_after": 1}


def request(port, method, path, body=None, headers=None):
    """One request with http.client (a real client, off the loop): ``(status, headers, body)``."""

    def go():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        try:
            data = None if body is None else json.dumps(body).encode()
            hdrs = dict(headers or {})
            if data is not None:
                hdrs.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=data, headers=hdrs)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    return asyncio.to_thread(go)


async def test_evidence_lists_plays_and_deletes_over_http(make_daemon, fixtures_dir, tmp_path):
    daemon = await make_daemon(
        smoothing=ALWAYS, evidence={"keep": "alerts", "path": str(tmp_path / "ev")}
    )
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    base = f"ws://127.0.0.1:{daemon.port}"
    async with Subscriber(f"{base}/alerts?call_id=h-1") as sub:
        await send_frames(f"{base}/ingest", native_frames(mono, rate, call_id="h-1"))
        await sub.wait_for(lambda events: any(e["type"] == "evidence_saved" for e in events))

        status, _, body = await request(daemon.port, "GET", "/api/calls/h-1/evidence")
        assert status == 200
        [clip] = json.loads(body)["clips"]
        status, headers, wav = await request(daemon.port, "GET", clip["url"])
        assert status == 200 and headers["Content-Type"] == "audio/wav"
        assert len(wav) == clip["bytes"] == int(headers["Content-Length"])
        clip_path = tmp_path / "played.wav"
        clip_path.write_bytes(wav)
        assert sf.info(clip_path).samplerate == rate

        status, _, _ = await request(daemon.port, "DELETE", "/api/calls/h-1/evidence")
        assert status == 204
        await sub.wait_for(lambda events: any(e["type"] == "evidence_deleted" for e in events))
    status, _, body = await request(daemon.port, "GET", "/api/calls/h-1/evidence")
    assert status == 200 and json.loads(body)["clips"] == []
    status, _, _ = await request(daemon.port, "GET", clip["url"])
    assert status == 404


async def test_evidence_off_answers_an_empty_list(make_daemon):
    daemon = await make_daemon()
    status, _, body = await request(daemon.port, "GET", "/api/calls/none/evidence")
    assert status == 200 and json.loads(body) == {"call_id": "none", "clips": []}


async def test_a_label_is_stored_and_a_bad_one_is_refused(make_daemon):
    daemon = await make_daemon()
    base = f"ws://127.0.0.1:{daemon.port}"
    async with Subscriber(f"{base}/alerts?types=label") as sub:
        label = {"call_id": "c-9", "label": "fake", "track": "inbound", "note": "IVR clone"}
        status, _, body = await request(daemon.port, "POST", "/api/labels", label)
        assert status == 201, body
        stored = json.loads(body)
        assert stored["type"] == "label" and stored["seq"] >= 1 and stored["who"] == "local"
        for bad in ({"call_id": "c-9", "label": "maybe"}, {"label": "fake"}):
            status, _, _ = await request(daemon.port, "POST", "/api/labels", bad)
            assert 400 <= status < 500
        status, _, _ = await request(
            daemon.port, "POST", "/api/labels", label, {"Content-Type": "text/plain"}
        )
        assert status == 415
        await sub.wait_for(lambda events: events)
        await asyncio.sleep(0.3)  # a refused label would have arrived by now
    assert [e["seq"] for e in sub.events] == [stored["seq"]]


async def test_a_model_swap_over_http(make_daemon, tiny_model_params, tmp_path):
    import torch

    from streamguard.model import ModelInfo, build_module, save_model_dir

    daemon = await make_daemon(model={"backend": "eager", "torchscript": False})
    status, _, body = await request(
        daemon.port, "POST", "/api/model", {"model": str(tmp_path / "missing")}
    )
    assert 400 <= status < 500 and "error" in json.loads(body)
    assert daemon.detector.info.name == "tiny"

    torch.manual_seed(2)
    directory = tmp_path / "tiny-http"
    info = ModelInfo(name="tiny-http", architecture="koyelog-resnet", threshold=0.4)
    save_model_dir(directory, build_module("koyelog-resnet", tiny_model_params), info,
                   tiny_model_params)  # fmt: skip
    status, _, body = await request(daemon.port, "POST", "/api/model", {"model": str(directory)})
    assert status == 200, body
    assert json.loads(body)["new"]["name"] == "tiny-http"
    assert daemon.detector.info.name == "tiny-http"
