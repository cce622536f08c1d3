"""``rawnet2``: the sinc front end is a real band-pass bank, the detector contract holds, it
saves/loads exactly and serves through ONNX Runtime at parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamguard.model import Detector, ModelInfo, build_module, load_detector, save_model_dir
from streamguard.model.rawnet import SincConv

TINY_RAWNET = {"sinc_filters": 8, "sinc_kernel": 33, "widths": [8, 16], "attention_hidden": 8,
               "classifier_hidden": 16, "dropout": 0.0}  # fmt: skip


@pytest.mark.parametrize("learnable", [False, True])
def test_each_sinc_filter_passes_its_own_band(learnable):
    sinc = SincConv(8, 257, 16_000, learnable=learnable)
    bank = (sinc._filters(sinc.low_hz, sinc.band_hz) if learnable else sinc.fixed)[:, 0]
    response = torch.fft.rfft(bank, n=4096).abs()  # [F, bins]
    peaks = response.argmax(dim=1) * 16_000 / 4096
    assert torch.all(peaks[1:] > peaks[:-1])  # mel-spaced, rising
    assert peaks[-1] > 4_000 and peaks[0] < 500


def test_rawnet2_meets_the_detector_contract_and_round_trips(tmp_path):
    torch.manual_seed(0)
    module = build_module("rawnet2", TINY_RAWNET).eval()
    info = ModelInfo(name="r", architecture="rawnet2", threshold=0.3)
    waves = (0.1 * np.random.default_rng(0).standard_normal((3, 64_000))).astype(np.float32)
    scores = Detector(module, info, device="cpu")(waves)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))
    loaded = load_detector(save_model_dir(tmp_path / "m", module, info, TINY_RAWNET), device="cpu")
    np.testing.assert_array_equal(loaded(waves), scores)


@pytest.mark.slow
def test_rawnet2_serves_through_onnxruntime_at_parity():
    from streamguard.model.serving import check_windows, serve

    torch.manual_seed(3)
    module = build_module("rawnet2", {**TINY_RAWNET, "sinc_learnable": True})
    detector = Detector(module, ModelInfo(name="r", architecture="rawnet2"), device="cpu")
    waves = check_windows(detector.window_samples)[:4]
    eager = detector(waves)
    assert serve(detector, "onnxruntime") == "onnxruntime"
    assert np.abs(detector(waves) - eager).max() < 1e-4
