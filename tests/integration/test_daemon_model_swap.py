"""Hot model swap on the real daemon: under load no window is lost or scored twice (counted),
later events name the new model, a ``model_changed`` event is published; a model that fails
to load or check is refused and the old one keeps serving; SIGHUP's ``[model] spec`` swaps."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import numpy as np
import pytest

from streamguard.audio.file import read_audio
from streamguard.client import send_frames
from streamguard.model_swap import SwapRefused, handle_post_model
from streamguard.sources.senders import native_frames

from .conftest import Subscriber

pytestmark = pytest.mark.integration

EAGER = {"backend": "eager", "torchscript": False, "max_wait_ms": 5}


@pytest.fixture(scope="module")
def other_model_dir(tiny_model_params, tmp_path_factory):
    """Another tiny model (other weights, another name), same window: what a fine-tune gives."""
    import torch

    from streamguard.model import ModelInfo, build_module, save_model_dir

    torch.manual_seed(1)
    module = build_module("koyelog-resnet", tiny_model_params)
    info = ModelInfo(name="tiny-tuned", architecture="koyelog-resnet", threshold=0.4)
    directory = tmp_path_factory.mktemp("swap") / "tiny-tuned"
    save_model_dir(directory, module, info, tiny_model_params)
    return directory


async def test_a_swap_under_load_loses_no_window(make_daemon, fixtures_dir, other_model_dir):
    daemon = await make_daemon(model=EAGER)
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    long = np.tile(mono, 3)  # 30 s calls, fed at 15x real time: the swap lands mid-call
    base = f"ws://127.0.0.1:{daemon.port}"
    calls = [f"swap-{i}" for i in range(4)]
    async with Subscriber(f"{base}/alerts") as sub:
        feeds = [
            asyncio.create_task(
                send_frames(f"{base}/ingest", native_frames(long, rate, call_id=c),
                            realtime=True, speed=15.0)
            )
            for c in calls
        ]  # fmt: skip
        await sub.wait_for(lambda events: sum(e["type"] == "score" for e in events) >= 8)
        status, _, body = await handle_post_model(
            json.dumps({"model": str(other_model_dir)}).encode(), swap=daemon.swap_model
        )
        assert status == 200, body
        assert json.loads(body)["new"]["name"] == "tiny-tuned"
        await asyncio.gather(*feeds)
        ended = await sub.wait_call_ended(len(calls))

    (changed,) = sub.of_type("model_changed")
    assert changed["old"]["name"] == "tiny" and changed["new"]["name"] == "tiny-tuned"
    assert len(changed["new"]["sha256"]) == 64
    scores = sub.of_type("score")
    models = [e["model"] for e in scores]
    assert "tiny" in models and "tiny-tuned" in models
    assert models.index("tiny-tuned") > 0 and "tiny" not in models[models.index("tiny-tuned") :]
    for event in ended:
        call = event["call_id"]
        starts = [e["start"] for e in scores if e["call_id"] == call]
        assert len(starts) == len(set(starts)), "a window scored twice"
        summary = event["summary"]
        assert summary["windows_scored"] == len(starts) > 20
        assert summary["windows_dropped"] == 0 and summary["windows_failed"] == 0
    stats = daemon.engine.stats
    assert stats.submitted == stats.scored and stats.dropped_lag == stats.dropped_overflow == 0
    assert daemon.bus.model_name == "tiny-tuned" and daemon.registry.info.threshold == 0.4


async def test_a_bad_model_is_refused_and_the_old_one_keeps_serving(
    make_daemon, fixtures_dir, tmp_path, tiny_detector, tiny_model_params
):
    daemon = await make_daemon(model=EAGER)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    status, _, body = await handle_post_model(
        json.dumps({"model": str(broken)}).encode(), swap=daemon.swap_model
    )
    assert status == 422 and "cannot load model" in json.loads(body)["error"]
    assert (await handle_post_model(b'{"model": 3}', swap=daemon.swap_model))[0] == 422
    assert (await handle_post_model(b"[]", swap=daemon.swap_model))[0] == 400

    # A model that loads but scores NaN (a diverged fine-tune): refused by the probe, the
    # start-up check.
    import torch

    from streamguard.model import build_module, save_model_dir

    module = build_module("koyelog-resnet", tiny_model_params)
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(float("nan"))
    save_model_dir(tmp_path / "nan", module, tiny_detector.info.replace(name="nan"),
                   tiny_model_params)  # fmt: skip
    with pytest.raises(SwapRefused, match="invalid scores on a probe window"):
        await daemon.swap_model(str(tmp_path / "nan"))

    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    base = f"ws://127.0.0.1:{daemon.port}"
    async with Subscriber(f"{base}/alerts") as sub:
        await send_frames(f"{base}/ingest", native_frames(mono, rate, call_id="after"))
        (ended,) = await sub.wait_call_ended()
    assert ended["summary"]["windows_scored"] > 0
    assert {e["model"] for e in sub.of_type("score")} == {"tiny"}
    assert not sub.of_type("model_changed")


async def test_sighup_swaps_to_the_config_files_model(make_daemon, tmp_path, other_model_dir):
    config = tmp_path / "streamguard.toml"
    config.write_text("")
    daemon = await make_daemon(model=EAGER)
    daemon.config_path = config
    base = f"ws://127.0.0.1:{daemon.port}"
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, daemon.reload)
    try:
        async with Subscriber(f"{base}/alerts?types=model_changed") as sub:
            config.write_text(
                f'[model]\nspec = "{other_model_dir}"\nbackend = "eager"\ntorchscript = false\n'
                "max_wait_ms = 5\n"
            )
            os.kill(os.getpid(), signal.SIGHUP)
            await sub.wait_for(lambda events: events)
        assert sub.events[0]["new"]["name"] == "tiny-tuned"
        assert daemon.settings.model.spec == str(other_model_dir)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
