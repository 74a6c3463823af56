from hypothesis import given
from hypothesis import strategies as st
from xxhash import xxh3_64_intdigest

from partitioning.keys import DEFAULT_PARTITION_COUNT, partition_of, partitions_of, routing_key


def test_xxh3_reference_value():
    # XXH3_64bits("") with seed 0, from the xxHash reference: if this moves,
    # every key of every cluster moves.
    assert xxh3_64_intdigest(b"") == 0x2D06800538D394C2


def test_known_partitions_are_stable():
    # Pinned: a change here means clients and members of different versions
    # would disagree about where keys live.
    assert DEFAULT_PARTITION_COUNT == 271
    known = {
        b"": 209,
        b"a": 192,
        b"user:42": 204,
        b"user:{42}:profile": 119,
        b"{}": 246,
        b"foo{bar}baz": 39,
        b"\xff\x00": 270,
    }
    assert {k: partition_of(k) for k in known} == known


def test_hash_tag_co_locates():
    assert routing_key(b"user:{42}:profile") == b"42"
    assert partition_of(b"user:{42}:profile") == partition_of(b"user:{42}:cart")
    assert partition_of(b"user:{42}:cart") == partition_of(b"42")


def test_only_first_tag_counts():
    assert routing_key(b"{a}{b}") == b"a"
    assert routing_key(b"x{a}y{b}") == b"a"
    assert routing_key(b"{{a}}") == b"{a"  # first '{', first '}' after it, as Redis


def test_empty_or_unclosed_tag_hashes_whole_key():
    for key in (b"{}", b"a{}b", b"{", b"a{b", b"}{", b"}a{"):
        assert routing_key(key) == key
    assert routing_key(b"{}{x}") == b"{}{x}"  # Redis: an empty first tag disables tagging


def test_no_tag_is_whole_key():
    assert routing_key(b"plain") == b"plain"
    assert partition_of(b"plain") == xxh3_64_intdigest(b"plain") % 271


@given(st.binary(max_size=64), st.integers(1, 10_000))
def test_partition_in_range_and_matches_definition(key, partitions):
    p = partition_of(key, partitions)
    assert 0 <= p < partitions
    assert p == xxh3_64_intdigest(routing_key(key)) % partitions


@given(
    st.binary(max_size=16).filter(lambda b: b"{" not in b and b"}" not in b and b),
    st.binary(max_size=16).filter(lambda b: b"{" not in b),
    st.binary(max_size=16),
)
def test_same_tag_same_partition(tag, prefix, suffix):
    key = prefix + b"{" + tag + b"}" + suffix
    assert routing_key(key) == tag
    assert partition_of(key) == partition_of(tag)


BRACED = st.sampled_from([b"{", b"}", b"a{b}c", b"{}", b"x{y"])


@given(st.lists(st.binary(max_size=24) | BRACED), st.integers(1, 10_000))
def test_partitions_of_is_partition_of_each(keys, partitions):
    assert partitions_of(keys, partitions) == [partition_of(k, partitions) for k in keys]
