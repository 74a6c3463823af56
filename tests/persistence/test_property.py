"""Property: any sequence of appends, snapshots, installs and restarts, recovered, equals
a model of the store (a dict per map applying the same last-writer-wins rules)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from persistence import Config, Log, Op, Record

NOW_MS = 1_000
KEYS = [b"a", b"b", b"c", b"d", b"{x}e"]
MAPS = ["m1", "m2"]
PARTS = [0, 1, 2]


def _newer(ts: int, mid: int, cur: tuple) -> bool:
    return (ts, mid) > (cur[1], cur[2])


class Model:
    """The store's state as the member would hold it: map -> key -> entry tuple."""

    def __init__(self) -> None:
        self.maps: dict[str, dict[bytes, tuple]] = {}

    def apply(self, r: Record) -> None:
        d = self.maps.setdefault(r.map_name, {})
        cur = d.get(r.key)
        if cur is not None and 0 < cur[3] <= NOW_MS:  # the store treats it as gone
            del d[r.key]
            cur = None
        entry = (r.value, r.ts, r.member, r.expiry_ms, r.max_idle_ms)
        if r.op in (Op.PUT, Op.INCR, Op.DELETE):
            if cur is None or _newer(r.ts, r.member, cur):
                d[r.key] = entry
        elif r.op in (Op.EXPIRE, Op.EVICT):
            if cur is not None and not _newer(cur[1], cur[2], entry):
                del d[r.key]
        elif r.op in (Op.CLEAR, Op.CLEARED):
            for k in [k for k, e in d.items() if not _newer(e[1], e[2], entry)]:
                del d[k]
            if r.op == Op.CLEARED and b"" not in d:  # the marker: a tombstone of b""
                d[b""] = (None, r.ts, r.member, 0, 0)

    def live(self) -> dict[str, dict[bytes, tuple]]:
        out = {}
        for m, d in self.maps.items():
            kept = {k: e for k, e in d.items() if not 0 < e[3] <= NOW_MS}
            if kept:
                out[m] = kept
        return out

    def as_records(self, seq: int) -> list[Record]:
        return [
            Record(seq, Op.PUT if e[0] is not None else Op.DELETE, m, k, *e)
            for m, d in self.maps.items()
            for k, e in d.items()
        ]


op_st = st.tuples(
    st.sampled_from(
        [Op.PUT, Op.PUT, Op.PUT, Op.DELETE, Op.INCR, Op.EXPIRE, Op.EVICT, Op.CLEAR, Op.CLEARED]
    ),
    st.sampled_from(MAPS),
    st.sampled_from(KEYS),
    st.binary(max_size=40),
    st.integers(-3, 5),  # ts delta: mostly forward, sometimes a stale (replicated) version
    st.integers(0, 3),  # member
    st.sampled_from([0, 0, 500, 5_000]),  # expiry: none, already past at NOW_MS, future
    st.sampled_from([0, 0, 250]),
)


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="persist-prop-"))
        self.cfg = Config(self.dir, segment_bytes=4096, keep_snapshots=2)
        self.log = Log.open(self.cfg)
        self.log.recover(NOW_MS)
        self.models = {p: Model() for p in PARTS}
        self.seq = dict.fromkeys(PARTS, 0)
        self.ts = 100
        self.job = None

    def teardown(self) -> None:
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _record(self, p: int, op_tuple: tuple) -> Record:
        op, m, k, v, dts, mid, exp, idle = op_tuple
        self.seq[p] += 1
        self.ts = max(1, self.ts + dts)
        if op in (Op.CLEAR, Op.CLEARED):
            return Record(self.seq[p], op, m, b"", None, self.ts, mid)
        if op in (Op.DELETE, Op.EXPIRE, Op.EVICT):
            return Record(self.seq[p], op, m, k, None, self.ts, mid)
        return Record(self.seq[p], op, m, k, v, self.ts, mid, exp, idle)

    @rule(p=st.sampled_from(PARTS), ops=st.lists(op_st, min_size=1, max_size=12))
    def append(self, p: int, ops: list) -> None:
        batch = [self._record(p, o) for o in ops]
        self.log.append(p, batch)
        for r in batch:
            self.models[p].apply(r)

    @rule()
    def sync(self) -> None:
        assert self.log.sync() == self.log.token

    @precondition(lambda self: self.job is None)
    @rule(p=st.sampled_from(PARTS))
    def begin_snapshot(self, p: int) -> None:
        # point-in-time copy, as the member would take it on its event loop
        self.job = (self.log.begin_snapshot(p, self.seq[p]), self.models[p].as_records(self.seq[p]))

    @precondition(lambda self: self.job is not None)
    @rule()
    def finish_snapshot(self) -> None:
        job, records = self.job
        self.job = None
        job.write(records)
        self.log.end_snapshot(job)

    @rule(p=st.sampled_from(PARTS), jump=st.integers(-5, 5))
    def install(self, p: int, jump: int) -> None:
        if self.job is not None and self.job[0].partition == p:
            return
        model = Model()
        for r in self.models[(p + 1) % len(PARTS)].as_records(0):
            model.apply(r)
        self.seq[p] = max(0, self.seq[p] + jump)
        self.log.install(p, self.seq[p], model.as_records(self.seq[p]))
        self.models[p] = model

    @rule()
    def restart(self) -> None:
        if self.job is not None:  # a snapshot in flight is lost with the process
            self.job = None
        self.log.close()
        self.log = Log.open(self.cfg)
        states, report = self.log.recover(NOW_MS)
        assert report.problems == {}
        for p in PARTS:
            got = states[p].maps if p in states else {}
            assert got == self.models[p].live(), p
            if p in states:
                assert states[p].seq == self.seq[p]
            self.models[p].maps = self.models[p].live()  # the member loads only live entries

    @invariant()
    def seqs_tracked(self) -> None:
        for p in PARTS:
            assert self.log.last_seq(p) == self.seq[p]


LogMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLogMachine = LogMachine.TestCase
