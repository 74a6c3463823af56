"""Store.apply decides as replication/lww.py does (it writes the hot comparisons out
inline, so this is what keeps the two from drifting), and the merge is order-free: any
order of arrival, and any number of repeats, of the same writes, deletes and clears
leaves one state, the newest record of each key."""

from __future__ import annotations

from random import Random

from hypothesis import given, settings
from hypothesis import strategies as st

from grid.store import Store
from grid.store.store import CLEAR, DELETE, EVICTED, EXPIRED, PUT
from replication.lww import ZERO, clear_wins, cleared_by, removes, write_wins
from tests.store.helpers import T0, Clock, make_store

P = 0  # the only partition (the store is made with partitions=1)
KEYS = [b"a", b"b", b"c"]
Record = tuple[int, bytes, int, int]  # op, key, ts, member
State = tuple[dict, dict, tuple[int, int]]


def value_of(ts: int) -> bytes:
    """Each write's own value (its version is unique), so a wrong winner shows."""
    return b"%d" % ts


def applied(order: list[Record]) -> tuple[State, list[bool]]:
    """A fresh store's state after `order`, and what each apply answered."""
    s = make_store(Clock(T0), partitions=1)
    answers = []
    for op, key, ts, member in order:
        value = value_of(ts) if op == PUT else None
        answers.append(s.apply(P, op, "m", key, value, ts, member, 0, 0, T0))
    return state(s), answers


def state(s: Store) -> State:
    """(key -> (value, version) of live entries, key -> tombstone version, clear marker)."""
    rmap = s.map("m")
    live = {k: (e.value, (e.ts, e.member)) for k, e in rmap.parts[P].items()}
    return live, dict(rmap.tombs[P]), rmap.cleared[P]


def lww_fold(order: list[Record]) -> tuple[State, list[bool]]:
    """The same records merged by replication/lww.py's functions on plain dicts."""
    live: dict = {}
    tombs: dict = {}
    marker = ZERO
    answers = []
    for op, key, ts, member in order:
        v = (ts, member)
        won = False
        if op == CLEAR:
            if won := clear_wins(v, marker):
                marker = v
                live = {k: e for k, e in live.items() if not cleared_by(e[1], v)}
                tombs = {k: t for k, t in tombs.items() if not cleared_by(t, v)}
        elif op == PUT:
            held = live[key][1] if key in live else tombs.get(key)
            if won := write_wins(v, held, marker):
                live[key] = (value_of(ts), v)
                tombs.pop(key, None)
        else:  # a removal
            if key in live:
                if not removes(v, live[key][1]):
                    answers.append(False)
                    continue
                del live[key]
                won = True
            if op == DELETE and write_wins(v, tombs.get(key), marker):
                tombs[key] = v
                won = True
        answers.append(won)
    return (live, tombs, marker), answers


def newest(records: list[Record]) -> State:
    """The newest record of each key among its writes, its deletes and every clear."""
    marker = max(((ts, m) for op, _, ts, m in records if op == CLEAR), default=ZERO)
    live: dict = {}
    tombs: dict = {}
    for key in KEYS:
        mine = [(ts, m, op) for op, k, ts, m in records if k == key and op != CLEAR]
        if not mine:
            continue
        ts, m, op = max(mine)
        if (ts, m) <= marker:
            continue  # the newest clear is later: the key is gone, no tombstone
        if op == PUT:
            live[key] = (value_of(ts), (ts, m))
        else:
            tombs[key] = (ts, m)
    return live, tombs, marker


def records(kinds: list[int]) -> st.SearchStrategy:
    n = len(kinds)
    return st.tuples(
        st.just(kinds),
        st.lists(st.sampled_from(KEYS), min_size=n, max_size=n),
        st.lists(st.integers(1, 1000), min_size=n, max_size=n, unique=True),
        st.lists(st.integers(1, 3), min_size=n, max_size=n),
        st.randoms(use_true_random=False),
    )


def made(drawn: tuple) -> tuple[list[Record], Random]:
    kinds, keys, stamps, members, rnd = drawn
    recs = [
        (op, b"" if op == CLEAR else key, (T0 << 16) + ts, member)
        for op, key, ts, member in zip(kinds, keys, stamps, members, strict=True)
    ]
    return recs, rnd


ORDERFREE = st.lists(st.sampled_from([PUT, PUT, DELETE, CLEAR]), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(ORDERFREE.flatmap(records))
def test_any_order_and_repeats_give_the_newest_of_each_key(drawn: tuple) -> None:
    recs, rnd = made(drawn)
    want = newest(recs)
    for attempt in range(3):
        order = list(recs)  # first as written; then shuffled, with repeats
        if attempt:
            order += rnd.sample(recs, len(recs) // 2)
            Random(attempt).shuffle(order)
        got, answers = applied(order)
        assert (got, answers) == lww_fold(order)
        assert got == want


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([PUT, PUT, DELETE, CLEAR]), min_size=1, max_size=20).flatmap(records),
    st.lists(st.tuples(st.integers(0, 19), st.sampled_from([EXPIRED, EVICTED]))),
)
def test_expiry_and_eviction_ties_decide_as_lww(drawn: tuple, removals: list) -> None:
    """An EXPIRED or EVICTED carries the version of the entry it removed (a tie, which
    goes to the removal); not order-free (nothing remembers it), but as lww says."""
    recs, rnd = made(drawn)
    extra = [(kind, recs[i][1], recs[i][2], recs[i][3]) for i, kind in removals if i < len(recs)]
    order = recs + [r for r in extra if r[1]]
    rnd.shuffle(order)
    assert applied(order) == lww_fold(order)
