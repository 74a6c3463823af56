"""Tombstones, snapshots and digests of partition copies, and the merge that anti-entropy
runs: two copies that took different writes end up identical, whatever the order."""

from __future__ import annotations

from random import Random

from hypothesis import given, settings
from hypothesis import strategies as st

from grid.config import Config
from grid.store import Store
from grid.store.copies import (
    collect_tombstones,
    digest,
    records_in,
    snapshot_records,
    tombstone_count,
)
from grid.store.store import CLEAR, DELETE, PUT
from partitioning import partition_of
from replication.digest import BUCKETS, differing, unpack_buckets
from tests.store.helpers import T0, Clock

P = 7  # few partitions, so random keys collide in one often
EVERYTHING = (1 << 63) - 1  # a cut above every version


def store(member: int, clock: Clock, grace_s: float = 3600.0) -> Store:
    config = Config(partitions=P, tombstone_grace_s=grace_s)
    return Store(config, member_id=member, clock=clock, rng=Random(member))


def state(s: Store, p: int) -> dict[tuple[str, bytes], tuple[bytes | None, int, int]]:
    """A copy as (map, key) -> (value or None for a tombstone, ts, member)."""
    out: dict[tuple[str, bytes], tuple[bytes | None, int, int]] = {}
    for r in snapshot_records(s, p, s.clock()):
        op, name, key, value, ts, member = r[:6]
        if op != CLEAR:
            out[(name, key)] = (value, ts, member)
    return out


def merge(a: Store, b: Store, p: int) -> int:
    """One anti-entropy exchange of partition p between a and b, as
    grid/member/replicas/antientropy.py runs it: roots, bucket digests, then the records of
    differing buckets both ways."""
    now = a.clock()
    da, db = digest(a, p, EVERYTHING, now), digest(b, p, EVERYTHING, now)
    if da.root == db.root:
        return 0
    buckets = differing(da.buckets, unpack_buckets(db.pack()))
    mine = records_in(a, p, buckets, EVERYTHING, now)
    theirs = records_in(b, p, buckets, EVERYTHING, now)
    won = sum(b.apply(p, *r, now) for r in mine)
    return won + sum(a.apply(p, *r, now) for r in theirs)


def test_a_delete_is_remembered_and_beats_an_older_put_from_a_replica() -> None:
    clock = Clock()
    s = store(1, clock)
    m = s.map("m")
    s.put(m, b"k", b"v1", clock())
    old = s.map("m").parts[partition_of(b"k", P)][b"k"]
    old_version = (old.ts, old.member)
    clock.advance(5)
    assert s.delete(m, b"k", clock())
    p = partition_of(b"k", P)
    assert b"k" in m.tombs[p] and tombstone_count(s) == 1
    # the old put arriving late from a replica that missed the delete loses
    assert not s.apply(p, PUT, "m", b"k", b"v1", *old_version, 0, 0, clock())
    assert s.get(m, b"k", clock()) is None
    # a newer write brings the key back and forgets the tombstone
    clock.advance(5)
    s.put(m, b"k", b"v2", clock())
    assert b"k" not in m.tombs[p]


def test_a_replicated_delete_of_an_absent_key_still_leaves_a_tombstone() -> None:
    clock = Clock()
    s = store(1, clock)
    p = partition_of(b"k", P)
    ts = clock() << 16
    assert s.apply(p, DELETE, "m", b"k", None, ts, 2, 0, 0, clock())
    assert s.map("m").tombs[p][b"k"] == (ts, 2)
    assert not s.apply(p, PUT, "m", b"k", b"old", ts - 1, 9, 0, 0, clock())


def test_tombstones_are_forgotten_after_the_grace_period() -> None:
    clock = Clock()
    s = store(1, clock, grace_s=10)
    m = s.map("m")
    p = partition_of(b"k", P)
    s.put(m, b"k", b"v", clock())
    s.delete(m, b"k", clock())
    assert collect_tombstones(s, p, clock()) == 0
    clock.advance(10_001)
    assert collect_tombstones(s, p, clock()) == 1 and not m.tombs[p]
    # and a delete older than the grace period is not remembered when it arrives late
    assert not s.apply(p, DELETE, "m", b"j", None, (clock() - 20_000) << 16, 2, 0, 0, clock())
    assert not m.tombs[p]


def test_a_snapshot_merges_into_a_copy_instead_of_replacing_it() -> None:
    """What a follower filled from a snapshot keeps: its own newer writes (the other side
    of a split), and loses: older values and keys the primary deleted."""
    clock = Clock()
    primary, follower = store(1, clock), store(2, clock)
    pm, fm = primary.map("m"), follower.map("m")
    keys = [f"k{i}".encode() for i in range(40)]
    for k in keys:
        follower.put(fm, k, b"stale", clock())
    clock.advance(1)
    for k in keys[:20]:
        primary.put(pm, k, b"fresh", clock())
    for k in keys[20:30]:
        primary.put(pm, k, b"x", clock())
        primary.delete(pm, k, clock())
    clock.advance(1)
    for k in keys[30:]:
        follower.put(fm, k, b"follower-newer", clock())
    for p in range(P):
        for r in snapshot_records(primary, p, clock()):
            follower.apply(p, *r, clock())
    got = {k: e.value for k in keys if (e := follower.get(fm, k, clock())) is not None}
    assert got == {k: b"fresh" for k in keys[:20]} | {k: b"follower-newer" for k in keys[30:]}


def test_a_clear_travels_as_a_marker_and_removes_older_entries_wherever_they_are() -> None:
    clock = Clock()
    a, b = store(1, clock), store(2, clock)
    for s in (a, b):
        for i in range(30):
            s.put(s.map("m"), f"k{i}".encode(), b"old", clock())
    clock.advance(1)
    a.clear(a.map("m"))
    clock.advance(1)
    b.put(b.map("m"), b"k1", b"after-clear", clock())
    for p in range(P):
        merge(a, b, p)
    for s in (a, b):
        live = {k for part in s.map("m").parts for k in part}
        assert live == {b"k1"}
    assert all(state(a, p) == state(b, p) for p in range(P))


ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "delete", "incr", "clear"]),
        st.integers(0, 1),  # which store
        st.integers(0, 8),  # key (few, so both sides write the same ones)
        st.integers(0, 3),  # ms to let pass
    ),
    max_size=80,
)


@settings(max_examples=100, deadline=None)
@given(ops)
def test_two_copies_that_took_different_writes_converge_in_one_exchange(history) -> None:
    """Two members write independently (a split), then exchange per partition: both end
    with identical digests and the same state, which holds every key's last writer."""
    clock = Clock(T0)
    stores = [store(1, clock), store(2, clock)]
    for op, who, k, wait in history:
        s = stores[who]
        m = s.map("m")
        key = f"k{k}".encode()
        if op == "put":
            s.put(m, key, f"{who}:{clock()}".encode(), clock())
        elif op == "delete":
            s.delete(m, key, clock())
        elif op == "incr":
            s.incr(m, key, 1, 0, clock()) if _is_counter(s, m, key) else None
        else:
            s.clear(m)
        clock.advance(wait)
    a, b = stores
    expected = {p: _lww(state(a, p), state(b, p)) for p in range(P)}
    for p in range(P):
        merge(a, b, p)
        assert digest(a, p, EVERYTHING, clock()).root == digest(b, p, EVERYTHING, clock()).root
        assert state(a, p) == state(b, p)
        # every key holds its last writer (unless a newer clear removed it)
        assert {k: v for k, v in state(a, p).items() if v[0] is not None} == {
            k: v for k, v in expected[p].items() if v[0] is not None and _survives(a, p, v)
        }
        assert merge(a, b, p) == 0  # a second exchange finds nothing


def _is_counter(s: Store, m, key: bytes) -> bool:
    e = s.get(m, key, s.clock())
    return e is None or e.value[:1] not in (b"0", b"1")


def _lww(x: dict, y: dict) -> dict:
    out = dict(x)
    for k, v in y.items():
        if k not in out or (v[1], v[2]) > (out[k][1], out[k][2]):
            out[k] = v
    return out


def _survives(s: Store, p: int, v: tuple) -> bool:
    return (v[1], v[2]) > s.map("m").cleared[p]


def test_bucket_digests_have_a_fixed_size() -> None:
    clock = Clock()
    s = store(1, clock)
    d = digest(s, 0, EVERYTHING, clock())
    assert len(d.pack()) == 8 * BUCKETS and d.root == 0
    try:
        unpack_buckets(b"\0" * 7)
    except ValueError as e:
        assert "bytes" in str(e)
    else:
        raise AssertionError("a short bucket vector was accepted")


def test_replicated_overwrites_keep_memory_accounting_exact() -> None:
    """An overwrite applied in place (value size and TTL changing) leaves `used` equal to
    the sum of the entries' sizes, as a fresh insert of each would."""
    from grid.store.entry import entry_size

    clock = Clock()
    s = store(1, clock)
    rng = Random(3)
    ts = clock() << 16
    for _ in range(3000):
        key = f"k{rng.randrange(50)}".encode()
        ts += 1
        ttl = rng.choice([0, 0, clock() + 60_000])
        idle = rng.choice([0, 0, 30_000])
        value = b"v" * rng.randrange(0, 300)
        s.apply(partition_of(key, P), PUT, "m", key, value, ts, 2, ttl, idle, clock())
    entries = [e for part in s.map("m").parts for e in part.values()]
    assert s.used == sum(entry_size(e.key, e.value, e.vslot >= 0) for e in entries)
    assert s.map("m").stats.bytes == s.used
    assert len(s.volatile) == sum(1 for e in entries if e.expire_at or e.max_idle)
