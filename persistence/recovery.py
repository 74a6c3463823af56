"""Recovery: rebuild a partition's live state from its newest valid snapshot and log.

For each partition directory, independently (damage in one never affects another):

  1. Delete leftover *.tmp files: snapshots that were being written when we died.
  2. Load the newest snapshot that validates completely.  A corrupt one is reported,
     renamed to *.corrupt, and the next older one is tried (log.py keeps the segments
     an older snapshot needs, see Config.keep_snapshots); with none, replay starts at
     the oldest segment on disk (and the report says the history before it is gone if
     that is not segment 1).
  3. Replay every segment from the snapshot's start_segment on, in order, frame by
     frame.  Records at or below the snapshot's seq are skipped (already in it);
     sequence numbers must strictly increase.  Each record is applied with the one
     last-writer-wins rule on (ts, member), as the store does, so replay is
     idempotent and order-robust; an entry already expired at now_ms counts as absent
     (see _replay for why).
  4. Stop at the first bad thing: a torn or corrupt frame, an undecodable payload, a
     record of the wrong shape, a sequence number going backwards, a missing segment
     number.  Everything from there on is cut: the segment is truncated at the end of
     the last good frame (a torn tail: the expected result of a crash mid-write), and,
     if it was damage with data after it rather than a torn end, the cut bytes are first
     copied to seg-N.log.corrupt; later segments are renamed *.corrupt.  The log then
     ends on a frame boundary, so the member appends after it as if nothing happened.
     A bad frame counts as a whole: if one of its records is invalid, none of the
     frame's records are applied (the partition is replayed again up to the frame).
  5. Drop entries whose absolute expiry is at or before now_ms.

The result is the final state, not a stream of records: per map, key -> (value, ts,
member, expiry_ms, max_idle_ms), value None for a tombstone.  The member bulk-loads it;
replaying a stream through the store would pay the store's per-operation cost for every
overwritten version, and the store would have to re-implement LWW and CLEAR for replay.
Tombstones are kept because anti-entropy needs them until the store's grace period
collects them; max_idle timers restart at load (reads are not logged).

Speed.  Segments are read whole (one read(2) per up to 64 MiB), frames are sliced as
memoryviews, and each frame is one C-level msgpack call that returns a tuple of record
tuples; the per-record Python work is an unpacking assignment, a few type checks and a
dict operation.  The cyclic garbage collector is paused while loading: recovery
allocates millions of tuples that cannot form cycles, and gen-0 collections over them
would cost 15-20% of the load time.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from persistence.errors import CorruptSnapshot
from persistence.frame import MAGIC_LEN, SEGMENT_MAGIC, FrameScan
from persistence.layout import (
    fsync_dir,
    list_files,
    list_partitions,
    partition_dir,
    read_file,
    segment_name,
    snapshot_name,
)
from persistence.record import Entry, Op
from persistence.snapshot import LoadedSnapshot, load_snapshot

_PUT, _DELETE, _EXPIRE, _INCR, _EVICT, _CLEAR, _CLEARED = (int(o) for o in Op)
_TAIL = slice(4, None)
"""A record's last five fields, its Entry."""


@dataclass(slots=True)
class RecoveryReport:
    """What recovery of one partition did; every field is worth a metric or a log line."""

    partition: int
    snapshot: str | None = None
    """File name of the snapshot loaded, None if replay started from the log alone."""
    snapshot_seq: int = 0
    snapshot_records: int = 0
    records_loaded: int = 0
    """Log records applied after the snapshot."""
    records_skipped: int = 0
    """Log records already contained in the snapshot."""
    frames_dropped: int = 0
    """Bad or torn frames (recovery stops at the first, so 0 or 1)."""
    records_expired: int = 0
    """Entries dropped because their expiry had passed by now_ms."""
    bytes_truncated: int = 0
    """Bytes cut from the tail of the log (torn frame and anything after it)."""
    records_dropped: int = 0
    """Records of this partition in the journal's cut-off tail (as far as they could
    still be decoded: a damaged frame's records cannot be counted)."""
    quarantined: list[str] = field(default_factory=list)
    """Files renamed *.corrupt (bad snapshots, segments after a bad frame, cut bytes)."""
    errors: list[str] = field(default_factory=list)
    """Human-readable descriptions of every problem found."""
    history_incomplete: bool = False
    """No usable snapshot and the log does not start at segment 1: older data is lost."""
    last_seq: int = 0
    keys: int = 0
    duration_s: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.errors


@dataclass(slots=True)
class PartitionRecovery:
    """The recovered state of one partition, and where its log continues."""

    partition: int
    maps: dict[str, dict[bytes, Entry]]
    """map name -> key -> (value, ts, member, expiry_ms, max_idle_ms); value None =
    tombstone. The empty key (never a real one) holds the map's clear marker in the
    partition (Op.CLEARED, or a snapshot's DELETE of b""), as a tombstone with the
    clear's version."""
    seq: int
    """Last sequence number recovered; the next append must use a greater one."""
    report: RecoveryReport
    segments: dict[int, int]
    """Segment number -> size of the segments left on disk."""
    snapshots: list[int]
    """start_segment of the snapshots left on disk, ascending."""
    next_segment: int
    tail_segment: int | None
    """Segment the log continues in (None: start a new one at next_segment)."""


@dataclass(slots=True)
class MemberRecoveryReport:
    """Totals over every partition recovered at startup."""

    partitions: dict[int, RecoveryReport] = field(default_factory=dict)
    duration_s: float = 0.0
    journal: RecoveryReport | None = None
    """What recovery did to the member-wide journal itself (partition -1): frames
    dropped, bytes truncated, segments quarantined, their errors."""
    migrated: int = 0
    """Partitions converted from the per-partition layout of earlier builds."""

    def total(self, name: str) -> int:
        total = sum(getattr(r, name) for r in self.partitions.values())
        if self.journal is not None:
            total += getattr(self.journal, name)
        return total

    @property
    def records_loaded(self) -> int:
        return self.total("snapshot_records") + self.total("records_loaded")

    @property
    def problems(self) -> dict[int, list[str]]:
        """Errors by partition; the journal's own (a cut tail) under -1."""
        out = {p: r.errors for p, r in self.partitions.items() if r.errors}
        if self.journal is not None and self.journal.errors:
            out[-1] = self.journal.errors
        return out

    def summary(self) -> str:
        return (
            f"recovered {len(self.partitions)} partitions in {self.duration_s:.3f}s: "
            f"{self.total('snapshot_records')} snapshot records, "
            f"{self.total('records_loaded')} log records loaded, "
            f"{self.total('records_skipped')} skipped, "
            f"{self.total('frames_dropped')} bad frames, "
            f"{self.total('records_expired')} expired, "
            f"{self.total('bytes_truncated')} bytes truncated, "
            f"{self.total('records_dropped')} records dropped with them, "
            f"{len(self.problems)} partitions with problems"
            + (f", {self.migrated} migrated from per-partition logs" if self.migrated else "")
        )


class _BadRecord(Exception):
    pass


def recover_partition(
    data_dir: Path, partition: int, now_ms: int, *, max_frame_bytes: int, repair: bool = True
) -> PartitionRecovery:
    """Recover one partition.  Never raises for bad data, only for I/O errors.

    repair=False only reads (for inspection and backup verification): nothing is
    truncated, renamed or deleted.
    """
    t0 = time.perf_counter()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        stop_at: tuple[int, int] | None = None
        earlier: list[str] = []
        quarantined: list[str] = []
        while True:
            try:
                result = _recover(data_dir, partition, now_ms, max_frame_bytes, repair, stop_at)
                break
            except _Restart as again:
                # An invalid record inside a frame whose checksum was fine: replay again
                # stopping before that frame, so the frame counts as a whole.  Problems
                # already repaired (quarantined snapshots) are only seen by the first run.
                stop_at = again.at
                earlier += again.report.errors
                quarantined = again.report.quarantined
        if earlier:
            result.report.errors = list(dict.fromkeys(earlier + result.report.errors))
            result.report.quarantined = list(dict.fromkeys(quarantined + result.report.quarantined))
    finally:
        if gc_was_enabled:
            gc.enable()
    result.report.duration_s = time.perf_counter() - t0
    return result


class _Restart(Exception):
    def __init__(self, at: tuple[int, int], report: RecoveryReport) -> None:
        self.at = at
        self.report = report


def _recover(
    data_dir: Path,
    partition: int,
    now_ms: int,
    max_frame_bytes: int,
    repair: bool,
    stop_at: tuple[int, int] | None,
) -> PartitionRecovery:
    pdir = partition_dir(data_dir, partition)
    report = RecoveryReport(partition)
    segs, snaps, tmps = list_files(pdir)
    if repair:
        for name in tmps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pdir / name)

    loaded: LoadedSnapshot | None = None
    for start in reversed(snaps):
        name = snapshot_name(start)
        try:
            loaded = load_snapshot(pdir / name, partition, max_frame_bytes)
            break
        except CorruptSnapshot as exc:
            report.errors.append(f"snapshot {exc}; falling back")
            if repair:
                quarantine(pdir, name, report)
                snaps = [s for s in snaps if s != start]
    if loaded is not None:
        maps = loaded.maps
        base_seq = loaded.seq
        start = loaded.start_segment
        report.snapshot = snapshot_name(start)
        report.snapshot_seq = base_seq
        report.snapshot_records = loaded.records
    else:
        maps = {}
        base_seq = 0
        start = segs[0] if segs else 1
        if segs and segs[0] != 1:
            report.history_incomplete = True
            report.errors.append(
                f"no valid snapshot and the log starts at segment {segs[0]}: "
                "records before it are lost"
            )

    prev_seq = 0
    expected = start
    sizes = {s: os.path.getsize(pdir / segment_name(s)) for s in segs}
    replay = [s for s in segs if s >= start]
    bad: tuple[int, int, bool] | None = None  # (segment, offset, torn)
    for i, number in enumerate(replay):
        if number != expected:
            report.errors.append(f"segment {expected} is missing; stopping before {number}")
            bad = (number, 0, False)
            break
        expected = number + 1
        last = i == len(replay) - 1
        buf = read_file(pdir / segment_name(number))
        if buf[:MAGIC_LEN] != SEGMENT_MAGIC:
            torn = last and len(buf) < MAGIC_LEN and SEGMENT_MAGIC.startswith(buf)
            report.errors.append(f"{segment_name(number)}: bad magic")
            bad = (number, 0, torn)
            break
        end = len(buf)
        if stop_at is not None and stop_at[0] == number:
            end = stop_at[1]
        scan = FrameScan(buf, MAGIC_LEN, max_frame_bytes)
        scan.end = end
        try:
            prev_seq, n_loaded, n_skipped = _replay(scan, maps, prev_seq, base_seq, now_ms)
        except _BadRecord as exc:
            report.errors.append(f"{segment_name(number)}: {exc}")
            raise _Restart((number, scan.offset), report) from None
        report.records_loaded += n_loaded
        report.records_skipped += n_skipped
        if stop_at is not None and stop_at[0] == number:
            report.errors.append(f"{segment_name(number)}: offset {end}: invalid record")
            bad = (number, end, False)
            break
        if scan.error is not None:
            report.errors.append(f"{segment_name(number)}: {scan.error}")
            bad = (number, scan.offset, scan.torn and last)
            break

    segments = dict(sizes)
    tail: int | None = replay[-1] if replay else None
    if bad is not None:
        number, offset, torn = bad
        report.frames_dropped += 1
        later = [s for s in replay if s > number]
        cut = sizes[number] - offset
        report.bytes_truncated += cut + sum(sizes[s] for s in later)
        tail = number if offset >= MAGIC_LEN else None
        if repair:
            path = pdir / segment_name(number)
            if offset < MAGIC_LEN:
                if torn:
                    os.unlink(path)
                else:
                    quarantine(pdir, segment_name(number), report)
                del segments[number]
            else:
                if not torn:
                    save_tail(path, offset, report)
                with open(path, "r+b") as f:
                    f.truncate(offset)
                    os.fsync(f.fileno())
                segments[number] = offset
            for s in later:
                quarantine(pdir, segment_name(s), report)
                del segments[s]
            fsync_dir(pdir)
        if tail is None:
            prior = [s for s in segments if start <= s < number]
            tail = max(prior) if prior else None

    # Expiry is applied after replay: a later PUT may have extended an expiry.
    expired = 0
    for d in maps.values():
        dead = [k for k, e in d.items() if 0 < e[3] <= now_ms]
        for k in dead:
            del d[k]
        expired += len(dead)
    for name in [m for m, d in maps.items() if not d]:
        del maps[name]
    report.records_expired = expired
    report.last_seq = max(prev_seq, base_seq)
    report.keys = sum(len(d) for d in maps.values())
    newest_snap = snaps[-1] if snaps else 0
    next_segment = max(max(segments, default=0) + 1, newest_snap, 1)
    return PartitionRecovery(
        partition=partition,
        maps=maps,
        seq=report.last_seq,
        report=report,
        segments=segments,
        snapshots=snaps,
        next_segment=next_segment,
        tail_segment=tail,
    )


def _replay(
    scan: FrameScan, maps: dict[str, dict[bytes, Entry]], prev: int, base: int, now_ms: int
) -> tuple[int, int, int]:
    """Apply every good frame of one segment (per-partition layout of earlier builds)."""
    unpackb = msgpack.unpackb
    loaded = skipped = 0
    for payload in scan:
        try:
            recs = unpackb(payload, use_list=False, raw=False)
        except Exception as exc:
            scan.reject(f"undecodable payload: {type(exc).__name__}")
            raise _BadRecord(str(exc)) from None
        try:
            prev, n_loaded, n_skipped = apply_records(recs, maps, prev, base, now_ms)
        except BadRecord as exc:
            scan.reject(str(exc))
            raise _BadRecord(str(exc)) from None
        loaded += n_loaded
        skipped += n_skipped
    return prev, loaded, skipped


class BadRecord(Exception):
    """A decoded frame holds a record recovery cannot apply (the frame counts as bad)."""


def apply_records(
    recs: object, maps: dict[str, dict[bytes, Entry]], prev: int, base: int, now_ms: int
) -> tuple[int, int, int]:
    """Apply one frame's records of one partition; return (last seq, loaded, skipped).

    The hot loop of recovery: keep it flat.  Records with seq <= `base` are in the
    snapshot already and skipped; seqs must strictly increase after `prev`.  Raises
    BadRecord at the first invalid record, having applied the ones before it (the caller
    replays again stopping before the frame, so a frame counts as a whole).

    An entry already expired at now_ms loses to any later record whatever its version:
    the member only logs what it applied, so a later record with an older version means
    the member no longer had the entry (it had expired, lazily, without an EXPIRE
    record, as entries dropped at load never get one); LWW alone would resurrect it.

    Every name the loop uses is a local (a global or builtin costs a dict probe per
    use), the entry is a subscript with a prebuilt slice (`r[4:]` builds a slice object
    per record on 3.11), a record's length is checked by the unpacking itself, and the
    count of records loaded is derived at the end: about 100 bytecodes per PUT.
    """
    if type(recs) is not tuple or not recs:
        raise BadRecord("payload is not an array of records")
    skipped = 0
    last_map: object = None
    d: dict[bytes, Entry] = {}
    get = d.get
    tail, tuple_, int_, bytes_, str_ = _TAIL, tuple, int, bytes, str
    put, incr, delete = _PUT, _INCR, _DELETE
    try:
        for r in recs:
            if type(r) is not tuple_:
                raise BadRecord("record is not a 9-array")
            seq, op, m, k, v, ts, mid, exp, idle = r  # ValueError unless 9 fields
            if (
                type(seq) is not int_
                or seq <= prev
                or type(k) is not bytes_
                or type(ts) is not int_
                or type(mid) is not int_
                or type(exp) is not int_
                or type(idle) is not int_
                or ts < 0
                or mid < 0
                or exp < 0
                or idle < 0
            ):
                raise BadRecord(f"invalid record (seq {seq!r:.20} after {prev})")
            prev = seq
            if seq <= base:
                skipped += 1
                continue
            if m != last_map:
                if type(m) is not str_:
                    raise BadRecord("map name is not a string")
                got = maps.get(m)
                if got is None:
                    got = maps[m] = {}
                d = got
                get = d.get
                last_map = m
            if op == put or op == incr:  # noqa: SIM109 - `in (a, b)` builds a tuple per record
                if type(v) is not bytes_:
                    raise BadRecord("PUT without a bytes value")
                cur = get(k)
                if (
                    cur is None
                    or ts > cur[1]
                    or (ts == cur[1] and mid > cur[2])
                    or 0 < cur[3] <= now_ms
                ):
                    d[k] = r[tail]
            elif v is not None:
                raise BadRecord(f"op {op!r:.10} with a value")
            elif op == delete:
                cur = get(k)
                if (
                    cur is None
                    or ts > cur[1]
                    or (ts == cur[1] and mid > cur[2])
                    or 0 < cur[3] <= now_ms
                ):
                    d[k] = r[tail]
            elif op == _EXPIRE or op == _EVICT:  # noqa: SIM109
                cur = get(k)
                if cur is not None and (cur[1] < ts or (cur[1] == ts and cur[2] <= mid)):
                    del d[k]
            elif (op == _CLEAR or op == _CLEARED) and k == b"":  # noqa: SIM109
                gone = [
                    key
                    for key, e in d.items()
                    if e[1] < ts or (e[1] == ts and e[2] <= mid)  # type: ignore[operator]
                ]
                for key in gone:
                    del d[key]  # an older clear marker too
                if op == _CLEARED and b"" not in d:
                    # a clear keeps its marker, a tombstone of the empty key (no real key
                    # is empty); a bare CLEAR (a dropped copy) leaves none
                    d[b""] = r[tail]
            else:
                raise BadRecord(f"unknown op {op!r:.10}")
    except ValueError:
        raise BadRecord("record is not a 9-array") from None
    return prev, len(recs) - skipped, skipped


def quarantine(pdir: Path, name: str, report: RecoveryReport) -> None:
    """Rename a damaged file `*.corrupt` (numbered if taken) and report it."""
    target = pdir / f"{name}.corrupt"
    n = 1
    while target.exists():
        n += 1
        target = pdir / f"{name}.corrupt{n}"
    os.replace(pdir / name, target)
    report.quarantined.append(target.name)


def save_tail(path: Path, offset: int, report: RecoveryReport) -> None:
    """Keep bytes cut from the middle of a log for the operator (not for a torn end)."""
    target = path.with_name(path.name + f".{offset}.corrupt")
    with open(path, "rb") as src, open(target, "wb") as dst:
        src.seek(offset)
        shutil.copyfileobj(src, dst)
        dst.flush()
        os.fsync(dst.fileno())
    report.quarantined.append(target.name)


def recover_all(
    data_dir: Path,
    now_ms: int,
    *,
    max_frame_bytes: int,
    partitions: list[int] | None = None,
    repair: bool = True,
) -> tuple[dict[int, PartitionRecovery], MemberRecoveryReport]:
    """Recover every partition directory (or the given ones) of a data directory."""
    t0 = time.perf_counter()
    report = MemberRecoveryReport()
    out: dict[int, PartitionRecovery] = {}
    for p in partitions if partitions is not None else list_partitions(data_dir):
        if not partition_dir(data_dir, p).is_dir():
            continue
        rec = recover_partition(data_dir, p, now_ms, max_frame_bytes=max_frame_bytes, repair=repair)
        out[p] = rec
        report.partitions[p] = rec.report
    report.duration_s = time.perf_counter() - t0
    return out, report
