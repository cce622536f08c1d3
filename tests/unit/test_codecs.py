"""G.711 / PCM codecs: bit-exact against audioop, scaling, strictness, streaming carry-over."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.audio import codecs
from streamguard.audio.codecs import ENCODINGS, CodecError, StreamDecoder, decode, encode

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)


def _audioop():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("audioop")
        except ImportError:
            pytest.skip("neither audioop nor audioop-lts is available")


def test_g711_decode_tables_equal_audioop_for_all_256_codes():
    audioop = _audioop()
    codes = bytes(range(256))
    ulaw = np.frombuffer(audioop.ulaw2lin(codes, 2), dtype=np.int16)
    alaw = np.frombuffer(audioop.alaw2lin(codes, 2), dtype=np.int16)
    np.testing.assert_array_equal(codecs.MULAW_TO_INT16, ulaw)
    np.testing.assert_array_equal(codecs.ALAW_TO_INT16, alaw)
    np.testing.assert_array_equal(decode("mulaw", codes), ulaw.astype(np.float32) / 32768)
    np.testing.assert_array_equal(decode("alaw", codes), alaw.astype(np.float32) / 32768)


def test_g711_encoders_equal_audioop_for_every_int16_value():
    audioop = _audioop()
    pcm = ALL_INT16.astype("<i2").tobytes()
    assert codecs.mulaw_encode(ALL_INT16) == audioop.lin2ulaw(pcm, 2)
    assert codecs.alaw_encode(ALL_INT16) == audioop.lin2alaw(pcm, 2)
    assert encode("mulaw", ALL_INT16) == audioop.lin2ulaw(pcm, 2)


def test_g711_is_logarithmic_not_the_naive_shift():
    # The "(x - 128) << 8" shortcut maps code 0xFF to 32512; G.711 mu-law 0xFF is zero.
    assert decode("mulaw", b"\xff\x7f").tolist() == [0.0, 0.0]
    assert decode("mulaw", b"\x00")[0] == pytest.approx(-32124 / 32768)
    assert decode("alaw", b"\xd5")[0] == pytest.approx(8 / 32768)


@pytest.mark.parametrize("law", ["mulaw", "alaw"])
def test_g711_reencoding_decoded_codes_is_stable(law):
    once = decode(law, bytes(range(256)))
    again = decode(law, encode(law, once))
    np.testing.assert_array_equal(once, again)


def test_g711_speech_round_trip_keeps_telephone_quality():
    speech, rate = sf.read(FIXTURES / "speech_10s_8k.wav", dtype="float32")
    assert rate == 8000
    for law in ("mulaw", "alaw"):
        decoded = decode(law, encode(law, speech))
        noise = decoded - speech
        snr = 10 * np.log10(np.sum(speech**2) / np.sum(noise**2))
        assert snr > 25, (law, snr)


def test_pcm16_both_byte_orders_and_scaling():
    raw_le = np.array([0, 1, -1, 32767, -32768], dtype="<i2").tobytes()
    raw_be = np.array([0, 1, -1, 32767, -32768], dtype=">i2").tobytes()
    expected = np.array([0, 1, -1, 32767, -32768], dtype=np.float32) / 32768
    np.testing.assert_array_equal(decode("pcm_s16le", raw_le), expected)
    np.testing.assert_array_equal(decode("pcm_s16be", raw_be), expected)
    assert decode("pcm_s16le", raw_le).dtype == np.float32
    assert decode("pcm_s16be", raw_le)[1] == pytest.approx(256 / 32768)  # wrong order differs


def test_f32le_is_clipped_into_range_and_non_finite_values_zeroed():
    raw = np.array([0.5, 2.0, -3.0, np.nan, np.inf, -np.inf, 1.0], dtype="<f4").tobytes()
    out = decode("f32le", raw)
    assert out[0] == 0.5
    assert out[2] == -1.0 and out[5] == -1.0
    assert out[3] == 0.0
    assert out.max() < 1.0 and out[1] == out[6] == np.float32(1 - 2**-15)


def test_float_encoding_clips_and_rounds():
    raw = encode("pcm_s16le", np.array([0.0, 1.5, -1.5, 0.5, np.nan]))
    assert np.frombuffer(raw, "<i2").tolist() == [0, 32767, -32768, 16384, 0]
    assert encode("pcm_s16be", np.array([1 / 32768])) == b"\x00\x01"


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_partial_samples_are_an_error_for_stateless_decode(encoding):
    width = codecs.bytes_per_sample(encoding)
    if width == 1:
        assert len(decode(encoding, b"\x01\x02\x03")) == 3
    else:
        with pytest.raises(CodecError, match="whole number"):
            decode(encoding, b"\x00" * (width + 1))


def test_unknown_encoding_is_a_codec_error():
    with pytest.raises(CodecError, match="unsupported encoding 'opus'"):
        decode("opus", b"")
    with pytest.raises(CodecError):
        encode("g722", np.zeros(4))


@settings(max_examples=150)
@given(
    encoding=st.sampled_from(ENCODINGS),
    channels=st.integers(1, 3),
    frames=st.integers(0, 60),
    cuts=st.lists(st.integers(0, 1000), max_size=8),
    seed=st.integers(0, 2**32 - 1),
)
def test_stream_decoder_chunking_equals_one_shot(encoding, channels, frames, cuts, seed):
    rng = np.random.default_rng(seed)
    samples = rng.uniform(-1, 1, size=frames * channels).astype(np.float32)
    raw = encode(encoding, samples)
    whole = decode(encoding, raw).reshape(-1, channels)
    points = sorted({c % (len(raw) + 1) for c in cuts})
    decoder = StreamDecoder(encoding, channels)
    parts = [decoder.push(raw[a:b]) for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    got = np.concatenate(parts) if parts else np.zeros((0, channels), np.float32)
    np.testing.assert_array_equal(got, whole)
    assert decoder.pending_bytes == 0
    assert decoder.push(raw[:1]).shape == (0, channels) or decoder.frame_bytes == 1


def test_stream_decoder_keeps_only_the_partial_frame():
    decoder = StreamDecoder("pcm_s16le", channels=2)
    assert decoder.push(b"\x01\x00\x02").shape == (0, 2)
    assert decoder.pending_bytes == 3
    out = decoder.push(b"\x00\x03\x00")
    np.testing.assert_array_equal(out, np.array([[1, 2]], np.float32) / 32768)
    assert decoder.pending_bytes == 2
