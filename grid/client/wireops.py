"""Keyed operations written straight to their protobuf bytes, without a `pb.Op`.

Why (issue 12, docs/benchmarks.md "Client CPU per call"): building a `pb.Op` with
keyword arguments and serializing it cost the client about 1.5 µs a key, a third of
its CPU for a bulk put. An `Op` on the wire is a few tagged fields, and a repeated
message field of a `BatchRequest` is each element's tag, length and bytes one after
another, so the client can write them itself:

    Op        := [08 code] [12 len map] [1a len key] [22 len value] [28 ttl_ms] ...
    ops entry := 12 len Op                      (BatchRequest field 2)

Fields come in field-number order and a field at its default (0, "") is left out,
as protobuf's own encoder does: the bytes are identical to
`pb.Op(...).SerializeToString()` (tests/client/test_wireops.py checks that against
protobuf itself). A `WireOp` keeps the few fields the client's layers read (`code`,
`key`, `value` for routing, the near cache and splitting) next to its encoding, and
answers `SerializeToString` and `ByteSize` as a `pb.Op` does, so every layer takes
either kind of operation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from proto import grid_pb2 as pb

_SMALL = tuple(bytes((i,)) for i in range(128))
"""The one-byte varints: nearly every length and code the client writes."""
_UINT64 = (1 << 64) - 1

OPS_TAG = b"\x12"
"""BatchRequest field 2 (ops), wire type 2 (length-delimited)."""


def varint(n: int) -> bytes:
    """Protobuf's base-128 varint; a negative int64 as its 64-bit two's complement (ten
    bytes), as protobuf writes it."""
    if 0 <= n < 128:
        return _SMALL[n]
    n &= _UINT64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _skip_varint(data: bytes, pos: int) -> int:
    while data[pos] & 0x80:
        pos += 1
    return pos + 1


def _entry(body: bytes) -> bytes:
    """An encoded Op as an element of BatchRequest.ops: tag, length, message."""
    n = len(body)
    return b"".join((OPS_TAG, _SMALL[n] if n < 128 else varint(n), body))


class WireOp(NamedTuple):
    """One encoded `Op`: what routing reads of it, and its bytes as a BatchRequest entry.
    A NamedTuple because a batch builds thousands: `_new` makes one without a Python
    call, and its fields read as fast as slots."""

    code: int
    key: bytes
    value: bytes
    entry: bytes
    """`12 len Op`: the bytes this op adds to a serialized BatchRequest."""

    cursor = b""
    """Keyed ops carry no SCAN cursor (routing asks only SCANs for it)."""

    def SerializeToString(self) -> bytes:
        """The Op message alone, as `pb.Op.SerializeToString` gives it."""
        return self.entry[_skip_varint(self.entry, 1) :]

    def ByteSize(self) -> int:
        return len(self.entry) - _skip_varint(self.entry, 1)

    def __repr__(self) -> str:
        return f"WireOp({pb.Op.FromString(self.SerializeToString())!r})"


AnyOp = pb.Op | WireOp
"""What the client's layers pass along: a `pb.Op` or one already encoded."""

_new = tuple.__new__
"""`_new(WireOp, (code, key, value, entry))`: a WireOp without NamedTuple's __new__ frame."""


class OpWriter:
    """Encodes one map's keyed operations; the map name's bytes are written once here."""

    __slots__ = ("_heads",)

    def __init__(self, map_name: str) -> None:
        encoded = map_name.encode()
        field = b"\x12" + varint(len(encoded)) + encoded if encoded else b""  # map, field 2
        # code (field 1, tag 08) and map open every op: one head per opcode; then come
        # key (tag 1a) and value (tag 22), length-delimited
        self._heads = tuple(
            (b"\x08" + varint(code) if code else b"") + field
            for code in range(max(pb.OpCode.values()) + 1)
        )

    def keyed(self, code: int, key: bytes) -> WireOp:
        """GET, DELETE, CONTAINS, TTL, TOUCH: code, map and key only."""
        n = len(key)
        if 0 < n < 128:  # one join for the common case: a join copies once, a + chain per +
            body = b"".join((self._heads[code], b"\x1a", _SMALL[n], key))
        else:
            body = self._heads[code] + (b"\x1a" + varint(n) + key if key else b"")
        return _new(WireOp, (code, key, b"", _entry(body)))

    def put(self, key: bytes, value: bytes) -> WireOp:
        """A plain PUT (no ttl, no max idle, unconditional): the bulk load's op."""
        nk, nv = len(key), len(value)
        if 0 < nk < 128 and 0 < nv < 128:
            body = b"".join((self._heads[2], b"\x1a", _SMALL[nk], key, b"\x22", _SMALL[nv], value))
        else:
            body = (
                self._heads[2]
                + (b"\x1a" + varint(nk) + key if key else b"")
                + (b"\x22" + varint(nv) + value if value else b"")
            )
        return _new(WireOp, (2, key, value, _entry(body)))

    def keyed_many(self, code: int, keys: Sequence[bytes]) -> list[WireOp]:
        """`keyed(code, k)` for each key, in one loop (get_many, delete_many)."""
        head = self._heads[code] + b"\x1a"
        fixed = len(head) + 1  # the head and the key's one-byte length
        small = _SMALL
        join = b"".join
        ops = []
        for key in keys:
            n = len(key)
            if n and fixed + n < 128:
                entry = join((b"\x12", small[fixed + n], head, small[n], key))
                ops.append(_new(WireOp, (code, key, b"", entry)))
            else:
                ops.append(self.keyed(code, key))
        return ops

    def put_many(self, pairs: Iterable[tuple[bytes, bytes]]) -> list[WireOp]:
        """`put(k, v)` for each pair, in one loop: the bulk load's ops."""
        head = self._heads[2] + b"\x1a"
        fixed = len(head) + 2  # the head, the key's length, the value's tag
        small = _SMALL
        join = b"".join
        ops = []
        for key, value in pairs:
            nk, nv = len(key), len(value)
            n = fixed + nk + 1 + nv
            if 0 < nk < 128 and 0 < nv < 128 and n < 16384:
                length = small[n] if n < 128 else bytes(((n & 0x7F) | 0x80, n >> 7))
                entry = join((b"\x12", length, head, small[nk], key, b"\x22", small[nv], value))
                ops.append(_new(WireOp, (2, key, value, entry)))
            else:
                ops.append(self.put(key, value))
        return ops

    def op(
        self,
        code: int,
        key: bytes,
        value: bytes = b"",
        ttl_ms: int = 0,
        max_idle_ms: int = 0,
        condition: int = 0,
        expected_ts: int = 0,
        expected_member: int = 0,
        delta: int = 0,
    ) -> WireOp:
        """Any keyed op, fields 1 to 10 (SCAN's cursor and limit, `decimal` and
        `expire_at_ms` are not the SDK maps' and stay `pb.Op`'s)."""
        parts = [self._heads[code]]
        if key:
            parts += (b"\x1a", varint(len(key)), key)
        if value:
            parts += (b"\x22", varint(len(value)), value)
        # the rest are varints: the tag is field number << 3 (wire type 0)
        if ttl_ms:
            parts += (b"\x28", varint(ttl_ms))  # field 5
        if max_idle_ms:
            parts += (b"\x30", varint(max_idle_ms))  # field 6
        if condition:
            parts += (b"\x38", varint(condition))  # field 7
        if expected_ts:
            parts += (b"\x40", varint(expected_ts))  # field 8
        if expected_member:
            parts += (b"\x48", varint(expected_member))  # field 9
        if delta:
            parts += (b"\x50", varint(delta))  # field 10
        return _new(WireOp, (code, key, value, _entry(b"".join(parts))))


def entry(op: AnyOp) -> bytes:
    """An op's bytes as an element of BatchRequest.ops (tag, length, message)."""
    if op.__class__ is WireOp:
        return op.entry  # type: ignore[union-attr]
    return _entry(op.SerializeToString())


def ops_bytes(ops: Iterable[AnyOp]) -> bytes:
    """The serialized `BatchRequest(ops=ops)`: the entries one after another."""
    return b"".join([entry(op) for op in ops])
