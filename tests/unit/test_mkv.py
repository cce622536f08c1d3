"""The Matroska/EBML reader: real muxers' files (ffmpeg, mkvmerge) in any chunking, the lacing
and unknown-size rules of the specification, bad input as one ParseError, and fuzzing."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.sources.mkv import (
    CLUSTER,
    EBML_HEADER,
    SEGMENT,
    SIMPLE_BLOCK,
    Block,
    ElementEnd,
    ElementStart,
    Leaf,
    MkvReader,
    ParseError,
    encode_element,
    encode_size,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MUXED = ["kvs_connect_ffmpeg.mkv", "kvs_mkvmerge.mkv"]


def read(data: bytes, chunk: int | None = None, **kw) -> tuple[list, MkvReader]:
    reader = MkvReader(**kw)
    events: list = []
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        events += reader.push(data[i : i + step])
    events += reader.close()
    return events, reader


def simple_block(track: int, timecode: int, payload: bytes, flags: int = 0x80) -> bytes:
    return encode_element(
        SIMPLE_BLOCK, bytes([0x80 | track]) + struct.pack(">hB", timecode, flags) + payload
    )


def fragment(blocks: list[bytes], *, unknown: bool = True, tags: bytes = b"") -> bytes:
    ebml = encode_element(EBML_HEADER, encode_element(0x4282, b"matroska"))
    cluster = encode_element(CLUSTER, encode_element(0xE7, b"\x03\xe8") + b"".join(blocks),
                             unknown_size=unknown)  # fmt: skip
    return ebml + encode_element(SEGMENT, cluster + tags, unknown_size=unknown)


@pytest.mark.parametrize("name", MUXED)
@pytest.mark.parametrize("chunk", [1, 7, 1000, None])
def test_real_muxer_files_parse_the_same_in_any_chunking(name, chunk):
    data = (FIXTURES / name).read_bytes()
    whole, _ = read(data)
    assert not any(isinstance(e, ParseError) for e in whole)
    if chunk is not None:
        assert read(data, chunk)[0] == whole
    starts = [e for e in whole if isinstance(e, ElementStart)]
    ends = [e for e in whole if isinstance(e, ElementEnd)]
    assert len(starts) == len(ends)  # every master closed, unknown sizes included
    fragments = sum(1 for e in starts if e.id == EBML_HEADER)
    assert fragments == {"kvs_connect_ffmpeg.mkv": 6, "kvs_mkvmerge.mkv": 3}[name]
    blocks = [e for e in whole if isinstance(e, Block)]
    assert {b.track for b in blocks} == {1, 2}
    assert sum(len(f) for b in blocks for f in b.frames) == fragments * 2 * 16000


def test_ffmpeg_live_file_has_unknown_sizes_and_an_a_aac_track():
    events, _ = read((FIXTURES / "kvs_connect_ffmpeg.mkv").read_bytes())
    segment = next(e for e in events if isinstance(e, ElementStart) and e.id == SEGMENT)
    assert segment.size is None
    codecs = [e.value for e in events if isinstance(e, Leaf) and e.name == "CodecID"]
    assert codecs[:2] == ["A_AAC", "A_AAC"]  # the NUL padding is stripped


def test_unknown_size_segment_ends_at_the_next_ebml_header():
    one = fragment([simple_block(1, 0, b"\x01\x00")])
    events, reader = read(one + one)
    ids = [(type(e).__name__, getattr(e, "id", None)) for e in events]
    second_header = [i for i, x in enumerate(ids) if x == ("ElementStart", EBML_HEADER)][1]
    # Cluster and Segment of the first fragment end before the second EBML header starts
    assert ids[second_header - 2 : second_header] == [
        ("ElementEnd", CLUSTER),
        ("ElementEnd", SEGMENT),
    ]
    assert reader.error is None


def test_lacing_xiph_ebml_and_fixed():
    frames = [b"a" * 300, b"b" * 2, b"c" * 5]
    xiph = bytes([2, 255, 45, 2]) + b"".join(frames)
    # EBML lacing: first size 300 (2-byte vint), then signed difference 2 - 300 = -298
    diff = -298 + (1 << 13) - 1  # 2-byte signed vint bias
    ebml = bytes([2]) + encode_size(300, 2) + (diff | 0x4000).to_bytes(2, "big") + b"".join(frames)
    fixed = bytes([2]) + b"x" * 9
    for lacing, body, want in [
        (0x02, xiph, frames),
        (0x06, ebml, frames),
        (0x04, fixed, [b"xxx"] * 3),
    ]:
        events, reader = read(fragment([simple_block(1, 5, body, 0x80 | lacing)]))
        (block,) = [e for e in events if isinstance(e, Block)]
        assert list(block.frames) == want and block.timecode == 5 and block.keyframe
        assert reader.error is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00\x81\x00", "invalid element ID"),
        (encode_element(EBML_HEADER) + b"\x1f\x43\xb6\x75\x00", "no length marker"),
        (b"\x1a\x45\xdf\xa3\x85" + b"\x42\x82\x88matroska", "overruns its parent"),
        (b"\x18\x53\x80\x67\x01\xff\xff\xff\xff\xff\xff\xff" + b"\xa3\x01\xff\xff\xff\xff\xff"
         b"\xff\xff", "SimpleBlock has an unknown size"),
        (fragment([encode_element(SIMPLE_BLOCK, b"\x81\x00")]), "block shorter than its header"),
        (fragment([simple_block(1, 0, bytes([3, 200, 200]) + b"x", 0x82)]),
         "lace sizes exceed the block"),
        (fragment([simple_block(1, 0, bytes([2]) + b"x" * 10, 0x84)]), "does not divide"),
        (fragment([simple_block(1, 0, bytes([3, 255, 255]), 0x82)]), "Xiph lace sizes run past"),
        (encode_element(EBML_HEADER, b"\x42\x82\x88matroska")[:-3], "truncated"),
    ],
)  # fmt: skip
def test_bad_input_is_one_parse_error_with_a_reason(data, reason):
    events, reader = read(data)
    errors = [e for e in events if isinstance(e, ParseError)]
    assert len(errors) == 1 and reason in errors[0].reason, events
    assert events[-1] is errors[0] and reader.error is errors[0]
    assert reader.push(b"\x1a\x45\xdf\xa3\x80") == []  # nothing after the error


def test_oversized_element_is_refused_before_it_is_buffered():
    big = fragment([simple_block(1, 0, b"\0" * 5000)])
    reader = MkvReader(max_element_bytes=4096)
    events = reader.push(big[:200])  # the block's header says 5004 bytes: refused at once
    assert isinstance(events[-1], ParseError) and "exceeds the 4096-byte limit" in events[-1].reason
    assert reader.pending_bytes == 0


def test_unknown_elements_are_skipped_without_buffering_whatever_their_size():
    cues = b"\x1c\x53\xbb\x6b" + encode_size(10_000_000)  # Cues, 10 MB, streamed past
    reader = MkvReader(max_element_bytes=1024)
    events = reader.push(encode_element(EBML_HEADER) + b"\x18\x53\x80\x67" + encode_size(None)
                         + cues)  # fmt: skip
    for _ in range(100):
        events += reader.push(b"\0" * 100_000)
        assert reader.pending_bytes == 0
    events += reader.push(simple_block(1, 0, b"\x01\x02"))
    assert reader.error is None and reader.stats.skipped_bytes == 10_000_000
    assert isinstance(events[-1], Block)


def test_nesting_is_bounded():
    simple_tag = b"\x67\xc8" + encode_size(None)  # SimpleTag may hold SimpleTags
    events, _ = read(simple_tag * 20, max_depth=8)
    assert isinstance(events[-1], ParseError) and "deeper than 8" in events[-1].reason
    assert sum(isinstance(e, ElementStart) for e in events) == 8


@st.composite
def mutated_fixture(draw):
    data = bytearray((FIXTURES / "kvs_mkvmerge.mkv").read_bytes()[:6000])
    for _ in range(draw(st.integers(0, 6))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut])


@settings(max_examples=300)
@given(
    st.one_of(st.binary(max_size=400), mutated_fixture()),
    st.integers(1, 64),
)
def test_fuzz_never_raises_and_chunking_does_not_matter(data, chunk):
    whole, reader = read(data, max_element_bytes=4096)
    assert read(data, chunk, max_element_bytes=4096)[0] == whole
    assert sum(isinstance(e, ParseError) for e in whole) <= 1
    if reader.error is None:  # a clean stream closes every master it opened
        starts = sum(isinstance(e, ElementStart) for e in whole)
        assert starts == sum(isinstance(e, ElementEnd) for e in whole)
