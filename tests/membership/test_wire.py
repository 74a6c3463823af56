"""The codec round-trips every message, and its decoder only ever raises
MalformedMessage, whatever the input."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from membership.state import MemberInfo, MemberMeta, MemberState
from membership.wire import (
    Ack,
    Alive,
    Dead,
    MalformedMessage,
    Nack,
    Packet,
    Ping,
    PingReq,
    PushPull,
    Refuse,
    Suspect,
    assemble,
    decode_packet,
    encode_gossip,
    encode_message,
    encode_packet,
)

META = MemberMeta("c", 271, "10.0.0.1:5000", "z1", "1.2.3")
MESSAGES = [
    Ping(7, "b", "10.0.0.1:7946"),
    PingReq(8, "c", "10.0.0.3:7946", "10.0.0.1:7946", True),
    Ack(2**32 - 1),
    Nack(0),
    PushPull(
        "a", "10.0.0.1:7946", True, False, [MemberInfo("a", "x:1", META, 3, MemberState.SUSPECT)]
    ),
    Refuse("a", "cluster name differs"),
    None,
]
GOSSIP = [Alive("a", "x:1", 5, META), Suspect("b", 1, "a"), Dead("c", 2, "c", True)]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(msg):
    data = encode_packet(msg, GOSSIP)
    assert decode_packet(data, 1400) == Packet(msg, GOSSIP)


def test_assemble_counts_bytes_exactly():
    body = encode_message(Ping(1, "b", "a"))
    items = [encode_gossip(g) for g in GOSSIP]
    data = assemble(body, items)
    assert len(data) <= 3 + len(body) + 1 + sum(map(len, items)) + 1
    assert decode_packet(data, len(data)).gossip == GOSSIP


def test_many_gossip_entries_use_a_long_array_header():
    items = [encode_gossip(Suspect(f"n{i}", i, "a")) for i in range(40)]
    pkt = decode_packet(assemble(None, items), 10_000)
    assert len(pkt.gossip) == 40 and pkt.msg is None


def test_oversize_is_refused_before_parsing():
    data = encode_packet(Ping(1, "b", "a"))
    with pytest.raises(MalformedMessage, match="exceeds"):
        decode_packet(data, len(data) - 1)


@pytest.mark.parametrize(
    "body",
    [
        [1, True, "b", "a"],  # bool is not a seq
        [1, -1, "b", "a"],
        [1, 2**32, "b", "a"],
        [1, 1, "", "a"],  # empty name
        [1, 1, "b" * 129, "a"],
        [1, 1, "b"],  # short
        [3, 1, 2],  # long
        [99, 1],
        [1.0, 1, "b", "a"],
        "ping",
    ],
)
def test_bad_shapes_are_malformed(body):
    data = msgpack.packb([1, body, []])
    with pytest.raises(MalformedMessage):
        decode_packet(data, 1400)


@pytest.mark.parametrize(
    "top",
    [[2, None, []], [1, None], [1, None, {}], [1, None, [[16, "a", "b", 1, ["c", 0, "", "", ""]]]]],
)
def test_bad_framing_and_meta(top):
    with pytest.raises(MalformedMessage):
        decode_packet(msgpack.packb(top), 1400)


def test_non_bytes_input():
    with pytest.raises(MalformedMessage):
        decode_packet("text", 1400)  # type: ignore[arg-type]


def _decode_only_malformed(data: bytes) -> None:
    try:
        pkt = decode_packet(data, 1400)
    except MalformedMessage:
        return
    assert isinstance(pkt, Packet)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=1600))
def test_fuzz_random_bytes(data):
    _decode_only_malformed(data)


_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.sampled_from([1, 2, 3, 4, 5, 6, 16, 17, 18, 271])
)
_tree = st.recursive(
    _leaf,
    lambda children: (
        st.lists(children, max_size=7) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=40,
)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(_tree)
def test_fuzz_random_msgpack_structures(obj):
    _decode_only_malformed(msgpack.packb(obj))


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(MESSAGES[:-1]), st.lists(_tree, max_size=3), st.data())
def test_fuzz_mutated_valid_packets(msg, gossip, data):
    """Valid framing with hostile contents: swap one field for junk."""
    body = msgpack.unpackb(encode_message(msg))
    i = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    body[i] = data.draw(_tree)
    top = [1, body, [msgpack.unpackb(encode_gossip(g)) for g in GOSSIP] + gossip]
    _decode_only_malformed(msgpack.packb(top))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(min_value=0, max_value=199))
def test_fuzz_truncated_and_corrupted(noise, cut):
    data = encode_packet(Ping(1, "b", "a"), GOSSIP)
    _decode_only_malformed(data[: cut % len(data)])
    pos = cut % len(data)
    _decode_only_malformed(data[:pos] + noise + data[pos + 1 :])


def test_deeply_nested_input_is_malformed():
    data = b"\x91" * 5000 + b"\xc0"
    with pytest.raises(MalformedMessage):
        decode_packet(data, 10_000)


def test_meta_cache_does_not_admit_lookalike_types():
    good = [16, "a", "x:1", 1, ["c", 271, "", "", ""]]
    assert decode_packet(msgpack.packb([1, None, [good]]), 1400).gossip[0].meta.partitions == 271
    for bad_partitions in (271.0, True):
        bad = [16, "a", "x:1", 1, ["c", bad_partitions, "", "", ""]]
        with pytest.raises(MalformedMessage):
            decode_packet(msgpack.packb([1, None, [bad]]), 1400)
