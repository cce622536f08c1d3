"""File decoding: every committed fixture format, block reading, and one-line errors."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile as sf

from streamguard.audio.file import open_audio, read_audio
from streamguard.errors import AudioError


@pytest.mark.parametrize(
    ("name", "rate", "shape"),
    [
        ("speech_10s_8k.wav", 8000, (1, 80_000)),
        ("speech_10s_8k.flac", 8000, (1, 80_000)),
        ("speech_10s_8k.ogg", 8000, (1, 80_000)),
        ("speech_10s_16k.mp3", 16000, (1, 160_000)),
        ("speech_stereo_16k.wav", 16000, (2, 96_000)),
        ("short_speech_1s.wav", 16000, (1, 16_000)),
        ("silence_3s.wav", 16000, (1, 48_000)),
    ],
)
def test_decodes_fixture(fixtures_dir, name, rate, shape):
    got_rate, data = read_audio(fixtures_dir / name)
    assert got_rate == rate and data.shape == shape and data.dtype == np.float32
    assert np.abs(data).max() <= 1.0


def test_flac_is_lossless_copy_of_wav(fixtures_dir):
    _, wav = read_audio(fixtures_dir / "speech_10s_8k.wav")
    _, flac = read_audio(fixtures_dir / "speech_10s_8k.flac")
    np.testing.assert_array_equal(wav, flac)


def test_stereo_channels_differ_and_match_soundfile(fixtures_dir):
    _, data = read_audio(fixtures_dir / "speech_stereo_16k.wav")
    ref, _ = sf.read(fixtures_dir / "speech_stereo_16k.wav", dtype="float32")
    np.testing.assert_array_equal(data, ref.T)
    assert not np.allclose(data[0], data[1])


def test_blocks_are_bounded_and_concatenate_to_the_file(fixtures_dir):
    with open_audio(fixtures_dir / "speech_stereo_16k.wav") as reader:
        assert (reader.sample_rate, reader.channels, reader.frames) == (16000, 2, 96_000)
        assert reader.duration == 6.0
        blocks = list(reader.blocks(10_000))
    assert all(b.shape[0] == 2 and b.shape[1] <= 10_000 for b in blocks)
    _, whole = read_audio(fixtures_dir / "speech_stereo_16k.wav")
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), whole)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("empty.wav", "empty file (0 bytes)"),
        ("truncated.wav", "truncated"),
        ("not_audio.wav", "not a recognised audio file"),
        ("one_sample.wav", "too short to analyse: 1 sample"),
        ("does_not_exist.wav", "no such file"),
    ],
)
def test_bad_files_raise_one_line_audio_error(fixtures_dir, name, fragment):
    with pytest.raises(AudioError) as info:
        read_audio(fixtures_dir / name)
    message = str(info.value)
    assert fragment in message and name in message
    assert "\n" not in message


def test_directory_is_rejected(fixtures_dir):
    with pytest.raises(AudioError, match="not a regular file"):
        open_audio(fixtures_dir)


def test_wav_with_unknown_length_header_is_accepted(fixtures_dir, tmp_path):
    # Recorders that never finalise the header leave 0xFFFFFFFF as the data size.
    raw = bytearray((fixtures_dir / "speech_10s_8k.wav").read_bytes())
    assert raw[36:40] == b"data"
    raw[40:44] = b"\xff\xff\xff\xff"
    path = tmp_path / "streaming.wav"
    path.write_bytes(bytes(raw))
    rate, data = read_audio(path)
    assert rate == 8000 and data.shape == (1, 80_000)


@pytest.mark.requires_tool("ffmpeg")
def test_ffmpeg_fallback_for_m4a(fixtures_dir, tmp_path):
    path = tmp_path / "call.m4a"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(fixtures_dir / "speech_stereo_16k.wav"),
         "-c:a", "aac", "-b:a", "64k", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    with open_audio(path) as reader:
        assert reader.decoder == "ffmpeg" and reader.frames is None
        assert (reader.sample_rate, reader.channels) == (16000, 2)
        data = np.concatenate(list(reader.blocks(4096)), axis=1)
        assert reader.frames == data.shape[1]
    assert data.dtype == np.float32
    assert abs(data.shape[1] - 96_000) < 2048  # AAC adds priming/padding frames
    assert np.abs(data).max() > 0.3
