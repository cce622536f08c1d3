"""RTCP (RFC 3550 section 6) parsing: compound packets into sender/receiver reports, SDES, BYE.

streamguard only acts on BYE (a sender says an SSRC is gone: its call ends at once); reports are
parsed so a malformed or hostile datagram is refused cleanly and a well-formed one is counted.
Every packet of a compound datagram has the common header

    V=2 (2 bits) | P (1) | count (5) | packet type (8) | length (16: 32-bit words - 1)

and the packet types 200 (SR), 201 (RR), 202 (SDES), 203 (BYE) and 204 (APP); others (205/206
feedback, XR...) are kept as :class:`OtherPacket`. Padding (P) is allowed on the last packet only,
as RFC 3550 A.2 requires. Any violation raises :class:`RtcpError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "AppPacket",
    "Goodbye",
    "OtherPacket",
    "ReceiverReport",
    "ReportBlock",
    "RtcpError",
    "RtcpPacket",
    "SenderReport",
    "SourceDescription",
    "is_rtcp",
    "parse_rtcp",
]

SR: Final = 200
RR: Final = 201
SDES: Final = 202
BYE: Final = 203
APP: Final = 204
_REPORT_BLOCK: Final = struct.Struct("!IB3sIIII")


class RtcpError(ValueError):
    """A datagram that is not well-formed RTCP."""


@dataclass(frozen=True, slots=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int  # /256
    cumulative_lost: int  # signed 24-bit
    highest_sequence: int
    jitter: int
    last_sr: int
    delay_since_last_sr: int


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class SourceDescription:
    chunks: tuple[tuple[int, tuple[tuple[int, bytes], ...]], ...]  # (ssrc, ((item type, text)...))


@dataclass(frozen=True, slots=True)
class Goodbye:
    ssrcs: tuple[int, ...]
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AppPacket:
    subtype: int
    ssrc: int
    name: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class OtherPacket:
    packet_type: int
    count: int
    body: bytes


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Goodbye | AppPacket | OtherPacket


def is_rtcp(datagram: bytes | bytearray | memoryview) -> bool:
    """True when a datagram on an RTP port is RTCP (rtcp-mux, RFC 5761: PT 200..204)."""
    return len(datagram) >= 2 and datagram[0] >> 6 == 2 and 200 <= datagram[1] <= 204


def parse_rtcp(datagram: bytes | bytearray | memoryview) -> list[RtcpPacket]:
    """Every packet of a (compound) RTCP datagram, in order; RtcpError if any is malformed."""
    data = bytes(datagram)
    if len(data) < 4:
        raise RtcpError(f"{len(data)} bytes is shorter than an RTCP header")
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 4:
            raise RtcpError("trailing bytes shorter than an RTCP header")
        b0, packet_type, words = struct.unpack_from("!BBH", data, offset)
        if b0 >> 6 != 2:
            raise RtcpError(f"RTCP version {b0 >> 6}, expected 2")
        end = offset + 4 * (words + 1)
        if end > len(data):
            raise RtcpError("RTCP packet longer than the datagram")
        body = data[offset + 4 : end]
        if b0 & 0x20:
            if end != len(data):
                raise RtcpError("padding on an RTCP packet that is not the last")
            pad = body[-1] if body else 0
            if pad == 0 or pad > len(body):
                raise RtcpError(f"invalid RTCP padding count {pad}")
            body = body[:-pad]
        packets.append(_packet(packet_type, b0 & 0x1F, body))
        offset = end
    return packets


def _packet(packet_type: int, count: int, body: bytes) -> RtcpPacket:
    if packet_type == SR:
        if len(body) < 24 + 24 * count:
            raise RtcpError("sender report shorter than its report blocks")
        ssrc, ntp, rtp_ts, packets, octets = struct.unpack_from("!IQIII", body)
        return SenderReport(ssrc, ntp, rtp_ts, packets, octets, _blocks(body, 24, count))
    if packet_type == RR:
        if len(body) < 4 + 24 * count:
            raise RtcpError("receiver report shorter than its report blocks")
        (ssrc,) = struct.unpack_from("!I", body)
        return ReceiverReport(ssrc, _blocks(body, 4, count))
    if packet_type == SDES:
        return SourceDescription(_sdes_chunks(body, count))
    if packet_type == BYE:
        if len(body) < 4 * count:
            raise RtcpError("BYE shorter than its SSRC list")
        ssrcs = struct.unpack_from(f"!{count}I", body)
        rest = body[4 * count :]
        reason = ""
        if rest:
            length = rest[0]
            if length + 1 > len(rest):
                raise RtcpError("BYE reason longer than the packet")
            reason = rest[1 : 1 + length].decode("utf-8", "replace")
        return Goodbye(tuple(ssrcs), reason)
    if packet_type == APP:
        if len(body) < 8 or len(body) % 4:
            raise RtcpError("APP packet shorter than its SSRC and name")
        (ssrc,) = struct.unpack_from("!I", body)
        return AppPacket(count, ssrc, body[4:8], body[8:])
    return OtherPacket(packet_type, count, body)


def _blocks(body: bytes, start: int, count: int) -> tuple[ReportBlock, ...]:
    blocks = []
    for i in range(count):
        ssrc, fraction, lost, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(
            body, start + 24 * i
        )
        cumulative = int.from_bytes(lost, "big", signed=True)
        blocks.append(ReportBlock(ssrc, fraction, cumulative, highest, jitter, lsr, dlsr))
    return tuple(blocks)


def _sdes_chunks(body: bytes, count: int) -> tuple[tuple[int, tuple[tuple[int, bytes], ...]], ...]:
    chunks = []
    offset = 0
    for _ in range(count):
        if len(body) - offset < 4:
            raise RtcpError("SDES chunk without an SSRC")
        (ssrc,) = struct.unpack_from("!I", body, offset)
        offset += 4
        items = []
        while True:
            if offset >= len(body):
                raise RtcpError("SDES chunk without its terminating null item")
            item_type = body[offset]
            if item_type == 0:
                offset += 4 - offset % 4  # the null item, padded to the next 32-bit boundary
                if offset > len(body):
                    raise RtcpError("SDES chunk padding runs past the packet")
                break
            if offset + 2 > len(body) or offset + 2 + body[offset + 1] > len(body):
                raise RtcpError("SDES item longer than the packet")
            length = body[offset + 1]
            items.append((item_type, body[offset + 2 : offset + 2 + length]))
            offset += 2 + length
        chunks.append((ssrc, tuple(items)))
    return tuple(chunks)
