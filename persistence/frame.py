"""Frame codec: how records are laid out in segment and snapshot files.

A file is an 8-byte magic followed by frames.  A frame is

    +------------+-------------+------------+---------------------------+
    | length u32 | payload crc | header crc |  payload (length bytes)   |
    +------------+-------------+------------+---------------------------+
       little-endian u32 each; crc = zlib.crc32 (CRC-32/ISO-HDLC, the zip/PNG
       polynomial), header crc covers the first 8 header bytes

and the payload is a msgpack array of one or more records (see record.py).  One append
batch becomes one frame (split only if it exceeds max_frame_bytes), so a batch costs one
CRC, one header and one C-level msgpack call no matter how many records it carries, and
recovery pays the per-frame Python overhead once per batch instead of once per record.

Why a header CRC as well as a payload CRC: a torn tail (the process or machine died in
the middle of a write) looks like a frame whose length runs past the end of the file.
A bit flip in a length field looks the same, and without a separate check we would
silently treat everything after it as torn garbage.  With it we can tell "incomplete
write at the very end" (torn: truncate quietly) from "damage in the middle" (corrupt:
keep the bytes aside for the operator).

Why zlib.crc32 and not CRC32C: it is implemented in C in the standard library (and
hardware-accelerated on modern zlib builds), while CRC32C would need a third-party
module; for detecting torn writes and bit rot the two are equally good.

Decoding is bounded: a header announcing more than max_frame_bytes is rejected before
anything is allocated, msgpack's own length limits default to the payload size, and
every record's shape is checked by the consumer.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence

import msgpack

from persistence.errors import InvalidRecord

SEGMENT_MAGIC = b"GRIDLOG1"
SNAPSHOT_MAGIC = b"GRIDSNP1"
JOURNAL_MAGIC = b"GRIDJNL1"
MAGIC_LEN = 8

_HEADER = struct.Struct("<III")
_LENCRC = struct.Struct("<II")
HEADER_LEN = _HEADER.size

_crc32 = zlib.crc32


def encode_payload(payload: bytes) -> bytes:
    """Frame an already-packed payload."""
    n = len(payload)
    pcrc = _crc32(payload)
    return _HEADER.pack(n, pcrc, _crc32(_LENCRC.pack(n, pcrc))) + payload


def frame_header(payload: bytes) -> bytes:
    """The header that frames `payload` (for writing the two without joining them)."""
    n = len(payload)
    pcrc = _crc32(payload)
    return _HEADER.pack(n, pcrc, _crc32(_LENCRC.pack(n, pcrc)))


def encode_frames(records: Sequence[Sequence[object]], max_frame_bytes: int) -> bytes:
    """Pack `records` into as few frames as fit max_frame_bytes (usually one)."""
    payload = msgpack.packb(records, use_bin_type=True)
    if len(payload) + HEADER_LEN <= max_frame_bytes:  # (the log's hot path: no list)
        return encode_payload(payload)
    return b"".join(encode_payload(p) for p in pack_payloads(records, max_frame_bytes))


def pack_payloads(records: Sequence[Sequence[object]], max_frame_bytes: int) -> list[bytes]:
    """The msgpack payloads of `records`' frames, not framed yet (usually one)."""
    payload = msgpack.packb(records, use_bin_type=True)
    if len(payload) + HEADER_LEN <= max_frame_bytes:
        return [payload]
    if len(records) == 1:
        raise InvalidRecord(
            f"one record packs to {len(payload)} bytes, more than max_frame_bytes {max_frame_bytes}"
        )
    mid = len(records) // 2
    return pack_payloads(records[:mid], max_frame_bytes) + pack_payloads(
        records[mid:], max_frame_bytes
    )


class FrameScan:
    """Iterate the frames of a buffer; afterwards say where and why it stopped.

    Iteration yields each good payload as a memoryview.  When it ends, `offset` is the
    end of the last good frame (where a repair truncates to), `error` is None at a clean
    end or a human-readable reason, and `torn` tells whether the damage is an incomplete
    write at the very end of the buffer (expected after a crash) rather than damage with
    data after it (corruption).  A consumer that rejects a payload (bad msgpack, bad
    record shape) calls reject() so the same bookkeeping applies.
    """

    __slots__ = ("_buf", "_frame_start", "end", "error", "max_frame_bytes", "offset", "torn")

    def __init__(self, buf: bytes, start: int, max_frame_bytes: int) -> None:
        self._buf = buf
        self.offset = start
        self._frame_start = start
        self.end = len(buf)
        self.max_frame_bytes = max_frame_bytes
        self.error: str | None = None
        self.torn = False

    def __iter__(self) -> Iterator[memoryview]:
        buf = self._buf
        mv = memoryview(buf)
        end = self.end
        off = self.offset
        unpack_from = _HEADER.unpack_from
        crc32 = _crc32
        max_len = self.max_frame_bytes - HEADER_LEN
        while off < end:
            if end - off < HEADER_LEN:
                self._stop(off, "incomplete frame header at end of file", torn=True)
                return
            length, pcrc, hcrc = unpack_from(buf, off)
            if crc32(mv[off : off + 8]) != hcrc:
                self._stop(off, "frame header checksum mismatch", torn=False)
                return
            if length == 0 or length > max_len:
                self._stop(off, f"frame length {length} out of bounds", torn=False)
                return
            start = off + HEADER_LEN
            stop = start + length
            if stop > end:
                self._stop(off, "incomplete frame at end of file", torn=True)
                return
            payload = mv[start:stop]
            if crc32(payload) != pcrc:
                # A mismatch on the very last frame is what a torn write of the payload
                # pages looks like after a power cut; anything after it means damage.
                self._stop(off, "frame payload checksum mismatch", torn=stop == end)
                return
            self._frame_start = off
            off = stop
            self.offset = off
            yield payload

    @property
    def frame_start(self) -> int:
        """Offset of the frame last yielded (its position in the file)."""
        return self._frame_start

    def reject(self, reason: str) -> None:
        """The consumer found the last yielded payload invalid: stop before that frame."""
        start = self._frame_start
        self.offset = start
        self.error = f"offset {start}: {reason}"
        self.torn = False

    def _stop(self, off: int, reason: str, torn: bool) -> None:
        self.offset = off
        self.error = f"offset {off}: {reason}"
        self.torn = torn
