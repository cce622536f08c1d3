"""Sans-I/O RTP receiver: packet parsing (RFC 3550), per-SSRC streams, a jitter buffer, a demux.

The UDP edge owns the socket and a clock; per datagram it calls
``demux.push(data, addr, now)``, and every few tens of milliseconds ``demux.poll(now)`` (releases
packets held too long and ends idle streams); at shutdown ``demux.close()``. Each returns
:class:`CallEvent` pairs ``(call_id, event)`` because one UDP port carries many calls.

* One call per (source address, SSRC): ``call_id = "rtp-<host>:<port>-<ssrc as 8 hex digits>"``
  (IPv6 hosts in brackets; ``-2``, ``-3``... appended when the same address and SSRC come back
  after their call ended), one track per call named by the SSRC (8 lowercase hex digits). A new
  SSRC from the same address is a new call; the old one ends when idle (``CallEnd("idle")``).
* Payload types come from a map ``{pt: (encoding, clock_rate)}``; the default is
  :data:`DEFAULT_PT_MAP` (0 = PCMU, 8 = PCMA, 8 kHz) and configuration adds dynamic ones, e.g.
  ``{96: ("pcm_s16be", 16000)}`` for L16 (network byte order, RFC 3551). Mono only. A packet with a
  PT not in the map is dropped and counted (``telephone-event``, comfort noise, ...), but it still
  takes its place in sequence order, and the timestamp jump to the next audio packet is filled with
  silence, so the track keeps call time.
* RTCP (:mod:`~streamguard.sources.rtcp`), on its own port (``push_rtcp``) or multiplexed on the
  RTP port: a BYE ends the call of each of its SSRCs from that host (``CallEnd("bye")``, the
  jitter buffer flushed first) as soon as :data:`BYE_GRACE_SECONDS` pass without a packet,
  instead of ``idle_timeout``. The grace exists because RTCP comes on another socket: RTP sent
  just before the BYE may still be queued behind it. RTP arriving for that SSRC after its call
  ended on a BYE is ignored for ``idle_timeout`` instead of opening a new call. Reports are
  parsed and counted.
* Sequence numbers follow RFC 3550 appendix A.1: extended sequence numbers across wraps,
  MAX_DROPOUT 3000, MAX_MISORDER 100, a sender restart accepted after two sequential packets of a
  big jump. Probation is MIN_SEQUENTIAL = 2, but the probation packets are held, not discarded:
  audio from a sender's very first packet is kept, while a single stray datagram never opens a call.
* Jitter buffer: packets are released in sequence order (see :class:`ReorderBuffer`), waiting for a
  hole at most ``jitter_packets`` packets or ``max_delay`` seconds (the latter on ``poll``).
  Duplicates and late packets (older than what was released) are dropped and counted; lost audio
  becomes a :class:`Gap` sized from the RTP timestamp difference (at most ``max_gap_seconds``).
* Interarrival jitter (A.8): ``J += (|D| - J) / 16`` from the ``now`` passed in.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from streamguard.audio.codecs import ENCODINGS, CodecError, decode
from streamguard.errors import ConfigError
from streamguard.sources.base import (
    Audio,
    CallEnd,
    CallStart,
    Gap,
    SourceEvent,
    TrackEnd,
    TrackStart,
    rate_problem,
)
from streamguard.sources.reorder import ReorderBuffer, ReorderStats
from streamguard.sources.rtcp import Goodbye, RtcpError, is_rtcp, parse_rtcp

__all__ = [
    "DEFAULT_PT_MAP",
    "CallEvent",
    "RtpDemux",
    "RtpDemuxStats",
    "RtpError",
    "RtpPacket",
    "RtpStream",
    "RtpStreamStats",
    "parse_rtp",
    "validate_pt_map",
]

RTP_VERSION: Final = 2
RTP_SEQ_MOD: Final = 1 << 16
MAX_DROPOUT: Final = 3000
MAX_MISORDER: Final = 100
MIN_SEQUENTIAL: Final = 2
_RESTART: Final = -1  # _extend's answer for a confirmed sender restart (never a real ext seq)
#: After a BYE, the call ends once its SSRC has been silent this long (seconds).
BYE_GRACE_SECONDS: Final = 0.25
_RTCP_PTS: Final = range(72, 77)  # SR, RR, SDES, BYE, APP seen through the RTP header layout

#: Static payload types every receiver knows (RFC 3551); configuration adds dynamic ones.
DEFAULT_PT_MAP: Final[Mapping[int, tuple[str, int]]] = {0: ("mulaw", 8000), 8: ("alaw", 8000)}

_HEADER: Final = struct.Struct("!BBHII")
_PT_ALIASES: Final = {"pcmu": "mulaw", "pcma": "alaw", "l16": "pcm_s16be"}  # RTP/SDP names
_MAX_GENERATIONS: Final = 4096


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP packet."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None  # (profile, data) of the header extension
    padding: int = 0  # padding bytes that followed the payload

    def to_bytes(self) -> bytes:
        """Serialise (used by tests and by senders such as ``streamguard feed``)."""
        if len(self.csrcs) > 15:
            raise RtpError("at most 15 CSRCs")
        b0 = (RTP_VERSION << 6) | (len(self.csrcs) & 0x0F)
        b0 |= 0x20 if self.padding else 0
        b0 |= 0x10 if self.extension is not None else 0
        b1 = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        out = bytearray(
            _HEADER.pack(
                b0, b1, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc & 0xFFFFFFFF
            )
        )
        for csrc in self.csrcs:
            out += struct.pack("!I", csrc)
        if self.extension is not None:
            profile, data = self.extension
            if len(data) % 4:
                raise RtpError("header extension data must be a multiple of 4 bytes")
            out += struct.pack("!HH", profile, len(data) // 4) + data
        out += self.payload
        if self.padding:
            out += bytes(self.padding - 1) + bytes([self.padding])
        return bytes(out)


def parse_rtp(data: bytes | bytearray | memoryview) -> RtpPacket:
    """Parse one RTP packet (RFC 3550 section 5.1); raise :class:`RtpError` if malformed."""
    data = bytes(data)
    if len(data) < 12:
        raise RtpError(f"{len(data)} bytes is shorter than the 12-byte RTP header")
    b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {b0 >> 6}, expected 2")
    offset = 12 + 4 * (b0 & 0x0F)
    if len(data) < offset:
        raise RtpError("packet shorter than its CSRC list")
    csrcs = struct.unpack_from(f"!{b0 & 0x0F}I", data, 12)
    extension = None
    if b0 & 0x10:
        if len(data) < offset + 4:
            raise RtpError("packet shorter than its header extension")
        profile, words = struct.unpack_from("!HH", data, offset)
        offset += 4
        if len(data) < offset + 4 * words:
            raise RtpError("header extension longer than the packet")
        extension = (profile, data[offset : offset + 4 * words])
        offset += 4 * words
    end = len(data)
    padding = 0
    if b0 & 0x20:
        padding = data[-1]
        if padding == 0 or padding > end - offset:
            raise RtpError(f"invalid padding count {padding}")
        end -= padding
    return RtpPacket(
        payload_type=b1 & 0x7F,
        sequence=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=data[offset:end],
        marker=bool(b1 & 0x80),
        csrcs=tuple(csrcs),
        extension=extension,
        padding=padding,
    )


def validate_pt_map(pt_map: Mapping[int, tuple[str, int]]) -> dict[int, tuple[str, int]]:
    """Check a payload-type map from configuration; raise ConfigError naming the bad entry.

    Encodings may use the codec names (``mulaw``...) or the RTP names ``pcmu``, ``pcma``, ``l16``
    (= ``pcm_s16be``, RTP's byte order).
    """
    out: dict[int, tuple[str, int]] = {}
    for pt, entry in pt_map.items():
        if isinstance(pt, str) and pt.isdigit():  # TOML table keys are strings
            pt = int(pt)
        if not isinstance(pt, int) or not 0 <= pt <= 127 or pt in _RTCP_PTS:
            raise ConfigError(f"RTP payload type {pt!r} must be an integer 0..127 (not 72..76)")
        try:
            encoding, rate = entry
        except (TypeError, ValueError):
            raise ConfigError(f"RTP payload type {pt}: expected [encoding, clock_rate]") from None
        encoding = _PT_ALIASES.get(str(encoding).lower(), encoding)
        if encoding not in ENCODINGS:
            raise ConfigError(
                f"RTP payload type {pt}: encoding {encoding!r} not one of {', '.join(ENCODINGS)}"
            )
        if problem := rate_problem(rate):
            raise ConfigError(f"RTP payload type {pt}: {problem}")
        out[pt] = (encoding, rate)
    return out


def _signed32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x >= 1 << 31 else x


@dataclass(slots=True)
class RtpStreamStats:
    packets: int = 0  # datagrams for this SSRC, whatever became of them
    jumps: int = 0  # packets more than MAX_DROPOUT ahead / MAX_MISORDER behind: dropped
    restarts: int = 0  # sender restarts accepted (two sequential packets after a jump)
    unknown_pt: int = 0  # released packets whose PT is not in the map (or has another clock rate)
    bad_payload: int = 0  # payload that is not a whole number of samples
    gaps: int = 0
    gap_samples: int = 0
    jitter: float = 0.0  # RFC 3550 A.8 interarrival jitter, in timestamp units
    reorder: ReorderStats = field(default_factory=ReorderStats)  # received/dup/late/reordered/lost

    @property
    def received(self) -> int:
        return self.reorder.received

    @property
    def duplicates(self) -> int:
        return self.reorder.duplicates

    @property
    def late(self) -> int:
        return self.reorder.late

    @property
    def reordered(self) -> int:
        return self.reorder.reordered

    @property
    def lost(self) -> int:
        return self.reorder.lost


class RtpStream:
    """Receiver state for one SSRC: sequence validation, jitter buffer, decoding, gap filling.

    ``push``/``poll``/``flush`` return :class:`Audio` and :class:`Gap` events for ``track``; they
    return nothing until the stream has passed probation (``validated``), then everything held.
    """

    def __init__(
        self,
        track: str,
        encoding: str,
        clock_rate: int,
        pt_map: Mapping[int, tuple[str, int]],
        *,
        jitter_packets: int = 8,
        max_delay: float = 0.1,
        max_gap_seconds: float = 10.0,
        min_sequential: int = MIN_SEQUENTIAL,
    ) -> None:
        self.track = track
        self.encoding = encoding
        self.clock_rate = clock_rate
        self.stats = RtpStreamStats()
        self._pt_map = pt_map
        self._jitter_packets = jitter_packets
        self._max_delay = max_delay
        self._max_gap = int(max_gap_seconds * clock_rate)
        self._min_sequential = max(1, min_sequential)
        self._probation = self._min_sequential
        self._held: list[SourceEvent] = []  # events produced during probation
        self._max_ext: int | None = None
        self._bad_seq: int | None = None
        self._next_ts: int | None = None
        self._last_arrival: tuple[float, int] | None = None  # (now, rtp timestamp)
        self._buffer = self._new_buffer()

    @property
    def validated(self) -> bool:
        return self._probation == 0

    def push(self, packet: RtpPacket, now: float) -> list[SourceEvent]:
        self.stats.packets += 1
        ext = self._extend(packet.sequence)
        if ext is None:
            return []
        if ext == _RESTART:  # sender restart: release what is held, start a fresh sequence space
            out = self._decode(self._buffer.flush())
            self.stats.restarts += 1
            self._buffer = self._new_buffer()
            self._max_ext = packet.sequence + RTP_SEQ_MOD
            self._next_ts = None
            self._last_arrival = None
            ext = self._max_ext
        else:
            out = []
        self._update_jitter(packet.timestamp, now)
        before = self._buffer.stats.received
        released = self._buffer.push(ext, packet, now)
        if self._probation and self._buffer.stats.received > before:
            self._probation -= 1
        out += self._decode(released)
        out += self._decode(self._buffer.release_due(now))
        return self._gate(out)

    def poll(self, now: float) -> list[SourceEvent]:
        """Release packets held longer than ``max_delay`` behind a hole."""
        return self._gate(self._decode(self._buffer.release_due(now)))

    def flush(self) -> list[SourceEvent]:
        """End of stream: release everything held (only if the stream was validated)."""
        out = self._gate(self._decode(self._buffer.flush()))
        return out if self.validated else []

    # ------------------------------------------------------------------ internals
    def _new_buffer(self) -> ReorderBuffer[RtpPacket]:
        # Restarts get a fresh buffer but keep counting into the same stats.
        return ReorderBuffer(
            self._jitter_packets, max_wait=self._max_delay, stats=self.stats.reorder
        )

    def _gate(self, events: list[SourceEvent]) -> list[SourceEvent]:
        if not self.validated:
            self._held += events
            return []
        if self._held:
            events, self._held = self._held + events, []
        return events

    def _extend(self, seq: int) -> int | None:
        """RFC 3550 A.1 update_seq, returning the extended sequence number.

        None = drop the packet (a jump not yet confirmed); _RESTART = sender restart confirmed.
        """
        if self._max_ext is None:
            self._max_ext = seq + RTP_SEQ_MOD  # one cycle of headroom for early reordering
            return self._max_ext
        udelta = (seq - self._max_ext) % RTP_SEQ_MOD
        if udelta < MAX_DROPOUT:  # in order, with a permissible gap (0 = duplicate)
            self._max_ext += udelta
            return self._max_ext
        if udelta <= RTP_SEQ_MOD - MAX_MISORDER:  # a very large jump
            if seq == self._bad_seq:
                self._bad_seq = None
                if not self.validated:  # still on probation: start probation over here
                    self._held.clear()
                    self._buffer = self._new_buffer()
                    self._probation = self._min_sequential
                    self._max_ext = seq + RTP_SEQ_MOD
                    self._next_ts = None
                    self.stats.restarts += 1
                    return self._max_ext
                return _RESTART
            self._bad_seq = (seq + 1) % RTP_SEQ_MOD
            self.stats.jumps += 1
            return None
        return self._max_ext - (RTP_SEQ_MOD - udelta)  # duplicate or reordered

    def _update_jitter(self, timestamp: int, now: float) -> None:
        arrival = round(now * self.clock_rate)
        if self._last_arrival is not None:
            prev_arrival, prev_ts = self._last_arrival
            d = (arrival - prev_arrival) - _signed32(timestamp - prev_ts)
            self.stats.jitter += (abs(d) - self.stats.jitter) / 16.0
        self._last_arrival = (arrival, timestamp)

    def _decode(self, released: list[tuple[int, RtpPacket]]) -> list[SourceEvent]:
        events: list[SourceEvent] = []
        for _, packet in released:
            entry = self._pt_map.get(packet.payload_type)
            if entry is None or entry[1] != self.clock_rate:
                self.stats.unknown_pt += 1
                continue
            try:
                samples = decode(entry[0], packet.payload)
            except CodecError:
                self.stats.bad_payload += 1
                continue
            if self._next_ts is not None:
                diff = _signed32(packet.timestamp - self._next_ts)
                if diff > 0:
                    n = min(diff, self._max_gap)
                    self.stats.gaps += 1
                    self.stats.gap_samples += n
                    events.append(Gap(self.track, n))
            self._next_ts = (packet.timestamp + len(samples)) & 0xFFFFFFFF
            if len(samples):
                events.append(Audio(self.track, samples))
        return events


class CallEvent(NamedTuple):
    """A source event and the call it belongs to (one UDP port carries many calls)."""

    call_id: str
    event: SourceEvent


@dataclass(slots=True)
class RtpDemuxStats:
    datagrams: int = 0
    malformed: int = 0  # not RTP (parse_rtp raised)
    rtcp: int = 0  # RTCP datagrams (own port or multiplexed on the RTP port)
    rtcp_malformed: int = 0  # RTCP datagrams parse_rtcp refused
    byes: int = 0  # calls ended by an RTCP BYE
    after_bye: int = 0  # RTP datagrams of an SSRC that had said BYE: ignored
    unknown_pt: int = 0  # first packets of an SSRC with a PT not in the map: no call opened
    refused_streams: int = 0  # datagrams of new SSRCs beyond max_streams
    calls_started: int = 0
    calls_ended: int = 0


@dataclass(slots=True)
class _Entry:
    call_id: str
    stream: RtpStream
    metadata: dict
    last_seen: float
    announced: bool = False
    bye_at: float | None = None  # when an RTCP BYE named this SSRC


class RtpDemux:
    """Route RTP datagrams from one UDP port to per-(address, SSRC) calls.

    ``pt_map`` extends :data:`DEFAULT_PT_MAP` (validated; ConfigError if wrong). ``idle_timeout``
    seconds without a packet end a call. ``max_streams`` bounds state kept for senders (streams
    on probation included); the rest are refused and counted.
    """

    def __init__(
        self,
        pt_map: Mapping[int, tuple[str, int]] | None = None,
        idle_timeout: float = 5.0,
        *,
        max_streams: int = 256,
        jitter_packets: int = 8,
        max_delay: float = 0.1,
        max_gap_seconds: float = 10.0,
        min_sequential: int = MIN_SEQUENTIAL,
    ) -> None:
        self.pt_map = validate_pt_map({**DEFAULT_PT_MAP, **(pt_map or {})})
        self.idle_timeout = idle_timeout
        self.max_streams = max_streams
        self.stats = RtpDemuxStats()
        self._stream_args = {
            "jitter_packets": jitter_packets,
            "max_delay": max_delay,
            "max_gap_seconds": max_gap_seconds,
            "min_sequential": min_sequential,
        }
        self._entries: dict[tuple[str, int, int], _Entry] = {}
        self._generations: dict[tuple[str, int, int], int] = {}  # calls per key, bounded LRU
        self._said_bye: dict[tuple[str, int], float] = {}  # (host, ssrc) -> ignore RTP until
        self._early_bye: dict[tuple[str, int], float] = {}  # BYE before any RTP was handled

    @property
    def streams(self) -> dict[str, RtpStream]:
        """Streams by call id (for stats and metrics)."""
        return {e.call_id: e.stream for e in self._entries.values()}

    def push(self, datagram: bytes, addr: tuple, now: float) -> list[CallEvent]:
        """One datagram from ``addr`` (``(host, port, ...)`` as asyncio gives it) at ``now``."""
        self.stats.datagrams += 1
        if is_rtcp(datagram):
            return self.push_rtcp(datagram, addr, now)
        try:
            packet = parse_rtp(datagram)
        except RtpError:
            self.stats.malformed += 1
            return []
        if packet.payload_type in _RTCP_PTS:  # RTCP types we do not know (e.g. 205/206 feedback)
            self.stats.rtcp += 1
            return []
        host, port = str(addr[0]), int(addr[1])
        key = (host, port, packet.ssrc)
        entry = self._entries.get(key)
        if entry is None and self._said_bye.get((host, packet.ssrc), -1.0) >= now:
            self.stats.after_bye += 1
            return []
        if entry is None:
            entry = self._open(key, packet, now)
            if entry is None:
                return []
            bye_at = self._early_bye.pop((host, packet.ssrc), None)
            if bye_at is not None and now - bye_at <= self.idle_timeout:
                entry.bye_at = bye_at
        entry.last_seen = now
        events = entry.stream.push(packet, now)
        return self._wrap(entry, events)

    def push_rtcp(self, datagram: bytes, addr: tuple, now: float) -> list[CallEvent]:
        """One RTCP datagram from ``addr``: a BYE ends its SSRCs' calls from that host.

        RTCP comes from the sender's RTP port + 1, so a BYE is matched on host and SSRC.
        """
        self.stats.rtcp += 1
        try:
            packets = parse_rtcp(datagram)
        except RtcpError:
            self.stats.rtcp_malformed += 1
            return []
        host = str(addr[0])
        for packet in packets:
            if not isinstance(packet, Goodbye):
                continue
            for ssrc in packet.ssrcs:
                entries = [e for k, e in self._entries.items() if k[0] == host and k[2] == ssrc]
                for entry in entries:
                    entry.bye_at = now
                if not entries:
                    self._early_bye[(host, ssrc)] = now
        while len(self._early_bye) > _MAX_GENERATIONS:
            del self._early_bye[next(iter(self._early_bye))]
        return self._end_said_bye(now)

    def poll(self, now: float) -> list[CallEvent]:
        """Release packets held too long; end calls idle longer than ``idle_timeout``."""
        out: list[CallEvent] = self._end_said_bye(now)
        for key, entry in list(self._entries.items()):
            if now - entry.last_seen > self.idle_timeout:
                out += self._end(key, "idle")
            else:
                out += self._wrap(entry, entry.stream.poll(now))
        return out

    def _end_said_bye(self, now: float) -> list[CallEvent]:
        """End the calls whose SSRC said BYE and has been silent for the grace period."""
        out: list[CallEvent] = []
        for key, entry in list(self._entries.items()):
            if entry.bye_at is not None and now - entry.last_seen >= BYE_GRACE_SECONDS:
                ended = self._end(key, "bye")
                self.stats.byes += bool(ended)
                self._said_bye[(key[0], key[2])] = now + self.idle_timeout
                out += ended
        while len(self._said_bye) > _MAX_GENERATIONS:
            del self._said_bye[next(iter(self._said_bye))]
        return out

    def close(self) -> list[CallEvent]:
        """Shut down: end every open call (``CallEnd("closed")``)."""
        out: list[CallEvent] = []
        for key in list(self._entries):
            out += self._end(key, "closed")
        return out

    # ------------------------------------------------------------------ internals
    def _open(self, key: tuple[str, int, int], packet: RtpPacket, now: float) -> _Entry | None:
        entry_pt = self.pt_map.get(packet.payload_type)
        if entry_pt is None:
            self.stats.unknown_pt += 1
            return None
        if len(self._entries) >= self.max_streams:
            self.stats.refused_streams += 1
            return None
        host, port, ssrc = key
        track = f"{ssrc:08x}"
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        encoding, rate = entry_pt
        stream = RtpStream(track, encoding, rate, self.pt_map, **self._stream_args)
        metadata = {
            "remote": where,
            "ssrc": ssrc,
            "payload_type": packet.payload_type,
            "encoding": encoding,
            "sample_rate": rate,
        }
        # A sender that went idle and came back is a new call; keep its call id unique.
        generation = self._generations.pop(key, 0) + 1
        self._generations[key] = generation
        while len(self._generations) > _MAX_GENERATIONS:
            del self._generations[next(iter(self._generations))]
        call_id = f"rtp-{where}-{track}" + (f"-{generation}" if generation > 1 else "")
        entry = _Entry(call_id, stream, metadata, now)
        self._entries[key] = entry
        return entry

    def _wrap(self, entry: _Entry, events: list[SourceEvent]) -> list[CallEvent]:
        out: list[CallEvent] = []
        if not entry.announced and entry.stream.validated:
            entry.announced = True
            self.stats.calls_started += 1
            out.append(CallEvent(entry.call_id, CallStart(entry.call_id, "rtp", entry.metadata)))
            out.append(
                CallEvent(entry.call_id, TrackStart(entry.stream.track, entry.stream.clock_rate))
            )
        out += [CallEvent(entry.call_id, ev) for ev in events]
        return out

    def _end(self, key: tuple[str, int, int], reason: str) -> list[CallEvent]:
        entry = self._entries.pop(key)
        if not entry.announced:
            return []  # never passed probation: it was never a call
        out = [CallEvent(entry.call_id, ev) for ev in entry.stream.flush()]
        out.append(CallEvent(entry.call_id, TrackEnd(entry.stream.track)))
        out.append(CallEvent(entry.call_id, CallEnd(reason)))
        self.stats.calls_ended += 1
        return out
