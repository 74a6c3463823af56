"""Recovery from damage: torn tails, flipped bits, bad records, corrupt snapshots."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import msgpack

from persistence import Config, Log, Op, Record
from persistence.frame import encode_payload
from persistence.layout import list_files, partition_dir
from persistence.recovery import recover_partition
from tests.persistence.conftest import put, state_of

SEG = "seg-0000000001.log"


def _write_frames(cfg: Config, batches: list[list[Record]]) -> tuple[bytes, list[int]]:
    """Append batches to partition 0; return the segment bytes and frame end offsets."""
    ends = []
    with Log.open(cfg) as log:
        for b in batches:
            log.append(0, b)
            ends.append(os.path.getsize(partition_dir(cfg.data_dir, 0) / SEG))
    return (partition_dir(cfg.data_dir, 0) / SEG).read_bytes(), ends


def _keys_after(data: bytes, tmp: Path, max_frame: int = 1 << 20):
    pdir = partition_dir(tmp, 0)
    if tmp.exists():
        shutil.rmtree(tmp)
    pdir.mkdir(parents=True)
    (pdir / SEG).write_bytes(data)
    rec = recover_partition(tmp, 0, 0, max_frame_bytes=max_frame)
    return rec, set(rec.maps.get("m", {}))


def _batches(n: int) -> list[list[Record]]:
    seq, out = 0, []
    for i in range(n):
        batch = []
        for j in range(1 + i % 3):
            seq += 1
            batch.append(put(seq, b"k%d-%d" % (i, j), b"v%d" % seq))
        out.append(batch)
    return out


def test_torn_tail_at_every_offset_loads_every_whole_frame(cfg: Config, tmp_path: Path) -> None:
    batches = _batches(6)
    data, ends = _write_frames(cfg, batches)
    whole = {r.key for b in batches[:-1] for r in b}
    last_start = ends[-2]
    scratch = tmp_path / "scratch"
    for cut in range(last_start, len(data)):
        rec, keys = _keys_after(data[:cut], scratch)
        assert keys == whole, cut
        r = rec.report
        assert r.bytes_truncated == cut - last_start
        assert r.frames_dropped == (1 if cut > last_start else 0)
        assert r.quarantined == []  # a torn tail is expected, not set aside
        assert os.path.getsize(partition_dir(scratch, 0) / SEG) == last_start
        assert rec.seq == batches[-2][-1].seq
    # after a repair the log continues cleanly
    rec, _ = _keys_after(data[: last_start + 5], scratch)
    with Log.open(Config(scratch)) as log:
        log.recover(0)
        log.append(0, [put(rec.seq + 1, b"again", b"1")])
    states, report = state_of(scratch)
    assert set(states[0].maps["m"]) == whole | {b"again"}
    assert report.problems == {}


def test_flipped_bit_in_any_frame_stops_there_without_exception(
    cfg: Config, tmp_path: Path
) -> None:
    batches = _batches(5)
    data, ends = _write_frames(cfg, batches)
    starts = [8, *ends[:-1]]
    rng = random.Random(7)
    scratch = tmp_path / "scratch"
    for pos in range(8, len(data)):
        frame = max(i for i, s in enumerate(starts) if s <= pos)
        damaged = bytearray(data)
        damaged[pos] ^= 1 << rng.randrange(8)
        rec, keys = _keys_after(bytes(damaged), scratch)
        assert keys == {r.key for b in batches[:frame] for r in b}, pos
        assert rec.report.frames_dropped == 1 and rec.report.errors, pos
        assert rec.report.bytes_truncated == len(data) - starts[frame]
        if frame < len(batches) - 1:  # damage with data after it is kept aside
            assert rec.report.quarantined, pos


def test_bad_magic_and_flip_in_magic(cfg: Config, tmp_path: Path) -> None:
    data, _ = _write_frames(cfg, _batches(2))
    rec, keys = _keys_after(b"XXXXXXXX" + data[8:], tmp_path / "s")
    assert keys == set() and rec.report.errors and rec.report.quarantined


def test_invalid_record_in_a_valid_frame_drops_the_whole_frame(cfg: Config) -> None:
    data, _ = _write_frames(cfg, [[put(1, b"a", b"1")]])
    good = msgpack.packb([(2, 1, "m", b"b", b"2", 2, 1, 0, 0)])
    bad = msgpack.packb([(3, 1, "m", b"c", b"3", 3, 1, 0, 0), (4, 1, "m", "not-bytes", b"4", 4, 1)])
    after = msgpack.packb([(5, 1, "m", b"e", b"5", 5, 1, 0, 0)])
    tail = encode_payload(good) + encode_payload(bad) + encode_payload(after)
    (partition_dir(cfg.data_dir, 0) / SEG).write_bytes(data + tail)
    states, report = state_of(cfg.data_dir)
    assert set(states[0].maps["m"]) == {b"a", b"b"}  # c was in the bad frame: not applied
    assert report.partitions[0].frames_dropped == 1
    assert states[0].seq == 2
    assert any("corrupt" in q for q in report.partitions[0].quarantined)
    for junk in (b"\xc1", msgpack.packb({"a": 1}), msgpack.packb([]), msgpack.packb([1])):
        (partition_dir(cfg.data_dir, 0) / SEG).write_bytes(data + encode_payload(junk))
        states, report = state_of(cfg.data_dir)
        assert set(states[0].maps["m"]) == {b"a"} and report.partitions[0].frames_dropped == 1


def test_sequence_going_backwards_is_a_bad_frame(cfg: Config) -> None:
    data, _ = _write_frames(cfg, [[put(5, b"a", b"1")]])
    tail = encode_payload(msgpack.packb([(5, 1, "m", b"b", b"2", 2, 1, 0, 0)]))
    (partition_dir(cfg.data_dir, 0) / SEG).write_bytes(data + tail)
    states, report = state_of(cfg.data_dir)
    assert set(states[0].maps["m"]) == {b"a"} and report.partitions[0].frames_dropped == 1


def test_damage_in_one_partition_leaves_others_alone(cfg: Config) -> None:
    with Log.open(cfg) as log:
        for p in range(3):
            log.append(p, [put(1, b"a", b"1")])
            log.append(p, [put(2, b"b", b"2")])
    path = partition_dir(cfg.data_dir, 1) / SEG
    path.write_bytes(path.read_bytes()[:-3])
    states, report = state_of(cfg.data_dir)
    assert set(states[1].maps["m"]) == {b"a"}
    assert set(states[0].maps["m"]) == set(states[2].maps["m"]) == {b"a", b"b"}
    assert list(report.problems) == [1]


def _two_snapshots(cfg: Config) -> dict[bytes, bytes]:
    model: dict[bytes, bytes] = {}
    seq = 0
    with Log.open(cfg) as log:
        for round_ in range(3):
            for i in range(30):
                seq += 1
                k, v = b"k%d" % (i % 12), b"r%d-%d" % (round_, i)
                log.append(0, [put(seq, k, v)])
                model[k] = v
            if round_ < 2:
                log.snapshot(0, seq, [put(seq, k, v, ts=1) for k, v in model.items()])
    return model


def test_corrupt_snapshot_falls_back_to_older_one_and_log(cfg: Config) -> None:
    model = _two_snapshots(cfg)
    pdir = partition_dir(cfg.data_dir, 0)
    _, snaps, _ = list_files(pdir)
    assert len(snaps) == 2
    newest = pdir / f"snap-{snaps[-1]:010d}.snap"
    raw = bytearray(newest.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    newest.write_bytes(bytes(raw))
    states, report = state_of(cfg.data_dir)
    got = {k: e[0] for k, e in states[0].maps["m"].items()}
    assert got == model
    r = report.partitions[0]
    assert r.snapshot == f"snap-{snaps[0]:010d}.snap" and r.errors
    assert r.quarantined == [newest.name + ".corrupt"]


def test_truncated_snapshot_and_missing_trailer_are_rejected(cfg: Config) -> None:
    model = _two_snapshots(cfg)
    pdir = partition_dir(cfg.data_dir, 0)
    _, snaps, _ = list_files(pdir)
    for s in snaps:  # both snapshots lose their trailer: fall back to the log alone
        p = pdir / f"snap-{s:010d}.snap"
        p.write_bytes(p.read_bytes()[:-10])
    (pdir / "snap-0000000099.snap.tmp").write_bytes(b"half written")
    states, report = state_of(cfg.data_dir)
    assert {k: e[0] for k, e in states[0].maps["m"].items()} == model
    r = report.partitions[0]
    # keep_snapshots=2 kept the log from the older snapshot on, not from segment 1; every
    # key was rewritten since, so nothing is actually missing, but the report must say
    # that history before it is gone
    assert r.snapshot is None and len(r.errors) == 3 and r.history_incomplete
    assert not (pdir / "snap-0000000099.snap.tmp").exists()


def test_corrupt_only_snapshot_with_keep_one_reports_lost_history(tmp_path: Path) -> None:
    cfg = Config(tmp_path / "d", segment_bytes=4096, keep_snapshots=1)
    with Log.open(cfg) as log:
        log.append(0, [put(i, b"k%d" % i, b"x" * 100) for i in range(1, 100)])
        log.snapshot(0, 99, [put(99, b"k%d" % i, b"x" * 100) for i in range(1, 100)])
        log.append(0, [put(100, b"late", b"1")])
    snap = next(partition_dir(cfg.data_dir, 0).glob("*.snap"))
    snap.write_bytes(b"garbage")
    states, report = state_of(cfg.data_dir)
    assert set(states[0].maps["m"]) == {b"late"}
    assert report.partitions[0].history_incomplete


def test_expired_entries_dropped_at_load(cfg: Config) -> None:
    with Log.open(cfg) as log:
        log.snapshot(0, 0, [put(0, b"snap-gone", b"1", expiry_ms=999), put(0, b"snap", b"1")])
        log.append(
            0,
            [
                put(1, b"gone", b"1", expiry_ms=1000),
                put(2, b"stays", b"1", expiry_ms=5000),
                put(3, b"forever", b"1"),
                put(4, b"renewed", b"1", expiry_ms=500),
                put(5, b"renewed", b"2", expiry_ms=9000),
                put(6, b"idle", b"1", max_idle_ms=10),
            ],
        )
    states, report = state_of(cfg.data_dir, now_ms=1000)
    assert set(states[0].maps["m"]) == {b"snap", b"stays", b"forever", b"renewed", b"idle"}
    assert states[0].maps["m"][b"renewed"] == (b"2", 5, 1, 9000, 0)
    assert states[0].maps["m"][b"idle"][4] == 10
    assert report.partitions[0].records_expired == 2


def test_replay_applies_lww_and_every_op(cfg: Config) -> None:
    R = Record
    with Log.open(cfg) as log:
        log.append(
            0,
            [
                R(1, Op.PUT, "m", b"a", b"new", 100, 2),
                R(2, Op.PUT, "m", b"a", b"stale", 99, 9),  # older version: ignored
                R(3, Op.PUT, "m", b"a", b"tie-loses", 100, 1),  # same ts, lower member
                R(4, Op.INCR, "m", b"n", msgpack.packb(5), 101, 1),
                R(5, Op.PUT, "m", b"d", b"x", 102, 1),
                R(6, Op.DELETE, "m", b"d", None, 103, 1),  # tombstone
                R(7, Op.PUT, "m", b"e", b"x", 104, 1),
                R(8, Op.EXPIRE, "m", b"e", None, 104, 1),  # removed, no tombstone
                R(9, Op.PUT, "m", b"v", b"x", 105, 1),
                R(10, Op.EVICT, "m", b"v", None, 104, 1),  # evicts an older version only
                R(11, Op.PUT, "other", b"a", b"1", 90, 1),
                R(12, Op.PUT, "other", b"b", b"1", 200, 1),
                R(13, Op.CLEAR, "other", b"", None, 150, 1),  # b is newer: survives
            ],
        )
    states, _ = state_of(cfg.data_dir)
    m = states[0].maps
    assert m["m"] == {
        b"a": (b"new", 100, 2, 0, 0),
        b"n": (msgpack.packb(5), 101, 1, 0, 0),
        b"d": (None, 103, 1, 0, 0),
        b"v": (b"x", 105, 1, 0, 0),
    }
    assert m["other"] == {b"b": (b"1", 200, 1, 0, 0)}  # a bare CLEAR leaves no marker


def test_repair_false_changes_nothing(cfg: Config) -> None:
    data, ends = _write_frames(cfg, _batches(3))
    path = partition_dir(cfg.data_dir, 0) / SEG
    path.write_bytes(data[:-4])
    rec = recover_partition(cfg.data_dir, 0, 0, max_frame_bytes=1 << 20, repair=False)
    assert rec.report.bytes_truncated == len(data) - 4 - ends[1]
    assert path.read_bytes() == data[:-4]


def test_missing_segment_in_the_middle_stops_replay(cfg: Config) -> None:
    with Log.open(cfg) as log:
        for i in range(1, 200):
            log.append(0, [put(i, b"k%d" % i, b"v" * 60)])
    pdir = partition_dir(cfg.data_dir, 0)
    segs, _, _ = list_files(pdir)
    assert len(segs) >= 4
    (pdir / f"seg-{segs[2]:010d}.log").unlink()
    states, report = state_of(cfg.data_dir)
    r = report.partitions[0]
    assert r.frames_dropped == 1 and any("missing" in e for e in r.errors)
    assert len(r.quarantined) == len(segs) - 3
    assert states[0].seq < 199
    with Log.open(cfg) as log:  # and the log continues from there
        log.recover(0)
        log.append(0, [put(states[0].seq + 1, b"z", b"1")])
    states2, report2 = state_of(cfg.data_dir)
    assert b"z" in states2[0].maps["m"] and report2.problems == {}


def test_expired_entry_loses_to_a_later_older_version(cfg: Config) -> None:
    """The store dropped the expired v100, then applied a replicated v99: so must replay."""
    with Log.open(cfg) as log:
        log.append(0, [put(1, b"a", b"old-expired", ts=100, expiry_ms=500)])
        log.append(0, [put(2, b"a", b"older-live", ts=99)])
        log.append(0, [put(3, b"b", b"live", ts=100, expiry_ms=5000)])
        log.append(0, [put(4, b"b", b"stale", ts=99)])  # b still live: LWW keeps v100
    states, _ = state_of(cfg.data_dir, now_ms=1000)
    assert states[0].maps["m"] == {
        b"a": (b"older-live", 99, 1, 0, 0),
        b"b": (b"live", 100, 1, 5000, 0),
    }
