"""The koyelog-resnet log-mel front end against librosa (the checkpoint's training features)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from streamguard.model.frontend import LogMel, normalize_waveforms
from tests.conftest import require_tool

WINDOW = 64_000


def _speech(fixtures_dir, tmp_path) -> np.ndarray:
    """4 s of real (espeak-ng) speech at 16 kHz: the committed fixture, else made now."""
    fixture = fixtures_dir / "speech_stereo_16k.wav"
    if fixture.is_file():
        audio, rate = sf.read(fixture, dtype="float32", always_2d=True)
        assert rate == 16_000
        return audio[:WINDOW, 0].copy()
    require_tool("espeak-ng")  # no fixture: make the speech with it
    wav = tmp_path / "speech.wav"
    subprocess.run(
        ["espeak-ng", "-w", str(wav), "Please confirm the transfer before noon today."],
        check=True,
        capture_output=True,
    )
    audio, rate = sf.read(wav, dtype="float32")
    import soxr

    audio = soxr.resample(audio, rate, 16_000).astype(np.float32)
    return np.pad(audio, (0, max(0, WINDOW - len(audio))))[:WINDOW]


def test_log_mel_matches_librosa_on_speech(fixtures_dir, tmp_path):
    librosa = pytest.importorskip("librosa")
    speech = _speech(fixtures_dir, tmp_path)
    assert np.abs(speech).max() > 0.05, "fixture should hold audible speech"
    quiet = 0.01 * speech  # ref=max makes dB relative: scaling must not change the result
    batch = np.stack([speech, quiet])

    ours = LogMel()(torch.from_numpy(batch)).numpy()
    assert ours.shape == (2, 1, 128, 126)
    for row, wave in enumerate(batch):
        mel = librosa.feature.melspectrogram(
            y=wave, sr=16_000, n_fft=1024, hop_length=512, n_mels=128
        )
        ref = librosa.power_to_db(mel, ref=np.max, top_db=80)
        assert ours[row, 0].shape == ref.shape
        np.testing.assert_allclose(ours[row, 0], ref, atol=0.01, rtol=0)
    assert ours.max() == pytest.approx(0.0, abs=1e-6)
    assert ours.min() >= -80.0 - 1e-4


def test_log_mel_absolute_reference_differs_from_max():
    wave = torch.sin(torch.arange(WINDOW) * 0.05).unsqueeze(0) * 0.5
    relative = LogMel()(wave)
    absolute = LogMel(db_ref=1.0)(wave)
    assert relative.max().item() == pytest.approx(0.0, abs=1e-6)
    assert absolute.max().item() > 10.0  # a loud sine has power far above 1.0 in its peak bin


def test_log_mel_stays_float32_and_stateless_in_state_dict():
    front = LogMel().half()
    assert front.state_dict() == {}
    out = front(torch.zeros(1, WINDOW, dtype=torch.float16))
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_normalize_matches_wav2vec2_feature_extractor():
    from transformers import Wav2Vec2FeatureExtractor

    rng = np.random.default_rng(0)
    waves = (rng.standard_normal((2, 16_000)) * [[0.3], [0.001]] + [[0.1], [0.0]]).astype(
        np.float32
    )
    fe = Wav2Vec2FeatureExtractor(do_normalize=True)
    expected = fe(list(waves), sampling_rate=16_000, return_tensors="np").input_values
    ours = normalize_waveforms(torch.from_numpy(waves)).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5)


# -- the matmul form (front end inside the exported ONNX graph, issue #20) -----------------------


def _speech_batch(fixtures_dir, tmp_path) -> torch.Tensor:
    """Real speech, the same speech 40 dB down, and a speech-shaped noise: [3, WINDOW]."""
    speech = _speech(fixtures_dir, tmp_path)
    noise = 0.05 * np.random.default_rng(3).standard_normal(WINDOW).astype(np.float32)
    return torch.from_numpy(np.stack([speech, 0.01 * speech, noise]))


@pytest.mark.parametrize(
    ("n_fft", "hop", "pad_mode", "drop_last"),
    [(1024, 512, "constant", False), (400, 160, "reflect", True), (509, 128, "constant", False)],
)
def test_dft_power_matches_torch_stft_on_speech(
    fixtures_dir, tmp_path, n_fft, hop, pad_mode, drop_last
):
    """Power spectrum from two real matmul stages == ``|torch.stft|^2`` (a prime n_fft too:
    one stage of size 1, the full DFT)."""
    from streamguard.model.frontend import DFTPower

    waves = _speech_batch(fixtures_dir, tmp_path)
    window = torch.hann_window(n_fft)
    spec = torch.stft(waves, n_fft, hop, window=window, center=True, pad_mode=pad_mode,
                      return_complex=True)  # fmt: skip
    expected = spec.abs() ** 2
    if drop_last:
        expected = expected[..., :-1]
    got = DFTPower(n_fft, hop, window, pad_mode=pad_mode, drop_last=drop_last)(waves)
    assert got.shape == expected.shape
    peak = expected.amax(dim=(-2, -1), keepdim=True)
    # float32 rounding relative to each signal's loudest bin (what a dB scale with top_db keeps)
    assert ((got - expected).abs() / peak).max() < 1e-5


def test_dft_power_refuses_a_window_of_the_wrong_length():
    from streamguard.model.frontend import DFTPower

    with pytest.raises(ValueError, match="n_fft=512"):
        DFTPower(512, 128, torch.hann_window(400))


def test_log_mel_matmul_form_matches_the_stft_form_on_speech(fixtures_dir, tmp_path):
    waves = _speech_batch(fixtures_dir, tmp_path)
    for front in (LogMel(), LogMel(db_ref=1.0)):
        expected = front(waves)
        got = front.matmul_form()(waves)
        assert got.shape == expected.shape
        assert (got - expected).abs().max() < 2e-3  # dB


def test_log_mel_matmul_form_exports_to_onnx_and_runs_there(fixtures_dir, tmp_path):
    """The point of the matmul form: ONNX Runtime computes the same log-mel from waveforms."""
    ort = pytest.importorskip("onnxruntime")
    from streamguard.model.serving import _export

    waves = _speech_batch(fixtures_dir, tmp_path)
    front = LogMel()
    model = _export(front.matmul_form().eval(), waves[:2])
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": waves.numpy()})  # a batch size other than the export's
    assert np.abs(got - front(waves).numpy()).max() < 2e-3
