"""RNC ProPack method 1 decompression (pure Python), for the speech of *Beneath a Steel Sky*.

About half of the game's speech files in ``sky.dsk`` are packed with Rob Northen's ProPack
(method 1: LZ77 with three small Huffman tables per block, literal runs stored as raw bytes
between the bit-stream words). No Debian or PyPI package unpacks them, so the corpus builder
does it here. Both CRC-16 checksums the format stores are verified, so a decoding mistake can
never slip into the corpus as noise. Speed: ~20 KB per 0.1 s, fine for a few hundred files.
"""

from __future__ import annotations

import struct


def crc16(data: bytes) -> int:
    """CRC-16/ARC (poly 0xA001 reflected), the checksum RNC ProPack stores."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


class _Bits:
    """LSB-first bit reader over 16-bit little-endian words, with raw byte runs in between."""

    __slots__ = ("avail", "buf", "high", "low", "pos")

    def __init__(self, buf: bytes, pos: int):
        self.buf, self.pos = buf, pos
        self.low = self._word(pos)
        self.high = 0
        self.avail = 0

    def _word(self, at: int) -> int:
        b = self.buf
        return (b[at] if at < len(b) else 0) | ((b[at + 1] if at + 1 < len(b) else 0) << 8)

    def take(self, n: int) -> int:
        value = self.low & ((1 << n) - 1)
        if self.avail < n:
            c = self.avail
            self.low = ((self.low >> c) | (self.high << (16 - c))) & 0xFFFF
            self.pos += 2
            self.high = self._word(self.pos)
            n -= c
            self.avail = 16
        self.low = ((self.low >> n) | (self.high << (16 - n))) & 0xFFFF
        self.high >>= n
        self.avail -= n
        return value

    def raw(self, n: int) -> bytes:
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        c = self.avail
        a, b = self._word(self.pos), self._word(self.pos + 2)
        self.low = ((self.low & ((1 << c) - 1)) | (a << c)) & 0xFFFF
        self.high = ((a >> (16 - c)) | (b << c)) & 0xFFFF
        return out


def _table(bits: _Bits, old):
    n = bits.take(5)
    if not n:
        return old
    lengths = [bits.take(4) for _ in range(n)]
    table, code = [], 0
    for length in range(1, 17):
        for symbol, bits_of in enumerate(lengths):
            if bits_of == length:
                prefix = code >> (16 - length)
                rev = int(f"{prefix:0{length}b}"[::-1], 2)
                table.append(((1 << length) - 1, rev, length, symbol))
                code += 1 << (16 - length)
    return table


def _value(bits: _Bits, table) -> int:
    word = bits.low
    for mask, code, length, symbol in table:
        if word & mask == code:
            bits.take(length)
            if symbol >= 2:
                return bits.take(symbol - 1) | (1 << (symbol - 1))
            return symbol
    raise ValueError("RNC: no Huffman code matches")


def rnc_unpack(data: bytes) -> bytes:
    """Unpack one ``RNC\\x01`` stream; ValueError for anything else or a checksum mismatch."""
    if data[:4] != b"RNC\x01":
        raise ValueError("not RNC method 1")
    size, packed, crc_out, crc_in = struct.unpack(">IIHH", data[4:16])
    blocks = data[17]
    body = data[18 : 18 + packed]
    if crc16(body) != crc_in:
        raise ValueError("RNC: packed CRC mismatch")
    bits = _Bits(data, 18)
    bits.take(2)
    out = bytearray()
    raw_t = pos_t = len_t = []
    for _ in range(blocks):
        raw_t, pos_t, len_t = _table(bits, raw_t), _table(bits, pos_t), _table(bits, len_t)
        counts = bits.take(16)
        while counts:
            n = _value(bits, raw_t)
            if n:
                out += bits.raw(n)
            if counts > 1:
                offset = _value(bits, pos_t) + 1
                length = _value(bits, len_t) + 2
                start = len(out) - offset
                if offset >= length:
                    out += out[start : start + length]
                else:
                    for i in range(length):
                        out.append(out[start + i])
            counts -= 1
    if len(out) != size or crc16(bytes(out)) != crc_out:
        raise ValueError("RNC: unpacked size/CRC mismatch")
    return bytes(out)
