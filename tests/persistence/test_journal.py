"""The member-wide journal: one frame per batch, per-partition snapshots and recovery,
damage in the journal, reclamation, install/drop, old data dirs, a failed fsync."""

from __future__ import annotations

import errno
import os
import random
import shutil
from pathlib import Path

import hypothesis.strategies as st
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings

from persistence import (
    Config,
    DiskFull,
    Journal,
    Log,
    RecoveryRequired,
    backup,
    restore,
)
from persistence import segment as segment_mod
from persistence.frame import JOURNAL_MAGIC, MAGIC_LEN, FrameScan, encode_payload
from persistence.journal import JOURNAL_DIR, MIGRATED, MIGRATING, SHIFT, segment_name
from persistence.layout import list_files, partition_dir
from tests.persistence.conftest import put
from tests.persistence.kill9 import kill_9_rounds
from tests.persistence.test_diskfull import tmpfs


def recover(data_dir: Path, now_ms: int = 0, **cfg: object):
    """Open, recover and close: the (states, report) a restarting member would see."""
    journal = Journal.open(Config(data_dir, **cfg))
    try:
        return journal.recover(now_ms)
    finally:
        journal.close()


def keys(states, p: int) -> dict[bytes, bytes | None]:
    return {k: e[0] for k, e in states[p].maps.get("m", {}).items()} if p in states else {}


class Model:
    """What the journal should give back: key -> value per partition, and seqs."""

    def __init__(self) -> None:
        self.data: dict[int, dict[bytes, bytes]] = {}
        self.seq: dict[int, int] = {}

    def batch(self, rng: random.Random, parts: int, ops: int) -> dict[int, list]:
        out: dict[int, list] = {}
        for _ in range(ops):
            p = rng.randrange(parts)
            s = self.seq[p] = self.seq.get(p, 0) + 1
            k, v = b"k%d" % rng.randrange(50), os.urandom(rng.randrange(1, 40))
            out.setdefault(p, []).append(put(s, k, v))
        return out

    def apply(self, batch: dict[int, list]) -> None:
        for p, recs in batch.items():
            for r in recs:
                self.data.setdefault(p, {})[r.key] = r.value

    def records(self, p: int) -> list:
        return [put(self.seq[p], k, v, ts=self.seq[p]) for k, v in self.data.get(p, {}).items()]


def segments(data_dir: Path) -> list[Path]:
    return sorted((data_dir / JOURNAL_DIR).glob("jnl-*.log"))


def frames(path: Path) -> list[tuple[int, int]]:
    """(start, end) of every frame of a journal segment."""
    buf = path.read_bytes()
    scan = FrameScan(buf, MAGIC_LEN, 1 << 26)
    out = []
    for _ in scan:
        out.append((scan.frame_start, scan.offset))
    assert scan.error is None
    return out


def test_a_batch_over_many_partitions_is_one_frame_and_recovers(cfg: Config) -> None:
    rng, model = random.Random(1), Model()
    with Journal.open(cfg) as j:
        j.recover(0)
        for _ in range(30):
            b = model.batch(rng, 40, 64)
            before = j.token
            assert j.append(b) == before + 1
            model.apply(b)
    n_frames = sum(len(frames(s)) for s in segments(cfg.data_dir))
    assert n_frames == 30  # one frame per batch, whatever the partitions
    states, report = recover(cfg.data_dir)
    assert report.problems == {}
    for p in model.data:
        assert keys(states, p) == model.data[p]
        assert states[p].seq == model.seq[p]


def test_torn_tail_at_every_offset_of_the_last_frame(cfg: Config, tmp_path: Path) -> None:
    rng, model = random.Random(2), Model()
    with Journal.open(cfg) as j:
        j.recover(0)
        for _ in range(5):
            b = model.batch(rng, 8, 10)
            j.append(b)
            model.apply(b)
        last = model.batch(rng, 8, 10)
        j.append(last)
    seg = segments(cfg.data_dir)[-1]
    start, end = frames(seg)[-1]
    whole = seg.read_bytes()
    for cut in range(start + 1, end):
        scratch = tmp_path / f"s{cut}"
        shutil.copytree(cfg.data_dir, scratch)
        (scratch / JOURNAL_DIR / seg.name).write_bytes(whole[:cut])
        states, report = recover(scratch)
        for p in model.data:  # every whole frame, nothing of the torn one
            assert keys(states, p) == model.data[p]
        assert (scratch / JOURNAL_DIR / seg.name).stat().st_size == start
        assert report.journal is not None and report.journal.bytes_truncated == cut - start
        assert not list((scratch / JOURNAL_DIR).glob("*.corrupt"))  # torn: cut quietly
        shutil.rmtree(scratch)


@pytest.mark.parametrize("where", ["payload", "header"])
def test_bit_flip_in_the_middle_of_a_segment_cuts_and_reports(cfg: Config, where: str) -> None:
    rng, model = random.Random(3), Model()
    kept = Model()
    with Journal.open(cfg) as j:
        j.recover(0)
        for i in range(12):
            b = model.batch(rng, 6, 8)
            j.append(b)
            model.apply(b)
            if i < 6:
                kept.apply(b)
                kept.seq = dict(model.seq)
    seg = segments(cfg.data_dir)[0]
    fr = frames(seg)
    start = fr[6][0]
    buf = bytearray(seg.read_bytes())
    buf[start + (20 if where == "payload" else 2)] ^= 0x10
    seg.write_bytes(bytes(buf))
    states, report = recover(cfg.data_dir)
    for p in model.data:  # the frames before the damage, nothing after
        assert keys(states, p) == kept.data.get(p, {})
    jr = report.journal
    assert jr is not None and jr.frames_dropped == 1 and jr.errors
    assert jr.bytes_truncated == len(buf) - start
    assert any(name.endswith(".corrupt") for name in jr.quarantined)  # kept for the operator
    assert -1 in report.problems
    later = 5 * 8 if where == "payload" else 0  # frames after a bad payload still count
    assert jr.records_dropped == later
    assert sum(r.records_dropped for r in report.partitions.values()) == later
    # the member goes on: appends continue in a new segment, and recover cleanly
    with Journal.open(cfg) as j:
        j.recover(0)
        j.append({0: [put(kept.seq[0] + 1, b"after", b"x")]})
    states, report = recover(cfg.data_dir)
    assert keys(states, 0)[b"after"] == b"x" and report.problems == {}


def test_snapshots_reclaim_segments_and_idle_partitions_pin_them(tmp_path: Path) -> None:
    cfg = Config(tmp_path / "d", segment_bytes=4096)
    rng, model = random.Random(4), Model()
    j = Journal.open(cfg)
    j.recover(0)
    j.append({9: [put(1, b"idle", b"1")]})  # a partition written once, then idle
    model.seq[9] = 1
    model.data[9] = {b"idle": b"1"}

    def round_of(n: int) -> None:
        for _ in range(n):
            b = model.batch(rng, 4, 16)
            j.append(b)
            model.apply(b)
        for p in range(4):
            j.snapshot(p, model.seq[p], model.records(p))

    round_of(20)
    round_of(20)
    assert len(segments(cfg.data_dir)) > 3
    assert j.pinning() == [9]  # its history starts in segment 1
    assert segments(cfg.data_dir)[0].name == segment_name(1)
    for _ in range(2):  # keep_snapshots 2: the older kept one must be past segment 1
        j.snapshot(9, 1, model.records(9))
        round_of(5)
    names = [s.name for s in segments(cfg.data_dir)]
    assert segment_name(1) not in names and len(names) <= 4
    assert j.journal_bytes() == sum(s.stat().st_size for s in segments(cfg.data_dir))
    for p in range(4):  # at most keep_snapshots snapshots per partition
        assert len(list_files(partition_dir(cfg.data_dir, p))[1]) <= 2
    j.close()
    states, report = recover(cfg.data_dir)
    assert report.problems == {}
    for p in model.data:
        assert keys(states, p) == model.data[p]


def test_corrupt_newest_snapshot_falls_back_to_the_older_one_and_the_journal(
    cfg: Config,
) -> None:
    rng, model = random.Random(5), Model()
    with Journal.open(cfg) as j:
        j.recover(0)
        for _ in range(3):
            for _ in range(10):
                b = model.batch(rng, 3, 8)
                j.append(b)
                model.apply(b)
            for p in range(3):
                j.snapshot(p, model.seq[p], model.records(p))
        b = model.batch(rng, 3, 8)
        j.append(b)
        model.apply(b)
    newest = sorted(partition_dir(cfg.data_dir, 1).glob("snap-*.snap"))[-1]
    newest.write_bytes(newest.read_bytes()[:-5])
    states, report = recover(cfg.data_dir)
    for p in range(3):
        assert keys(states, p) == model.data[p]
    assert list(report.problems) == [1]


def test_install_resets_history_and_drop_forgets_a_partition(cfg: Config) -> None:
    with Journal.open(cfg) as j:
        j.recover(0)
        j.append({0: [put(1, b"a", b"1"), put(2, b"b", b"2")], 1: [put(1, b"x", b"1")]})
        j.append({0: [put(3, b"c", b"3")]})
        j.install(0, 1, [put(1, b"new", b"n")])  # state from elsewhere, seq backwards
        assert j.last_seq(0) == 1
        j.append({0: [put(2, b"after", b"y")], 1: [put(2, b"y", b"2")]})
        j.drop(1)
        assert not partition_dir(cfg.data_dir, 1).exists()
        assert 1 not in j.partitions()
    states, report = recover(cfg.data_dir)
    assert keys(states, 0) == {b"new": b"n", b"after": b"y"} and states[0].seq == 2
    assert 1 not in states and report.problems == {}
    with Journal.open(cfg) as j:  # the partition comes back: a fresh history from seq 1
        j.recover(0)
        j.append({1: [put(1, b"back", b"1")]})
    states, _ = recover(cfg.data_dir)
    assert keys(states, 1) == {b"back": b"1"}


def test_drop_marker_survives_a_crash_before_the_directory_goes(cfg: Config) -> None:
    with Journal.open(cfg) as j:
        j.recover(0)
        j.append({3: [put(1, b"a", b"1")]})
        j.snapshot(3, 1, [put(1, b"a", b"1")])
        j.append({3: [put(2, b"b", b"2")]})
        pdir = partition_dir(cfg.data_dir, 3)
        saved = cfg.data_dir.parent / "saved"
        shutil.copytree(pdir, saved)
        j.drop(3)
    shutil.copytree(saved, pdir)  # as if killed between the marker and the rmtree
    states, report = recover(cfg.data_dir)
    assert 3 not in states and not pdir.exists() and report.problems == {}


def test_old_per_partition_data_dir_is_migrated_on_start(cfg: Config) -> None:
    with Log.open(cfg) as log:
        for p in range(3):
            log.append(p, [put(s, b"k%d" % s, b"v%d" % s) for s in range(1, 40)])
        log.snapshot(1, 39, [put(39, b"k%d" % s, b"v%d" % s) for s in range(1, 40)])
        log.append(1, [put(40, b"late", b"1")])
    with Log.open(cfg) as log:
        before, _ = log.recover(0)
    with Journal.open(cfg) as j:
        states, report = j.recover(0)
        assert report.migrated == 3
        for p in range(3):
            assert keys(states, p) == keys(before, p) and states[p].seq == before[p].seq
        j.append({1: [put(41, b"new", b"1")]})
    assert (cfg.data_dir / JOURNAL_DIR).is_dir()
    for p in range(3):  # no per-partition segment is left
        segs, snaps, _ = list_files(partition_dir(cfg.data_dir, p))
        assert segs == [] and len(snaps) == 1 and snaps[0] >= 1 << SHIFT
    states, report = recover(cfg.data_dir)
    assert report.migrated == 0 and report.problems == {}
    assert keys(states, 1)[b"new"] == b"1" and keys(states, 1)[b"late"] == b"1"


def test_migration_interrupted_is_redone_or_finished(cfg: Config, tmp_path: Path) -> None:
    with Log.open(cfg) as log:
        for p in range(2):
            log.append(p, [put(s, b"k%d" % s, b"v") for s in range(1, 10)])
    old = tmp_path / "old"
    shutil.copytree(cfg.data_dir, old)
    # before the commit point: a half-written .migrating is thrown away, work redone
    crashed = tmp_path / "a"
    shutil.copytree(old, crashed)
    (crashed / MIGRATING / "p-0000").mkdir(parents=True)
    (crashed / MIGRATING / "p-0000" / "junk").write_bytes(b"half")
    states, report = recover(crashed)
    assert report.migrated == 2 and keys(states, 0) == {b"k%d" % s: b"v" for s in range(1, 10)}
    assert not (crashed / MIGRATING).exists()
    # after the commit point: one partition already moved, the other still waiting
    done = tmp_path / "b"
    shutil.copytree(crashed, done)
    shutil.rmtree(done / JOURNAL_DIR)
    (done / MIGRATED).mkdir()
    shutil.move(done / "p-0001", done / MIGRATED / "p-0001")
    shutil.copytree(old / "p-0001", done / "p-0001")  # the old directory still there
    states, report = recover(done)
    assert keys(states, 1) == {b"k%d" % s: b"v" for s in range(1, 10)}
    assert not (done / MIGRATED).exists() and report.problems == {}
    assert list_files(partition_dir(done, 1))[0] == []


def test_append_before_recover_and_unknown_payloads(cfg: Config) -> None:
    with Journal.open(cfg) as j:
        with pytest.raises(RecoveryRequired):
            j.append({0: [put(1, b"a", b"1")]})
        j.recover(0)
        j.append({0: [put(1, b"a", b"1")]})
    seg = segments(cfg.data_dir)[0]
    # a frame with a good checksum holding a record recovery refuses: dropped whole
    junk = msgpack.packb({0: [list(put(2, b"b", b"2")), [3, 99]], 1: [list(put(1, b"c", b"3"))]})
    with open(seg, "ab") as f:
        f.write(encode_payload(junk))
    states, report = recover(cfg.data_dir)
    assert keys(states, 0) == {b"a": b"1"} and 1 not in states
    assert report.journal is not None and report.journal.frames_dropped == 1


def test_failed_fsync_cuts_to_durable_prefix_until_a_snapshot(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Journal.open(cfg) as j:
        j.recover(0)
        j.append({0: [put(1, b"a", b"1")], 5: [put(1, b"z", b"1")]})
        j.sync()
        j.append({0: [put(2, b"b", b"2")]})

        def boom(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(segment_mod.os, "fdatasync", boom)
        with pytest.raises(DiskFull) as err:
            j.sync()
        assert err.value.partitions == [0]
        monkeypatch.undo()
        with pytest.raises(DiskFull):
            j.append({0: [put(3, b"c", b"3")]})  # broken until re-persisted
        j.append({5: [put(2, b"y", b"2")]})  # an untouched partition goes on
        j.snapshot(0, 2, [put(1, b"a", b"1"), put(2, b"b", b"2")])
        j.append({0: [put(3, b"c", b"3")]})
    assert len(segments(cfg.data_dir)) == 2  # a new segment after the cut
    states, report = recover(cfg.data_dir)
    assert set(keys(states, 0)) == {b"a", b"b", b"c"} and set(keys(states, 5)) == {b"z", b"y"}
    assert report.problems == {}


def test_backup_and_restore_of_a_journal(cfg: Config, tmp_path: Path) -> None:
    rng, model = random.Random(6), Model()
    with Journal.open(cfg) as j:
        j.recover(0)
        for _ in range(10):
            b = model.batch(rng, 4, 16)
            j.append(b)
            model.apply(b)
        j.snapshot(2, model.seq[2], model.records(2))
        for _ in range(5):
            b = model.batch(rng, 4, 16)
            j.append(b)
            model.apply(b)
        backup(j, tmp_path / "bk")
        j.append({0: [put(model.seq[0] + 1, b"not-in-backup", b"1")]})
    restore(tmp_path / "bk", tmp_path / "restored")
    states, report = recover(tmp_path / "restored")
    assert report.problems == {}
    for p in model.data:
        assert keys(states, p) == model.data[p]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    batches=st.lists(
        st.dictionaries(
            st.integers(0, 5),
            st.lists(
                st.tuples(st.binary(max_size=3), st.binary(max_size=20)), min_size=1, max_size=5
            ),
            min_size=1,
            max_size=4,
        ),
        min_size=1,
        max_size=12,
    ),
    cut=st.integers(0, 10_000),
)
def test_journal_records_roundtrip_up_to_any_torn_end(batches, cut: int) -> None:
    """Any batches, the journal torn at any byte: recovery gives exactly the batches
    whose frame is whole, per partition."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "d"
        ends, seq = [], {}
        with Journal.open(Config(data)) as j:
            j.recover(0)
            for b in batches:
                batch = {}
                for p, kvs in b.items():
                    recs = []
                    for k, v in kvs:
                        seq[p] = seq.get(p, 0) + 1
                        recs.append(put(seq[p], k, v))
                    batch[p] = recs
                j.append(batch)
                ends.append(batch)
        seg = segments(data)[0]
        buf = seg.read_bytes()
        at = MAGIC_LEN + cut % (len(buf) - MAGIC_LEN + 1)
        seg.write_bytes(buf[:at])
        whole = sum(1 for _, end in frames_of(buf) if end <= at)
        expect: dict[int, dict[bytes, bytes]] = {}
        for batch in ends[:whole]:
            for p, recs in batch.items():
                for r in recs:
                    expect.setdefault(p, {})[r.key] = r.value
        states, _ = recover(data)
        got = {p: keys(states, p) for p in states if keys(states, p)}
        assert got == {p: d for p, d in expect.items() if d}


def frames_of(buf: bytes) -> list[tuple[int, int]]:
    scan = FrameScan(buf, MAGIC_LEN, 1 << 26)
    return [(scan.frame_start, scan.offset) for _ in scan]


def test_journal_segments_start_with_their_own_magic(cfg: Config) -> None:
    with Journal.open(cfg) as j:
        j.recover(0)
        j.append({0: [put(1, b"a", b"1")]})
    assert segments(cfg.data_dir)[0].read_bytes()[:MAGIC_LEN] == JOURNAL_MAGIC


def test_enospc_on_append_writes_nothing_and_resumes(tmp_path: Path) -> None:
    """A real 1 MiB tmpfs: the failed batch is cut back whole (every partition of it),
    the journal's last seqs are unchanged, appends resume once space returns."""
    with tmpfs(tmp_path / "mnt", "size=1m") as mnt:
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * 256 * 1024)
        cfg = Config(mnt / "data", segment_bytes=256 * 1024)
        j = Journal.open(cfg)
        j.recover(0)
        seq, written = 0, []
        with pytest.raises(DiskFull) as err:
            while seq < 10_000:
                seq += 1
                j.append(
                    {0: [put(seq, b"k%d" % seq, os.urandom(20_000))], 7: [put(seq, b"s", b"1")]}
                )
                written.append(seq)
        assert err.value.partitions == [0, 7]
        seq -= 1
        assert j.last_seq(0) == j.last_seq(7) == seq == written[-1]
        filler.unlink()
        j.append({0: [put(seq + 1, b"after", b"1")]})
        j.close()
        states, report = recover(cfg.data_dir)
        got = keys(states, 0)
        assert all(b"k%d" % s in got for s in written) and b"after" in got
        assert states[7].seq == written[-1]
        assert report.problems == {}


JOURNAL_CHILD = r"""
import random, sys
from persistence import Config, FsyncPolicy, Journal, Op, Record
j = Journal.open(Config(sys.argv[1], fsync=FsyncPolicy.ALWAYS, segment_bytes=64 * 1024))
states, _ = j.recover(0)
rng = random.Random(int(sys.argv[2]))
seq = {p: (states[p].seq if p in states else 0) for p in range(8)}
print("ready", flush=True)
while True:
    acked = []
    for _ in range(rng.randint(1, 4)):  # a group of batches shares one fsync
        batch = {}
        for _ in range(rng.randint(1, 64)):
            p = rng.randrange(8)
            seq[p] += 1
            value = b"v" * rng.randint(0, 300)
            batch.setdefault(p, []).append(
                Record(seq[p], Op.PUT, "m", b"k%d" % seq[p], value, seq[p], 1)
            )
        tok = j.append(batch)
        acked.append(({p: recs[-1].seq for p, recs in batch.items()}, tok))
    if rng.random() < 0.1:  # a snapshot now and then: reclamation under the kill
        p = rng.randrange(8)
        recs = [Record(seq[p], Op.PUT, "m", b"k%d" % i, b"s", i, 1) for i in range(1, seq[p] + 1)]
        j.snapshot(p, seq[p], recs)
    durable = j.sync()
    lines = [f"{p} {s}\n" for last, t in acked if t <= durable for p, s in last.items()]
    sys.stdout.write("".join(lines))
    sys.stdout.flush()
"""


def test_kill_9_loses_no_acknowledged_batch(tmp_path: Path) -> None:
    """kill -9 at random moments of always-appends (with snapshots and segment rolls):
    every acknowledged record of every partition is recovered."""
    data = tmp_path / "data"
    acked: dict[int, int] = {}
    for round_, acked in kill_9_rounds(JOURNAL_CHILD, data, 15, 20261207, 0.3):
        states, report = recover(data)
        for p, s in acked.items():
            got = states[p].maps["m"]
            assert all(b"k%d" % i in got for i in range(1, s + 1)), (round_, p, s)
            assert states[p].seq >= s
        jr = report.journal
        assert jr is not None and jr.frames_dropped <= 1 and not jr.quarantined
    assert sum(acked.values()) > 0
