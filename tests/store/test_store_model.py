"""Hypothesis stateful test: the store behaves like a dict with deadlines, step by step.

The model is a plain dict key -> (value, expire_at, max_idle, last_access) and
the clock is advanced by the test, so expiry is part of what is explored.
After every step the store's internal bookkeeping (slot lists, memory sum,
counters) must be consistent with its contents.
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from grid.errors import CasFailed, InvalidArgument
from grid.store import ALWAYS, IF_ABSENT, IF_PRESENT
from grid.store.entry import entry_size
from tests.store.helpers import Clock, make_store

KEYS = st.sampled_from([b"a", b"b", b"c", b"{t}x", b"{t}y", b"long" * 10])
VALUES = st.binary(max_size=40)
MS = st.sampled_from([0, 0, 1, 5, 50, 200])


class StoreVsModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.store = make_store(self.clock, partitions=7)
        self.m = self.store.map("m")
        self.model: dict[bytes, list] = {}  # key -> [value, expire_at, max_idle, last_access]

    # ---- model helpers -------------------------------------------------------------------
    def _live(self, key: bytes) -> list | None:
        rec = self.model.get(key)
        if rec is None:
            return None
        _, exp, idle, last = rec
        now = self.clock.now
        if (exp and exp <= now) or (idle and now - last >= idle):
            del self.model[key]
            return None
        return rec

    # ---- rules ------------------------------------------------------------------------------
    @rule(ms=st.integers(0, 120))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms)

    @rule(
        key=KEYS,
        value=VALUES,
        ttl=MS,
        idle=MS,
        cond=st.sampled_from([ALWAYS, ALWAYS, IF_ABSENT, IF_PRESENT]),
    )
    def put(self, key: bytes, value: bytes, ttl: int, idle: int, cond: int) -> None:
        now = self.clock.now
        live = self._live(key)
        ok = cond == ALWAYS or (cond == IF_ABSENT) == (live is None)
        try:
            self.store.put(self.m, key, value, now, ttl, idle, cond)
            assert ok
        except CasFailed:
            assert not ok
            return
        self.model[key] = [value, now + ttl if ttl else 0, idle, now]

    @rule(key=KEYS)
    def get(self, key: bytes) -> None:
        live = self._live(key)
        e = self.store.get(self.m, key, self.clock.now)
        assert (e is None) == (live is None)
        if live is not None:
            assert e.value == live[0]
            live[3] = self.clock.now

    @rule(key=KEYS)
    def touch(self, key: bytes) -> None:
        live = self._live(key)
        assert self.store.touch(self.m, key, self.clock.now) == (live is not None)
        if live is not None:
            live[3] = self.clock.now

    @rule(key=KEYS)
    def delete(self, key: bytes) -> None:
        live = self._live(key)
        assert self.store.delete(self.m, key, self.clock.now) == (live is not None)
        self.model.pop(key, None)

    @rule(key=KEYS, ttl=MS)
    def expire(self, key: bytes, ttl: int) -> None:
        live = self._live(key)
        assert self.store.expire(self.m, key, ttl, self.clock.now) == (live is not None)
        if live is not None:
            live[1] = self.clock.now + ttl if ttl else 0

    @rule(key=KEYS, delta=st.integers(-5, 5), ttl=MS)
    def incr(self, key: bytes, delta: int, ttl: int) -> None:
        now = self.clock.now
        live = self._live(key)
        current = None
        if live is not None:
            try:
                current = msgpack.unpackb(live[0])
            except Exception:
                current = None
            if type(current) is not int or len(live[0]) > 9:
                try:
                    self.store.incr(self.m, key, delta, ttl, now)
                    raise AssertionError("incr on a non-integer must fail")
                except InvalidArgument:
                    return
        want = (current or 0) + delta
        if not -(2**63) <= want < 2**63:  # a counter is a signed 64-bit integer, as in Redis
            with pytest.raises(InvalidArgument, match="overflow"):
                self.store.incr(self.m, key, delta, ttl, now)
            return
        result = self.store.incr(self.m, key, delta, ttl, now)
        assert result == want
        if live is None:
            self.model[key] = [msgpack.packb(result), now + ttl if ttl else 0, 0, now]
        else:
            live[0] = msgpack.packb(result)
            live[3] = now

    @rule(key=KEYS)
    def ttl(self, key: bytes) -> None:
        live = self._live(key)
        left = self.store.ttl(self.m, key, self.clock.now)
        if live is None:
            assert left is None
            return
        _, exp, idle, last = live
        deadlines = [d for d in (exp, last + idle if idle else 0) if d]
        assert left == (min(deadlines) - self.clock.now if deadlines else -1)

    @rule()
    def expiry_cycle(self) -> None:
        self.store.expire_cycle(budget_ms=100)

    @rule()
    def clear(self) -> None:
        self.store.clear(self.m)
        self.model.clear()

    # ---- invariants -------------------------------------------------------------------------
    @invariant()
    def scan_matches_model(self) -> None:
        live = {k for k in list(self.model) if self._live(k) is not None}
        keys, cursor = self.store.scan(self.m, b"", 100, self.clock.now)
        assert cursor == b"" and set(keys) == live

    @invariant()
    def bookkeeping_is_consistent(self) -> None:
        s = self.store
        entries = [e for part in self.m.parts for e in part.values()]
        assert len(entries) == self.m.stats.entries == len(s.all)
        for i, key in enumerate(s.all.keys):
            assert self.m.parts[s.all.where[i]][key].slot == i
        for i, key in enumerate(s.volatile.keys):
            e = self.m.parts[s.volatile.where[i]][key]
            assert e.vslot == i and (e.expire_at or e.max_idle)
        assert len(s.volatile) == sum(1 for e in entries if e.expire_at or e.max_idle)
        assert (
            s.used
            == self.m.stats.bytes
            == sum(entry_size(e.key, e.value, e.vslot >= 0) for e in entries)
        )


TestStoreVsModel = StoreVsModel.TestCase
TestStoreVsModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
