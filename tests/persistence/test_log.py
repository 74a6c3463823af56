"""The Log API: appends, tokens, fsync policies, rolls, snapshots, install, drop, lock."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
from pathlib import Path

import pytest

from persistence import (
    Config,
    DataDirLocked,
    FsyncPolicy,
    InvalidRecord,
    Log,
    Op,
    PersistenceError,
    Record,
    RecoveryRequired,
    should_snapshot,
)
from persistence.layout import list_files, partition_dir
from tests.persistence.conftest import put, state_of


def test_append_recover_roundtrip(cfg: Config) -> None:
    with Log.open(cfg) as log:
        log.recover(0)
        t1 = log.append(0, [put(1, b"a", b"1"), put(2, b"b", b"2")])
        t2 = log.append(7, [put(1, b"x", b"9")])
        assert t2 == t1 + 1
        assert log.sync() == t2 == log.durable_token
    states, report = state_of(cfg.data_dir)
    assert states[0].maps == {"m": {b"a": (b"1", 1, 1, 0, 0), b"b": (b"2", 2, 1, 0, 0)}}
    assert states[7].maps == {"m": {b"x": (b"9", 1, 1, 0, 0)}}
    assert states[0].seq == 2 and report.records_loaded == 3
    assert report.problems == {}


def test_seq_must_increase_and_bad_records_write_nothing(cfg: Config) -> None:
    with Log.open(cfg) as log:
        log.append(0, [put(5, b"a", b"1")])
        size = os.path.getsize(partition_dir(cfg.data_dir, 0) / "seg-0000000001.log")
        bad = [
            [put(5, b"b", b"1")],
            [put(6, b"b", b"1"), put(6, b"c", b"1")],
            [Record(6, Op.PUT, "m", "str-key", b"v", 1, 1)],  # type: ignore[arg-type]
            [Record(6, Op.PUT, "m", b"k", None, 1, 1)],
            [Record(6, Op.DELETE, "m", b"k", b"v", 1, 1)],
            [Record(6, 99, "m", b"k", b"v", 1, 1)],
            [Record(6, Op.PUT, "m", b"k", b"v", -1, 1)],
            [Record(6, Op.CLEAR, "m", b"k", None, 1, 1)],
            [(6, 1, "m", b"k")],
            [],
        ]
        for batch in bad:
            with pytest.raises(InvalidRecord):
                log.append(0, batch)
        assert os.path.getsize(partition_dir(cfg.data_dir, 0) / "seg-0000000001.log") == size
        assert log.last_seq(0) == 5


def test_sync_due_follows_policy(tmp_path: Path) -> None:
    for policy, expect_now, expect_later in [
        (FsyncPolicy.ALWAYS, True, True),
        (FsyncPolicy.INTERVAL, False, True),
        (FsyncPolicy.NEVER, False, False),
    ]:
        with Log.open(Config(tmp_path / policy, fsync=policy, fsync_interval_s=0.5)) as log:
            assert not log.sync_due()
            log.append(1, [put(1, b"a", b"1")])
            t = log._last_sync
            assert log.sync_due(t + 0.1) is expect_now
            assert log.sync_due(t + 0.6) is expect_later
            log.sync()
            assert not log.sync_due(t + 100)


def test_segments_roll_and_snapshot_drops_old_ones(cfg: Config) -> None:
    with Log.open(cfg) as log:
        seq = 0
        for i in range(200):
            seq += 1
            log.append(0, [put(seq, b"k%d" % (i % 10), b"v" * 50)])
        segs, snaps, _ = list_files(partition_dir(cfg.data_dir, 0))
        assert len(segs) > 3 and snaps == []
        assert all(
            os.path.getsize(partition_dir(cfg.data_dir, 0) / f"seg-{n:010d}.log") <= 4096
            for n in segs
        )
        live = [put(seq, b"k%d" % i, b"v" * 50) for i in range(10)]
        log.snapshot(0, seq, live)
        # keep_snapshots=2: the first snapshot keeps the whole log as its fallback
        assert list_files(partition_dir(cfg.data_dir, 0))[0] == segs
        log.append(0, [put(seq + 1, b"new", b"1")])
        log.snapshot(0, seq + 1, [*live, put(seq + 1, b"new", b"1")])
        segs2, snaps2, _ = list_files(partition_dir(cfg.data_dir, 0))
        assert len(snaps2) == 2 and min(segs2) >= snaps2[0]
        assert log.log_bytes(0) == 0
    states, report = state_of(cfg.data_dir)
    assert len(states[0].maps["m"]) == 11 and states[0].seq == seq + 1
    assert report.partitions[0].snapshot_records == 11


def test_snapshot_while_appends_continue(cfg: Config) -> None:
    """begin_snapshot rolls; appends after it land in the new segment and survive."""
    with Log.open(cfg) as log:
        log.append(0, [put(1, b"a", b"1"), put(2, b"b", b"2")])
        state = [put(2, b"a", b"1"), put(2, b"b", b"2")]  # point-in-time copy at seq 2
        job = log.begin_snapshot(0, 2)
        log.append(0, [put(3, b"c", b"3")])
        log.append(0, [Record(4, Op.DELETE, "m", b"a", None, 4, 1)])
        job.write(state)
        log.end_snapshot(job)
        with pytest.raises(InvalidRecord):
            log.begin_snapshot(0, 3)  # not the last seq
    states, report = state_of(cfg.data_dir)
    assert states[0].maps["m"] == {
        b"a": (None, 4, 1, 0, 0),
        b"b": (b"2", 2, 1, 0, 0),
        b"c": (b"3", 3, 1, 0, 0),
    }
    assert report.partitions[0].snapshot_records == 2
    assert report.partitions[0].records_loaded == 2


def test_snapshot_written_a_slice_at_a_time(cfg: Config) -> None:
    """job.writer(): slices packed on one thread, written on another, appends in between;
    the file is the same state as job.write()'s, and nothing is adopted before commit()."""
    with Log.open(cfg) as log:
        log.append(0, [put(i, b"k%d" % i, b"v" * i) for i in range(1, 41)])
        state = [put(40, b"k%d" % i, b"v" * i) for i in range(1, 41)]
        job = log.begin_snapshot(0, 40)
        writer = job.writer()
        with pytest.raises(InvalidRecord):
            writer.pack([put(41, b"x", b"later")])  # after the snapshot's seq
        for i in range(0, 40, 7):
            pool = concurrent.futures.ThreadPoolExecutor(1)
            pool.submit(writer.write, writer.pack(state[i : i + 7])).result()
            pool.shutdown()
            log.append(0, [put(41 + i, b"k1", b"new%d" % i)])
        with pytest.raises(PersistenceError):
            log.end_snapshot(job)  # not committed yet
        assert writer.tmp.exists() and not writer.final.exists()
        info = writer.commit()
        log.end_snapshot(job)
        assert info.records == 40 and job.info == info and not writer.tmp.exists()
    states, report = state_of(cfg.data_dir)
    assert report.partitions[0].snapshot_records == 40
    assert states[0].maps["m"][b"k1"] == (b"new35", 76, 1, 0, 0)
    assert states[0].maps["m"][b"k40"] == (b"v" * 40, 40, 1, 0, 0)


def test_an_aborted_slice_writer_leaves_nothing(cfg: Config) -> None:
    with Log.open(cfg) as log:
        log.append(0, [put(1, b"a", b"1")])
        job = log.begin_snapshot(0, 1)
        writer = job.writer()
        writer.write(writer.pack([put(1, b"a", b"1")]))
        writer.abort()
        assert not writer.tmp.exists() and not writer.final.exists()
    states, _ = state_of(cfg.data_dir)
    assert states[0].maps["m"] == {b"a": (b"1", 1, 1, 0, 0)}


def test_install_replaces_history_even_backwards(cfg: Config) -> None:
    with Log.open(cfg) as log:
        log.append(3, [put(i, b"old%d" % i, b"x") for i in range(1, 50)])
        log.install(3, 10, [put(10, b"new", b"y")])
        log.append(3, [put(11, b"after", b"z")])
    states, _ = state_of(cfg.data_dir)
    assert states[3].maps == {"m": {b"new": (b"y", 10, 1, 0, 0), b"after": (b"z", 11, 1, 0, 0)}}
    assert states[3].seq == 11


def test_drop_removes_partition(cfg: Config) -> None:
    with Log.open(cfg) as log:
        log.append(1, [put(1, b"a", b"1")])
        log.append(2, [put(1, b"a", b"1")])
        log.drop(1)
        assert log.partitions() == [2]
    states, _ = state_of(cfg.data_dir)
    assert set(states) == {2}


def test_recovery_required_before_append(cfg: Config) -> None:
    with Log.open(cfg) as log:
        log.append(0, [put(1, b"a", b"1")])
    with Log.open(cfg) as log:
        with pytest.raises(RecoveryRequired):
            log.append(0, [put(2, b"a", b"1")])
        log.append(1, [put(1, b"fresh", b"1")])  # a partition with no data is fine
        log.recover(0)
        log.append(0, [put(2, b"b", b"2")])
    states, _ = state_of(cfg.data_dir)
    assert set(states[0].maps["m"]) == {b"a", b"b"}


def test_lock_refuses_second_opener_in_process_and_across_processes(cfg: Config) -> None:
    log = Log.open(cfg)
    try:
        with pytest.raises(DataDirLocked) as err:
            Log.open(cfg)
        assert f"pid {os.getpid()}" in str(err.value)
        code = (
            "import sys; from persistence import Log, Config, DataDirLocked\n"
            "try:\n    Log.open(Config(sys.argv[1]))\n"
            "except DataDirLocked as e:\n    print(e.pid); sys.exit(3)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(cfg.data_dir)],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parents[2],
            timeout=20,
        )
        assert out.returncode == 3, out.stderr
        assert int(out.stdout) == os.getpid()
    finally:
        log.close()
    Log.open(cfg).close()  # released on close


def test_should_snapshot_policy() -> None:
    assert not should_snapshot(1000, 10)  # tiny logs never
    assert should_snapshot(3 * 2**20, 2**20, ratio=2.0)
    assert not should_snapshot(2 * 2**20, 2**20, ratio=2.0)
    assert should_snapshot(2 * 2**20, 2**20, ratio=1.5)


def test_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Config(tmp_path, snapshot_ratio=1.0)
    with pytest.raises(ValueError):
        Config(tmp_path, fsync="sometimes")
    assert Config(str(tmp_path), fsync="always").fsync is FsyncPolicy.ALWAYS


def test_sync_in_a_worker_thread_while_appending(cfg: Config) -> None:
    """Group commit as the runtime drives it: the loop appends, a thread syncs."""
    import threading

    stop = threading.Event()
    durable: list[int] = []
    with Log.open(Config(cfg.data_dir, fsync=FsyncPolicy.ALWAYS, segment_bytes=8192)) as log:

        def syncer() -> None:
            while not stop.is_set():
                durable.append(log.sync())

        t = threading.Thread(target=syncer)
        t.start()
        try:
            for i in range(1, 1500):
                log.append(i % 5, [put(i, b"k%d" % i, b"v" * 30)])
        finally:
            stop.set()
            t.join()
        final = log.sync()
        assert final == log.token == log.durable_token == 1499
        assert durable == sorted(durable) and len(durable) > 1
    states, report = state_of(cfg.data_dir)
    assert sum(len(s.maps["m"]) for s in states.values()) == 1499
    assert report.problems == {}


def test_failed_fsync_cuts_to_durable_prefix_until_a_snapshot(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Injected fsync ENOSPC (the real-disk ENOSPC tests are in test_diskfull.py)."""
    import errno

    from persistence import DiskFull
    from persistence import segment as segment_mod

    with Log.open(cfg) as log:
        log.append(0, [put(1, b"a", b"1")])
        log.sync()
        log.append(0, [put(2, b"b", b"2")])

        def boom(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(segment_mod.os, "fdatasync", boom)
        with pytest.raises(DiskFull) as err:
            log.sync()
        assert err.value.partitions == [0]
        monkeypatch.undo()
        with pytest.raises(DiskFull):
            log.append(0, [put(3, b"c", b"3")])  # broken until re-persisted
        log.snapshot(0, 2, [put(1, b"a", b"1"), put(2, b"b", b"2")])
        log.append(0, [put(3, b"c", b"3")])
    states, report = state_of(cfg.data_dir)
    assert set(states[0].maps["m"]) == {b"a", b"b", b"c"} and report.problems == {}
