"""Ops the client encodes itself (grid/client/wireops.py) against protobuf's own bytes.

The member parses what the client writes with protobuf, so "the same message" is not
enough: the bytes must be the ones protobuf would produce for the same fields, in
every case hypothesis can think of (empty and long keys and values, map names in any
script, negative ttls and deltas that take ten-byte varints, every opcode).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from grid.client.wireops import OpWriter, WireOp, entry, ops_bytes, varint
from proto import grid_pb2 as pb

INT64 = st.integers(-(1 << 63), (1 << 63) - 1)
codes = st.sampled_from(sorted(pb.OpCode.values()))
map_names = st.text(max_size=40)
data = st.binary(max_size=300)


def batch_of(ops: list[pb.Op]) -> bytes:
    return pb.BatchRequest(ops=ops).SerializeToString()


@given(INT64)
def test_varint_is_protobufs(n: int) -> None:
    # an int64 field (delta, field 10) holding n: its tag, then n's varint
    assert (b"\x50" + varint(n) if n else b"") == pb.Op(delta=n).SerializeToString()


@given(st.integers(0, (1 << 64) - 1))
def test_uint64_varint_is_protobufs(n: int) -> None:
    # a uint64 field (expected_ts, field 8)
    assert (b"\x40" + varint(n) if n else b"") == pb.Op(expected_ts=n).SerializeToString()


@given(map_names, codes, data)
def test_keyed_matches_protobuf(name: str, code: int, key: bytes) -> None:
    op = OpWriter(name).keyed(code, key)
    expected = pb.Op(code=code, map=name, key=key)
    assert op.SerializeToString() == expected.SerializeToString()
    assert op.ByteSize() == expected.ByteSize()
    assert (op.code, op.key, op.value) == (code, key, b"")


@given(map_names, data, data)
def test_put_matches_protobuf(name: str, key: bytes, value: bytes) -> None:
    op = OpWriter(name).put(key, value)
    assert op.SerializeToString() == pb.Op(code=pb.PUT, map=name, key=key,
                                           value=value).SerializeToString()  # fmt: skip
    assert (op.code, op.key, op.value) == (pb.PUT, key, value)


@given(
    map_names,
    codes,
    data,
    data,
    INT64,
    INT64,
    st.sampled_from(sorted(pb.Condition.values())),
    st.integers(0, (1 << 64) - 1),
    st.integers(0, (1 << 32) - 1),
    INT64,
)
def test_every_field_matches_protobuf(
    name: str,
    code: int,
    key: bytes,
    value: bytes,
    ttl_ms: int,
    max_idle_ms: int,
    condition: int,
    expected_ts: int,
    expected_member: int,
    delta: int,
) -> None:
    fields = dict(
        value=value, ttl_ms=ttl_ms, max_idle_ms=max_idle_ms, condition=condition,
        expected_ts=expected_ts, expected_member=expected_member, delta=delta,
    )  # fmt: skip
    op = OpWriter(name).op(code, key, **fields)
    expected = pb.Op(code=code, map=name, key=key, **fields)
    assert op.SerializeToString() == expected.SerializeToString()
    assert pb.Op.FromString(op.SerializeToString()) == expected


@given(st.lists(st.tuples(st.booleans(), map_names, codes, data, data), max_size=20))
def test_a_batch_of_both_kinds_is_protobufs(
    spec: list[tuple[bool, str, int, bytes, bytes]],
) -> None:
    ops: list[pb.Op | WireOp] = []
    messages: list[pb.Op] = []
    for wire, name, code, key, value in spec:
        message = pb.Op(code=code, map=name, key=key, value=value)
        messages.append(message)
        ops.append(OpWriter(name).op(code, key, value) if wire else message)
    assert ops_bytes(ops) == batch_of(messages)
    assert b"".join(entry(m) for m in messages) == batch_of(messages)


@given(map_names, codes, st.lists(data | st.binary(min_size=100, max_size=200), max_size=10))
def test_keyed_many_is_keyed_each(name: str, code: int, keys: list[bytes]) -> None:
    writer = OpWriter(name)
    assert writer.keyed_many(code, keys) == [writer.keyed(code, k) for k in keys]


@given(map_names, st.lists(st.tuples(data, data | st.binary(min_size=120, max_size=20_000))))
def test_put_many_is_put_each(name: str, pairs: list[tuple[bytes, bytes]]) -> None:
    writer = OpWriter(name)
    assert writer.put_many(pairs) == [writer.put(k, v) for k, v in pairs]
