"""Frames and the data-plane address rule: pure functions, tested without sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grid.wire import frames
from grid.wire.endpoints import data_plane_address, data_plane_target, split_address

LIMIT = 1 << 16

FRAMES = st.lists(
    st.tuples(
        st.sampled_from(sorted(frames.KINDS)),
        st.integers(0, frames.ID_MASK),
        st.binary(max_size=300),
    ),
    max_size=20,
)


@given(FRAMES, st.data())
def test_any_split_of_a_stream_gives_back_the_frames_in_order(
    sent: list[tuple[int, int, bytes]], data: st.DataObject
) -> None:
    """TCP delivers a stream in pieces of any size: the reader must not care where they fall."""
    stream = b"".join(frames.frame(k, i, b) for k, i, b in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=30)))
    reader = frames.FrameReader(LIMIT)
    got: list[tuple[int, int, bytes]] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got.extend(reader.feed(stream[a:b]))
    assert got == sent
    assert reader.partial == 0


def test_header_is_length_kind_id_big_endian() -> None:
    """The layout docs/api.md promises, byte for byte."""
    assert (
        frames.frame(frames.BATCH, 0x01020304, b"xy")
        == bytes.fromhex("00000007 03 01020304") + b"xy"
    )
    assert frames.header(frames.HELLO, 7, 2) + b"ab" == frames.frame(frames.HELLO, 7, b"ab")


def test_a_frame_over_the_limit_is_refused_once_its_header_is_in() -> None:
    """Before its body is buffered: a peer cannot make the reader hold more than the limit."""
    reader = frames.FrameReader(100)
    head = frames.header(frames.BATCH, 1, 200)
    assert reader.feed(head[:4]) == []
    with pytest.raises(frames.FrameError, match="over the limit of 100"):
        reader.feed(head[4:])
    assert reader.partial == 0


def test_a_frame_exactly_at_the_limit_is_accepted() -> None:
    body = b"z" * (100 - frames.MIN_LENGTH)
    assert frames.FrameReader(100).feed(frames.frame(frames.BATCH, 9, body)) == [
        (frames.BATCH, 9, body)
    ]


@pytest.mark.parametrize("length", [0, 1, 4])
def test_a_length_shorter_than_kind_and_id_is_refused(length: int) -> None:
    reader = frames.FrameReader(LIMIT)
    with pytest.raises(frames.FrameError, match="under the header"):
        reader.feed(length.to_bytes(4, "big") + b"\x03\x00\x00\x00\x01")


def test_partial_counts_the_bytes_of_an_unfinished_frame() -> None:
    reader = frames.FrameReader(LIMIT)
    whole = frames.frame(frames.BATCH, 1, b"abcdef")
    assert reader.feed(whole + whole[:11]) == [(frames.BATCH, 1, b"abcdef")]
    assert reader.partial == 11
    assert reader.feed(whole[11:]) == [(frames.BATCH, 1, b"abcdef")]
    assert reader.partial == 0


def test_ids_wrap_to_32_bits() -> None:
    assert frames.FrameReader(LIMIT).feed(frames.frame(frames.BATCH, 1 << 32 | 5, b""))[0][1] == 5


def test_a_derived_data_address_keeps_the_host_the_client_dialled() -> None:
    """The member derived it from its cluster address, which the client may not reach
    (NAT, another namespace): only its port counts."""
    assert data_plane_target("10.214.0.2:5701", "10.213.0.10:7701", False) == ("10.214.0.2", 7701)
    assert data_plane_address("[::1]:5701", "[fd00::1]:7701", False) == "[::1]:7701"


def test_an_advertised_data_address_is_dialled_as_given() -> None:
    assert data_plane_target("10.214.0.2:5701", "grid-1.example:9000", True) == (
        "grid-1.example",
        9000,
    )


@pytest.mark.parametrize("bad", ["", "host", "host:", "host:port", ":x"])
def test_an_address_without_a_port_is_refused_by_name(bad: str) -> None:
    with pytest.raises(ValueError, match="not a host:port"):
        split_address(bad)
