"""The anti-entropy core (replication/antientropy.py) between two real stores, with no
network: one round from the primary leaves both copies equal, whatever each had that
the other lacked; a replica with no role refuses and keeps nothing; a hand-back gives
the primary what the copy has and takes nothing back."""

from __future__ import annotations

from collections.abc import Sequence
from random import Random

from hypothesis import given, settings
from hypothesis import strategies as st

from grid.config import Config
from grid.store import Store, copies
from grid.store.store import PUT
from replication.antientropy import Reconciler, Record, Refused
from replication.digest import Digest
from replication.map_backups import Holds, MapBackups
from tests.store.helpers import Clock

P = 2
CUT = (1 << 63) - 1


class Copies:
    def __init__(self, store: Store) -> None:
        self.store = store

    def digest(self, p: int, cut: int, holds: Holds) -> Digest:
        return copies.digest(self.store, p, cut, self.store.clock(), holds)

    def records(self, p: int, buckets: Sequence[int], cut: int, holds: Holds) -> list[Record]:
        return copies.records_in(self.store, p, buckets, cut, self.store.clock(), holds)

    def merge(self, p: int, records: Sequence[Record]) -> int:
        now = self.store.clock()
        return sum(bool(self.store.apply(p, *r, now)) for r in records)


def member(name: str, mid: int, clock: Clock, role: bool = True) -> tuple[Reconciler, Store]:
    store = Store(Config(partitions=5), member_id=mid, clock=clock, rng=Random(mid))
    core = Reconciler(name, 5, MapBackups(1, {}, 1), Copies(store), lambda p: role)
    return core, store


def write(store: Store, clock: Clock, keys: list[int], tag: bytes) -> None:
    for k in keys:
        clock.advance(1)
        v = store.hlc.tick()
        store.apply(P, PUT, "m", f"k{k}".encode(), tag, v.ts, v.member, 0, 0, clock())


def round_trip(primary: Reconciler, replica: Reconciler, keep_theirs: bool = True) -> int:
    """What grid/member/replicas/antientropy.py does over gRPC, done in process."""
    mine = primary.digests([P], CUT, 1, None)
    answer = replica.on_compare(CUT, 1, [(p, d.root) for p, d in mine.items()])
    won = 0
    for p, buckets in primary.to_repair(mine, answer, keep_theirs):
        sent = primary.repair_records(p, buckets, CUT, 1)
        reply = replica.on_repair(p, buckets, CUT, 1, [tuple(r) for r in sent])
        won += primary.repaired_by(p, len(sent), reply, keep_theirs, None)
    return won


def root(core: Reconciler) -> int:
    return core.copies.digest(P, CUT, None).root  # type: ignore[attr-defined]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 60), max_size=40),
    st.lists(st.integers(0, 60), max_size=40),
)
def test_one_round_leaves_both_copies_equal(a_keys: list[int], b_keys: list[int]) -> None:
    clock = Clock()
    a, sa = member("a", 1, clock)
    b, sb = member("b", 2, clock)
    write(sa, clock, a_keys, b"a")
    write(sb, clock, b_keys, b"b")
    round_trip(a, b)
    assert root(a) == root(b)
    assert round_trip(a, b) == 0  # nothing left to repair


def test_a_replica_without_a_role_refuses_and_keeps_nothing() -> None:
    clock = Clock()
    a, sa = member("a", 1, clock)
    b, sb = member("b", 2, clock, role=False)
    write(sa, clock, list(range(10)), b"a")
    assert round_trip(a, b) == 0
    assert not sb.holds_copy(P)
    try:
        round_trip(a, b, keep_theirs=False)
    except Refused:
        pass
    else:
        raise AssertionError("a hand-back to a member without a role must fail")


def test_a_hand_back_gives_and_takes_nothing_back() -> None:
    clock = Clock()
    holder, sh = member("h", 1, clock)
    primary, sp = member("p", 2, clock)
    write(sh, clock, [1, 2, 3], b"h")
    write(sp, clock, [4, 5], b"p")
    round_trip(holder, primary, keep_theirs=False)
    assert sp.partition_count(P) == 5  # it took the holder's three
    assert sh.partition_count(P) == 3  # the holder took nothing back
