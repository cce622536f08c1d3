"""Sans-I/O Matroska/EBML reader: bytes in (any chunking), elements and blocks out.

Why our own: Kinesis Video Streams' ``GetMedia`` answers with an endless Matroska byte stream
(one EBML header + Segment per ~1 s fragment, unknown sizes, tags between clusters), read
while it arrives; the Python EBML libraries parse whole documents. This reader keeps no more
than one element (``max_element_bytes``) in memory and hands out, in stream order:

* :class:`ElementStart` / :class:`ElementEnd` for master elements (Segment, Tracks, Cluster,
  Tags, ...). Masters of *unknown size* (all-ones size, what live muxers write) end, as the
  Matroska specification says, at the first element that cannot be their child (a new EBML
  header ends the Segment before it).
* :class:`Leaf` for the integer, float, string and binary elements in :data:`SCHEMA`.
* :class:`Block` for ``SimpleBlock`` and ``Block``: track number, relative timecode, frames
  (Xiph, EBML and fixed-size lacing undone).
* :class:`ParseError`, once, for input no muxer writes (a malformed ID or size, an element
  larger than ``max_element_bytes``, a child overrunning its parent, nesting deeper than
  ``max_depth``, a bad lace); nothing follows it. The reader never raises on input.

Elements it does not know (or does not need: Cues, SeekHead, CodecPrivate...) are skipped as
they stream past, without being buffered, whatever their size.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "BLOCK",
    "BLOCK_GROUP",
    "CLUSTER",
    "EBML_HEADER",
    "SCHEMA",
    "SEGMENT",
    "SIMPLE_BLOCK",
    "Block",
    "ElementEnd",
    "ElementStart",
    "Leaf",
    "MkvEvent",
    "MkvReader",
    "ParseError",
    "encode_element",
    "encode_id",
    "encode_size",
]

Kind = Literal["master", "uint", "int", "float", "string", "binary", "block"]

EBML_HEADER: Final = 0x1A45DFA3
SEGMENT: Final = 0x18538067
INFO: Final = 0x1549A966
TRACKS: Final = 0x1654AE6B
TRACK_ENTRY: Final = 0xAE
AUDIO: Final = 0xE1
CLUSTER: Final = 0x1F43B675
BLOCK_GROUP: Final = 0xA0
BLOCK: Final = 0xA1
SIMPLE_BLOCK: Final = 0xA3
TAGS: Final = 0x1254C367
TAG: Final = 0x7373
SIMPLE_TAG: Final = 0x67C8
TARGETS: Final = 0x63C0
_GLOBAL: Final = frozenset({0xEC, 0xBF})  # Void, CRC-32: valid in any master

#: id -> (name, kind, parent ids). Parents drive where an unknown-size master ends.
SCHEMA: Final[dict[int, tuple[str, Kind, frozenset[int]]]] = {
    EBML_HEADER: ("EBML", "master", frozenset()),
    0x4286: ("EBMLVersion", "uint", frozenset({EBML_HEADER})),
    0x42F7: ("EBMLReadVersion", "uint", frozenset({EBML_HEADER})),
    0x42F2: ("EBMLMaxIDLength", "uint", frozenset({EBML_HEADER})),
    0x42F3: ("EBMLMaxSizeLength", "uint", frozenset({EBML_HEADER})),
    0x4282: ("DocType", "string", frozenset({EBML_HEADER})),
    0x4287: ("DocTypeVersion", "uint", frozenset({EBML_HEADER})),
    0x4285: ("DocTypeReadVersion", "uint", frozenset({EBML_HEADER})),
    SEGMENT: ("Segment", "master", frozenset()),
    INFO: ("Info", "master", frozenset({SEGMENT})),
    0x2AD7B1: ("TimestampScale", "uint", frozenset({INFO})),
    0x4489: ("Duration", "float", frozenset({INFO})),
    0x7BA9: ("Title", "string", frozenset({INFO})),
    0x4D80: ("MuxingApp", "string", frozenset({INFO})),
    0x5741: ("WritingApp", "string", frozenset({INFO})),
    0x73A4: ("SegmentUUID", "binary", frozenset({INFO})),
    TRACKS: ("Tracks", "master", frozenset({SEGMENT})),
    TRACK_ENTRY: ("TrackEntry", "master", frozenset({TRACKS})),
    0xD7: ("TrackNumber", "uint", frozenset({TRACK_ENTRY})),
    0x73C5: ("TrackUID", "uint", frozenset({TRACK_ENTRY})),
    0x83: ("TrackType", "uint", frozenset({TRACK_ENTRY})),
    0x536E: ("Name", "string", frozenset({TRACK_ENTRY})),
    0x86: ("CodecID", "string", frozenset({TRACK_ENTRY})),
    AUDIO: ("Audio", "master", frozenset({TRACK_ENTRY})),
    0xB5: ("SamplingFrequency", "float", frozenset({AUDIO})),
    0x9F: ("Channels", "uint", frozenset({AUDIO})),
    0x6264: ("BitDepth", "uint", frozenset({AUDIO})),
    CLUSTER: ("Cluster", "master", frozenset({SEGMENT})),
    0xE7: ("Timestamp", "uint", frozenset({CLUSTER})),
    0xA7: ("Position", "uint", frozenset({CLUSTER})),
    0xAB: ("PrevSize", "uint", frozenset({CLUSTER})),
    SIMPLE_BLOCK: ("SimpleBlock", "block", frozenset({CLUSTER})),
    BLOCK_GROUP: ("BlockGroup", "master", frozenset({CLUSTER})),
    BLOCK: ("Block", "block", frozenset({BLOCK_GROUP})),
    0x9B: ("BlockDuration", "uint", frozenset({BLOCK_GROUP})),
    TAGS: ("Tags", "master", frozenset({SEGMENT})),
    TAG: ("Tag", "master", frozenset({TAGS})),
    TARGETS: ("Targets", "master", frozenset({TAG})),
    0x68CA: ("TargetTypeValue", "uint", frozenset({TARGETS})),
    0x63C5: ("TagTrackUID", "uint", frozenset({TARGETS})),
    SIMPLE_TAG: ("SimpleTag", "master", frozenset({TAG, 0x67C8})),
    0x45A3: ("TagName", "string", frozenset({SIMPLE_TAG})),
    0x4487: ("TagString", "string", frozenset({SIMPLE_TAG})),
    0x447A: ("TagLanguage", "string", frozenset({SIMPLE_TAG})),
    0x4484: ("TagDefault", "uint", frozenset({SIMPLE_TAG})),
}

#: Largest element held in memory by default (a 1 s fragment of 8 kHz 16-bit audio is 16 kB).
DEFAULT_MAX_ELEMENT_BYTES: Final = 1 << 20
DEFAULT_MAX_DEPTH: Final = 8
_MAX_HEADER: Final = 12  # 4-byte ID + 8-byte size
_MAX_LACED_FRAMES: Final = 256


@dataclass(frozen=True, slots=True)
class ElementStart:
    id: int
    size: int | None  # None: unknown size (ends at the first element that is not its child)
    depth: int


@dataclass(frozen=True, slots=True)
class ElementEnd:
    id: int


@dataclass(frozen=True, slots=True)
class Leaf:
    id: int
    value: int | float | str | bytes

    @property
    def name(self) -> str:
        return SCHEMA[self.id][0]


@dataclass(frozen=True, slots=True)
class Block:
    """One SimpleBlock/Block: ``timecode`` is relative to its Cluster's, in timestamp ticks."""

    track: int
    timecode: int
    keyframe: bool
    frames: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ParseError:
    reason: str
    offset: int  # byte offset in the stream where the problem is


MkvEvent = ElementStart | ElementEnd | Leaf | Block | ParseError


class _Malformed(Exception):
    pass


@dataclass(slots=True)
class _Open:
    id: int
    end: int | None  # absolute stream offset where it ends; None = unknown size


@dataclass(slots=True)
class MkvStats:
    bytes: int = 0
    elements: int = 0
    skipped_bytes: int = 0
    blocks: int = 0


def _vint_length(first: int) -> int:
    """Length of a variable-size integer from its first byte (0: invalid, no marker bit)."""
    for length in range(1, 9):
        if first & (0x80 >> (length - 1)):
            return length
    return 0


def _read_id(buf: bytearray | bytes, i: int) -> tuple[int, int] | None:
    if i >= len(buf):
        return None
    length = _vint_length(buf[i])
    if length == 0 or length > 4:
        raise _Malformed(f"invalid element ID byte 0x{buf[i]:02x}")
    if i + length > len(buf):
        return None
    return int.from_bytes(buf[i : i + length], "big"), length


def _read_size(buf: bytearray | bytes, i: int) -> tuple[int | None, int] | None:
    """(size or None for unknown, length) or None when more bytes are needed."""
    if i >= len(buf):
        return None
    length = _vint_length(buf[i])
    if length == 0:
        raise _Malformed("invalid element size (no length marker)")
    if i + length > len(buf):
        return None
    value = int.from_bytes(buf[i : i + length], "big") & ((1 << (7 * length)) - 1)
    if value == (1 << (7 * length)) - 1:
        return None, length
    return value, length


def _uint(raw: bytes) -> int:
    if len(raw) > 8:
        raise _Malformed(f"integer element of {len(raw)} bytes")
    return int.from_bytes(raw, "big")


def _float(raw: bytes) -> float:
    if len(raw) == 4:
        return struct.unpack(">f", raw)[0]
    if len(raw) == 8:
        return struct.unpack(">d", raw)[0]
    if not raw:
        return 0.0
    raise _Malformed(f"float element of {len(raw)} bytes")


def _block(raw: bytes) -> Block:
    """Decode a SimpleBlock/Block body (RFC 9559 section 10), undoing its lacing."""
    if not raw:
        raise _Malformed("empty block")
    length = _vint_length(raw[0])
    if length == 0 or length > 8 or len(raw) < length + 3:
        raise _Malformed("block shorter than its header")
    track = int.from_bytes(raw[:length], "big") & ((1 << (7 * length)) - 1)
    timecode = struct.unpack(">h", raw[length : length + 2])[0]
    flags = raw[length + 2]
    data = raw[length + 3 :]
    lacing = (flags >> 1) & 0x03
    if lacing == 0:
        frames: tuple[bytes, ...] = (data,)
    else:
        frames = _unlace(lacing, data)
    return Block(track, timecode, bool(flags & 0x80), frames)


def _unlace(lacing: int, data: bytes) -> tuple[bytes, ...]:
    if not data:
        raise _Malformed("laced block without a frame count")
    count = data[0] + 1
    i = 1
    sizes: list[int] = []
    if lacing == 0x01:  # Xiph: each size a run of 255s plus a last byte
        for _ in range(count - 1):
            size = 0
            while True:
                if i >= len(data):
                    raise _Malformed("Xiph lace sizes run past the block")
                size += data[i]
                i += 1
                if data[i - 1] != 255:
                    break
            sizes.append(size)
    elif lacing == 0x03:  # EBML: first size, then signed differences
        for n in range(count - 1):
            got = _read_size(data, i)
            if got is None or got[0] is None:
                raise _Malformed("EBML lace sizes run past the block")
            value, length = got
            if n:
                value -= (1 << (7 * length - 1)) - 1
                value += sizes[-1]
            if value < 0:
                raise _Malformed("negative EBML lace size")
            sizes.append(value)
            i += length
    else:  # fixed size
        if (len(data) - 1) % count:
            raise _Malformed("fixed-size lace does not divide the block")
        sizes = [(len(data) - 1) // count] * (count - 1)
    last = len(data) - i - sum(sizes)
    if last < 0:
        raise _Malformed("lace sizes exceed the block")
    frames, offset = [], i
    for size in [*sizes, last]:
        frames.append(bytes(data[offset : offset + size]))
        offset += size
    return tuple(frames)


class MkvReader:
    """Incremental Matroska reader: ``push(data) -> [MkvEvent]``, ``close() -> [MkvEvent]``."""

    def __init__(
        self,
        *,
        max_element_bytes: int = DEFAULT_MAX_ELEMENT_BYTES,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        self.max_element_bytes = max_element_bytes
        self.max_depth = max_depth
        self._buf = bytearray()
        self._pos = 0  # stream offset of _buf[0]
        self._skip = 0  # bytes of a skipped element still to come
        self._open: list[_Open] = []
        self.error: ParseError | None = None
        self.stats = MkvStats()

    @property
    def depth(self) -> int:
        return len(self._open)

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)

    def push(self, data: bytes | bytearray | memoryview) -> list[MkvEvent]:
        """Events completed by ``data`` (possibly none); never raises."""
        if self.error is not None:
            return []
        self.stats.bytes += len(data)
        self._buf += data
        out: list[MkvEvent] = []
        try:
            self._parse(out)
        except _Malformed as exc:
            self._fail(out, str(exc))
        return out

    def close(self) -> list[MkvEvent]:
        """End of the stream: close open masters; an element cut short is a ParseError."""
        if self.error is not None:
            return []
        out: list[MkvEvent] = []
        if self._skip or self._buf:
            self._fail(out, "stream ends inside an element (truncated)")
            return out
        for opened in reversed(self._open):
            if opened.end is not None:
                self._fail(out, f"stream ends inside {_name(opened.id)} (truncated)")
                return out
            out.append(ElementEnd(opened.id))
        self._open.clear()
        return out

    # ------------------------------------------------------------------ internals
    def _fail(self, out: list[MkvEvent], reason: str) -> None:
        self.error = ParseError(reason, self._pos)
        out.append(self.error)
        self._buf.clear()
        self._open.clear()

    def _consume(self, n: int) -> None:
        del self._buf[:n]
        self._pos += n

    def _parse(self, out: list[MkvEvent]) -> None:
        while True:
            if self._skip:
                n = min(self._skip, len(self._buf))
                self._consume(n)
                self._skip -= n
                self.stats.skipped_bytes += n
                if self._skip:
                    return
            self._close_ended(out)
            got_id = _read_id(self._buf, 0)
            if got_id is None:
                return
            element_id, id_length = got_id
            got_size = _read_size(self._buf, id_length)
            if got_size is None:
                return
            size, size_length = got_size
            header = id_length + size_length
            self._close_unknown_sized(element_id, out)
            parent = self._open[-1] if self._open else None
            overrun = (
                parent is not None
                and parent.end is not None
                and size is not None
                and self._pos + header + size > parent.end
            )
            if overrun:
                assert parent is not None
                raise _Malformed(f"{_name(element_id)} overruns its parent {_name(parent.id)}")
            kind = SCHEMA.get(element_id, ("", "binary", frozenset()))[1]
            known = element_id in SCHEMA
            if size is None and not (known and kind == "master"):
                raise _Malformed(f"{_name(element_id)} has an unknown size")
            self.stats.elements += 1
            if known and kind == "master":
                if len(self._open) >= self.max_depth:
                    raise _Malformed(f"elements nested deeper than {self.max_depth}")
                self._consume(header)
                end = None if size is None else self._pos + size
                self._open.append(_Open(element_id, end))
                out.append(ElementStart(element_id, size, len(self._open) - 1))
                continue
            assert size is not None
            if not known:
                self._consume(header)
                self._skip = size
                continue
            if size > self.max_element_bytes:
                raise _Malformed(
                    f"{_name(element_id)} of {size} bytes exceeds the "
                    f"{self.max_element_bytes}-byte limit"
                )
            if len(self._buf) < header + size:
                return
            raw = bytes(self._buf[header : header + size])
            out.append(self._leaf(element_id, kind, raw))
            self._consume(header + size)

    def _close_ended(self, out: list[MkvEvent]) -> None:
        """Masters whose size is used up end here, with any unknown-size ones inside them."""
        ended = next(
            (k for k, o in enumerate(self._open) if o.end is not None and o.end <= self._pos),
            None,
        )
        while ended is not None and len(self._open) > ended:
            out.append(ElementEnd(self._open.pop().id))

    def _close_unknown_sized(self, element_id: int, out: list[MkvEvent]) -> None:
        """An element that cannot be a child of the open unknown-size master ends it."""
        parents = SCHEMA[element_id][2] if element_id in SCHEMA else None
        while self._open and self._open[-1].end is None:
            current = self._open[-1].id
            if element_id in _GLOBAL or parents is None or current in parents:
                return
            out.append(ElementEnd(self._open.pop().id))

    def _leaf(self, element_id: int, kind: Kind, raw: bytes) -> Leaf | Block:
        if kind == "block":
            self.stats.blocks += 1
            return _block(raw)
        if kind == "uint":
            return Leaf(element_id, _uint(raw))
        if kind == "int":
            return Leaf(element_id, int.from_bytes(raw, "big", signed=True))
        if kind == "float":
            return Leaf(element_id, _float(raw))
        if kind == "string":
            return Leaf(element_id, raw.rstrip(b"\0").decode("utf-8", "replace"))
        return Leaf(element_id, raw)


def _name(element_id: int) -> str:
    entry = SCHEMA.get(element_id)
    return entry[0] if entry else f"element 0x{element_id:X}"


# ---------------------------------------------------------------------- writing (tests, tools)
def encode_id(element_id: int) -> bytes:
    length = (element_id.bit_length() + 7) // 8
    return element_id.to_bytes(max(length, 1), "big")


def encode_size(size: int | None, length: int | None = None) -> bytes:
    """EBML size; ``None`` writes the 8-byte unknown size live muxers use."""
    if size is None:
        return b"\x01\xff\xff\xff\xff\xff\xff\xff"
    n = length or next(k for k in range(1, 9) if size < (1 << (7 * k)) - 1)
    return (size | (1 << (7 * n))).to_bytes(n, "big")


def encode_element(element_id: int, body: bytes = b"", *, unknown_size: bool = False) -> bytes:
    return encode_id(element_id) + encode_size(None if unknown_size else len(body)) + body
