"""The member-wide journal: one append per batch for every partition it touched.

Why.  With one log per partition, a 64-op batch of random keys touched about 60
partitions and cost about 60 small appends (a frame, a CRC and a pwrite each) and,
under `always`, about 60 fsyncs per group: 330 us per batch on top of 190 us of store
work.  The journal appends the whole batch as one frame with one pwrite, and a group
commit is one fdatasync, whatever the number of partitions.

Layout (docs/persistence.md, "On disk"):

    <data_dir>/
      LOCK                              flock'ed by the owning member
      journal/jnl-0000000012.log        journal segment 12 (numbers only grow)
      p-0007/snap-0000013194139533376.snap
                                        snapshot of partition 7; its number is the
                                        journal *position* its replay starts from

A position is (segment << 40) | byte offset in that segment: one integer that orders
every frame of the journal, so "newest snapshot" is still the highest number and
"replay partition p from its snapshot" is "apply p's records at positions >= it".

Frames are the same as everywhere (frame.py: length, CRC of the payload, CRC of the
header); a journal frame's payload is a msgpack map {partition: [record, ...]} with the
records of one batch (split into a few frames only past max_frame_bytes), or
{partition: nil}: the partition was dropped here (migrated away), forget what came
before.  Records keep their per-partition sequence numbers, so everything that speaks
of "partition p at seq s" (snapshots, replication positions) is unchanged.

Appending.  append({p: records}) checks each partition's seqs continue, packs the map
with one C-level msgpack call, frames it and writes it with one pwrite; the segment
rolls past segment_bytes.  The per-partition bookkeeping is a few dict operations per
partition touched: its last seq, where its history in the journal starts (`origin`),
and an estimate of its bytes since its newest snapshot (the frame's bytes shared by
record count) for should_snapshot().

Group commit.  sync() swaps the set of dirty segments (almost always just the active
one) under a lock held for microseconds and fdatasyncs them outside it, as the
per-partition log did; the loop keeps appending the next group meanwhile.  A failed
fsync cuts the segment back to its durable prefix; every partition appended since the
last good sync may have lost records, so they all refuse appends until a snapshot
(install) re-persists them, and the next append starts a new segment so no position a
snapshot may have recorded is ever reused.

Snapshots.  begin_snapshot(p, seq) notes the journal's current end position (no roll,
no I/O but the partition directory's mkdir the first time); the snapshot file is
written as before (snapshot.py, grid/store/disk_snapshot.py) and end_snapshot() adopts
it.  install(p, seq, records) writes a `reset` snapshot: replay ignores p's records
before its position whatever their seqs.

Reclamation.  A partition needs the journal from `need(p)`: its oldest kept snapshot's
position when it has keep_snapshots of them (so a corrupt newest one falls back to the
older one plus the journal), else the start of its history in the journal.  A segment
is deleted once it lies wholly before min(need(p)) over every partition (never the
active one).  So one idle partition with an old snapshot pins the journal: pinning()
names the partitions whose need lies in the oldest segment, and the member snapshots
them when the journal outgrows keep_snapshots x snapshot_ratio x the live data + 2
segments (grid/store/durability.py): the journal stays within that plus what is written
during the two snapshot rounds it takes to release a segment (docs/persistence.md).

Recovery.  Per partition: delete *.tmp, load the newest snapshot that validates,
quarantine corrupt ones and fall back.  Then read the journal's segments in order, once
each, in two passes per segment: note where each partition's records lie in every frame,
then decode and apply them one partition at a time (recovery.apply_records, the one LWW
replay loop; see _replay for why), skipping a partition's records before its snapshot's
position.  The
journal stops at its first bad frame, as a partition's log did: a torn tail is cut
quietly, damage with data after it is cut and the cut bytes saved to *.corrupt (later
segments renamed *.corrupt), and the records that could still be decoded from what was
cut are counted per partition (RecoveryReport.records_dropped).  Unlike per-partition
logs, damage in the journal cuts every partition's records after it: the price of one
append per batch, and why the frames carry a header CRC (a flipped length is told from
a torn end).  After recovery the journal continues in a new segment.

Old data dirs (p-NNNN/seg-*.log of earlier builds) are migrated on the first open:
recovery.recover_all() loads them as before, each partition is written as a reset
snapshot into .migrating/, which is renamed .migrated (the commit point), then moved
over the old directories; a crash at any step either redoes the migration or finishes
it.

Threads: every method runs on one thread (the event loop), except sync(),
SnapshotJob.write()/writer() and install(), which may run in worker threads
concurrently with append() (one sync() at a time; install() only for a partition that
is not appended meanwhile).
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import re
import shutil
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import msgpack

from persistence.config import Config, FsyncPolicy
from persistence.errors import (
    CorruptSnapshot,
    DiskFull,
    InvalidRecord,
    PersistenceError,
    RecoveryRequired,
)
from persistence.frame import HEADER_LEN, JOURNAL_MAGIC, MAGIC_LEN, FrameScan, encode_payload
from persistence.layout import (
    check_writable,
    fsync_dir,
    list_files,
    list_partitions,
    partition_dir,
    read_file,
    snapshot_name,
)
from persistence.lock import DirLock
from persistence.record import Entry, Op, check_batch
from persistence.recovery import (
    BadRecord,
    MemberRecoveryReport,
    PartitionRecovery,
    RecoveryReport,
    apply_records,
    quarantine,
    recover_all,
    save_tail,
)
from persistence.segment import SegmentWriter
from persistence.snapshot import LoadedSnapshot, SnapshotInfo, SnapshotWriter, load_snapshot
from persistence.snapshot import write_snapshot as _write_snapshot

JOURNAL_DIR = "journal"
MIGRATING = ".migrating"
MIGRATED = ".migrated"
SHIFT = 40
"""Bits of a position that hold the byte offset: segments may grow to 1 TiB."""
NEVER = 1 << 62
"""need() of a partition that needs nothing of the journal."""
_SEG_RE = re.compile(r"^jnl-(\d{10,})\.log")
_PUT, _DELETE = int(Op.PUT), int(Op.DELETE)


def position(segment: int, offset: int) -> int:
    """The journal position of byte `offset` of `segment`."""
    return (segment << SHIFT) | offset


def segment_name(number: int) -> str:
    return f"jnl-{number:010d}.log"


@dataclass(slots=True)
class _Part:
    """What the journal knows of a partition besides its hot counters (Journal._last,
    Journal._bytes: plain dicts, so append() touches no object per partition)."""

    number: int
    snapshots: list[int] = field(default_factory=list)
    """Positions of the snapshots on disk, ascending."""
    origin: int | None = None
    """Position of its first record in the journal since it started or was reset."""


@dataclass(slots=True)
class SnapshotJob:
    """A snapshot begun on the loop thread; write() it anywhere, then end_snapshot()."""

    partition: int
    seq: int
    start_segment: int
    """The journal position the partition's replay continues from."""
    dir: Path
    config: Config
    reset: bool = False
    info: SnapshotInfo | None = None
    log_bytes: float = 0.0
    new_dir: bool = False

    def write(self, records: Iterable[tuple[object, ...]]) -> SnapshotInfo:
        """Write the point-in-time records (PUT/INCR/DELETE, seq <= self.seq) durably.

        Safe in a worker thread: touches only this snapshot's own files."""
        self.info = _write_snapshot(
            self.dir,
            self.partition,
            self.seq,
            self.start_segment,
            records,
            reset=self.reset,
            frame_target_bytes=self.config.frame_target_bytes,
            max_frame_bytes=self.config.max_frame_bytes,
        )
        return self.info

    def writer(self) -> SnapshotWriter:
        """The snapshot a slice at a time (snapshot.py); its commit() completes the job."""
        return SnapshotWriter(
            self.dir,
            self.partition,
            self.seq,
            self.start_segment,
            reset=self.reset,
            max_frame_bytes=self.config.max_frame_bytes,
            on_commit=self._committed,
        )

    def _committed(self, info: SnapshotInfo) -> None:
        self.info = info


class Journal:
    """One member's durable partitions in one journal.  See the module docstring."""

    def __init__(self, config: Config, lock: DirLock) -> None:
        self.config = config
        self.dir = config.data_dir / JOURNAL_DIR
        self._lock_file = lock
        self._parts: dict[int, _Part] = {}
        self._last: dict[int, int] = {}
        """Last seq of every partition."""
        self._bytes: dict[int, float] = {}
        """Estimated journal bytes of a partition's records since its newest snapshot."""
        self._broken: set[int] = set()
        """Partitions whose records a failed sync() cut off; a snapshot repairs them."""
        self._no_origin: set[int] = set()
        """Known partitions with no record in the journal since they started or reset."""
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._token = 0
        self._durable = 0
        self._active: SegmentWriter | None = None
        self._segments: dict[int, int] = {}
        """Segment number -> size, every segment on disk."""
        self._next_segment = 1
        self._dirty: dict[int, SegmentWriter] = {}
        self._dirty_parts: set[int] = set()
        self._dirty_dir = False
        self._roll = False
        self._recovered = False
        self._last_sync = time.monotonic()
        self._closed = False

    # -- opening and recovery ----------------------------------------------------------

    @classmethod
    def open(cls, config: Config) -> Journal:
        """Lock the data directory (DataDirLocked if taken) and check it is writable."""
        lock = DirLock(config.data_dir)
        lock.acquire()
        try:
            check_writable(config.data_dir)
            journal = cls(config, lock)
        except BaseException:
            lock.release()
            raise
        return journal

    def recover(self, now_ms: int) -> tuple[dict[int, PartitionRecovery], MemberRecoveryReport]:
        """Migrate an old layout, then recover every partition from its newest valid
        snapshot and the journal.  Must run once before the first append."""
        if self._recovered:
            raise PersistenceError("recover() runs once, before the first append")
        t0 = time.perf_counter()
        gc_was_enabled = gc.isenabled()
        gc.disable()  # millions of acyclic tuples: gen-0 collections cost 15-20%
        try:
            legacy = _migrate(self.config, now_ms)
            states, report, parts, nbytes = _recover(self.config, now_ms, gc_was_enabled)
        finally:
            if gc_was_enabled:
                gc.enable()
        if legacy is not None:
            report.migrated = len(legacy.partitions)
            for p, old in legacy.partitions.items():
                if p in report.partitions:  # what the old layout's recovery found
                    rep = report.partitions[p]
                    rep.errors = old.errors + rep.errors
                    rep.quarantined = old.quarantined + rep.quarantined
                    rep.frames_dropped += old.frames_dropped
                    rep.bytes_truncated += old.bytes_truncated
        self._segments = dict(report_segments(self.dir))
        highest = max(
            [*self._segments, *_quarantined_segments(self.dir), 0]
            + [pos >> SHIFT for part in parts.values() for pos in part.snapshots]
        )
        self._next_segment = highest + 1  # never append where a snapshot may point
        self._parts = parts
        self._last = {p: st.seq for p, st in states.items()}
        self._bytes = nbytes
        self._no_origin = {p for p, part in parts.items() if part.origin is None}
        self._recovered = True
        report.duration_s = time.perf_counter() - t0
        return states, report

    # -- appending and group commit ----------------------------------------------------

    def append(
        self, batch: Mapping[int, Sequence[tuple[object, ...]]], trusted: bool = False
    ) -> int:
        """Append a batch {partition: records} (each partition's seqs strictly
        increasing, above its last) as one write; return its group-commit token.

        Raises InvalidRecord (nothing written), DiskFull (nothing written; retry when
        space returns), RecoveryRequired.  The batch is in the kernel when this returns.

        `trusted`: built from typed state (the member's store), so only the sequence
        numbers are checked, not every field: the full check costs more than the write.
        """
        if not self._recovered:
            self._require_recovery()
        if self._broken and not self._broken.isdisjoint(batch):
            bad = sorted(self._broken.intersection(batch))
            raise DiskFull(
                f"partitions {bad} lost unsynced records to a failed sync; "
                "take a snapshot to persist them again",
                bad,
            )
        last = self._last
        count = 0
        for p, recs in batch.items():
            prev = last.get(p)
            if prev is None:
                if type(p) is not int or not 0 <= p < 10_000:
                    raise ValueError(f"partition {p!r} out of range")
                prev = 0
            if not trusted:
                check_batch(recs, prev)
            elif not recs or recs[0][0] <= prev:  # type: ignore[operator]
                raise InvalidRecord(f"partition {p}: batch does not continue after seq {prev}")
            count += len(recs)
        if not count:
            raise InvalidRecord("empty batch")
        data = _encode(batch, self.config.max_frame_bytes)
        seg = self._active
        if (
            seg is None
            or self._roll
            or (seg.has_records and seg.size + len(data) > self.config.segment_bytes)
        ):
            seg = self._roll_segment()
        at = position(seg.number, seg.size)
        try:
            seg.write(data)
        except DiskFull as exc:
            raise DiskFull(str(exc), list(batch)) from None
        self._segments[seg.number] = seg.size
        share = len(data) / count
        nbytes = self._bytes
        for p, recs in batch.items():
            last[p] = recs[-1][0]  # type: ignore[assignment]
            nbytes[p] = nbytes.get(p, 0.0) + len(recs) * share
        parts = self._parts
        if len(parts) < len(last):  # partitions new to the journal
            for p in batch.keys() - parts.keys():
                parts[p] = _Part(p, origin=at)
        if self._no_origin and not self._no_origin.isdisjoint(batch):
            for p in self._no_origin.intersection(batch):
                parts[p].origin = at
            self._no_origin.difference_update(batch)
        with self._lock:
            self._token += 1
            self._dirty[seg.number] = seg
            self._dirty_parts.update(batch)
            return self._token

    def sync(self, executor: Executor | None = None) -> int:
        """fsync everything appended so far; return the highest durable token.

        Thread-safe against append() (run it in a worker thread); one at a time.  On
        DiskFull/OSError the segment is cut back to its durable prefix and every
        partition appended since the last good sync refuses appends until snapshotted:
        treat every token not yet acknowledged as failed.  `executor` fans out the
        fsyncs when several segments are dirty (rare: a roll)."""
        with self._sync_lock:
            with self._lock:
                segs = list(self._dirty.values())
                parts = self._dirty_parts
                dirty_dir = self._dirty_dir
                self._dirty = {}
                self._dirty_parts = set()
                self._dirty_dir = False
                upto = self._token
            errors: list[BaseException] = []
            if executor is not None and len(segs) > 1:
                outcomes = list(executor.map(_sync_one, segs))
            else:
                outcomes = [_sync_one(seg) for seg in segs]
            errors = [e for e in outcomes if e is not None]
            if dirty_dir and not errors:
                try:
                    fsync_dir(self.dir)
                except OSError as exc:
                    errors.append(exc)
            self._last_sync = time.monotonic()
            if errors:
                with self._lock:
                    lost = parts | self._dirty_parts  # appended meanwhile were cut too
                    self._roll = True
                    self._dirty_dir = dirty_dir
                self._broken.update(lost)
                first = errors[0]
                if isinstance(first, OSError) and first.errno not in (
                    errno.ENOSPC,
                    errno.EDQUOT,
                ):
                    raise first
                raise DiskFull(f"fsync of the journal failed: {first}", sorted(lost))
            self._durable = max(self._durable, upto)
            return upto

    def sync_due(self, now: float | None = None) -> bool:
        """The fsync policy as one question: should the runtime call sync() now?"""
        if not self._dirty:
            return False
        policy = self.config.fsync
        if policy is FsyncPolicy.ALWAYS:
            return True
        if policy is FsyncPolicy.NEVER:
            return False
        now = time.monotonic() if now is None else now
        return now - self._last_sync >= self.config.fsync_interval_s

    @property
    def token(self) -> int:
        """Token of the latest append."""
        return self._token

    @property
    def durable_token(self) -> int:
        """Every append with a token <= this is on stable storage."""
        return self._durable

    # -- snapshots ---------------------------------------------------------------------

    def begin_snapshot(self, partition: int, seq: int) -> SnapshotJob:
        """Start a snapshot of the state at `seq`, the partition's last appended seq
        (copy the state and call this with no append in between).  Notes the journal's
        end position: microseconds, on the loop thread."""
        self._ready(partition)
        if seq != self._last[partition]:
            raise InvalidRecord(
                f"snapshot seq {seq} is not partition {partition}'s last seq "
                f"{self._last[partition]}"
            )
        pdir, new_dir = self._partition_dir(partition)
        return SnapshotJob(
            partition,
            seq,
            self._end(),
            pdir,
            self.config,
            log_bytes=self._bytes.get(partition, 0.0),
            new_dir=new_dir,
        )

    def end_snapshot(self, job: SnapshotJob) -> None:
        """Adopt a written snapshot; delete the snapshots and journal segments no
        partition needs any more."""
        if job.info is None:
            raise PersistenceError("end_snapshot() before the job's write() finished")
        part = self._ready(job.partition)
        if job.new_dir:
            fsync_dir(self.config.data_dir)  # the partition's directory entry
        if job.start_segment not in part.snapshots:
            part.snapshots = sorted([*part.snapshots, job.start_segment])
        self._broken.discard(job.partition)
        done = self._bytes.get(job.partition, 0.0) - job.log_bytes
        self._bytes[job.partition] = max(0.0, done)
        self._trim_snapshots(part)
        self._reclaim()

    def snapshot(
        self, partition: int, seq: int, records: Iterable[tuple[object, ...]]
    ) -> SnapshotInfo:
        """begin_snapshot + write + end_snapshot in one call (blocks for the write)."""
        job = self.begin_snapshot(partition, seq)
        info = job.write(records)
        self.end_snapshot(job)
        return info

    def install(
        self, partition: int, seq: int, records: Iterable[tuple[object, ...]]
    ) -> SnapshotInfo:
        """Replace a partition's whole persistent history with this state at `seq`.

        For state received from elsewhere (migration, a backup that diverged, a partition
        re-persisted after a full disk): the next append may use any seq above `seq`.
        Writes a `reset` snapshot at the journal's end: recovery ignores the partition's
        records before it.  May run in a worker thread; do not append to the partition
        meanwhile."""
        if not self._recovered:
            self._require_recovery()
        part = self._parts.get(partition)
        if part is None:
            part = _Part(partition)
        pdir, new_dir = self._partition_dir(partition)
        job = SnapshotJob(partition, seq, self._end(), pdir, self.config, reset=True)
        info = job.write(records)
        if new_dir:
            fsync_dir(self.config.data_dir)
        _, snaps, _ = list_files(pdir)
        for s in snaps:
            if s != job.start_segment:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(pdir / snapshot_name(s))
        part.snapshots = [job.start_segment]
        part.origin = None
        self._no_origin.add(partition)
        self._last[partition] = seq
        self._bytes[partition] = 0.0
        self._parts[partition] = part
        self._broken.discard(partition)
        return info

    # -- partitions --------------------------------------------------------------------

    def partitions(self) -> list[int]:
        """Partitions with records or snapshots."""
        return sorted(self._parts)

    def last_seq(self, partition: int) -> int:
        return self._last.get(partition, 0)

    def log_bytes(self, partition: int) -> int:
        """Journal bytes of the partition's records since its newest snapshot (an
        estimate: a frame's bytes shared by record count), for should_snapshot()."""
        return int(self._bytes.get(partition, 0.0))

    def journal_bytes(self) -> int:
        """Bytes of every journal segment on disk."""
        return sum(self._segments.values())

    def pinning(self) -> list[int]:
        """Partitions that keep the oldest journal segment on disk: the ones to snapshot
        (twice, with keep_snapshots 2) when the journal grows past its bound."""
        if len(self._segments) < 2:
            return []
        oldest = min(self._segments)
        return sorted(
            p for p, part in list(self._parts.items()) if self._need(part) >> SHIFT <= oldest
        )

    def drop(self, partition: int) -> None:
        """Forget a partition this member no longer holds: a marker in the journal
        (recovery drops what came before it), fsynced, then its snapshots go."""
        if not self._recovered:
            self._require_recovery()
        data = encode_payload(msgpack.packb({partition: None}))
        seg = self._active
        if seg is None or self._roll:
            seg = self._roll_segment()
        seg.write(data)
        self._segments[seg.number] = seg.size
        with self._lock:
            self._token += 1
            self._dirty[seg.number] = seg
        self.sync()
        self._parts.pop(partition, None)
        self._last.pop(partition, None)
        self._bytes.pop(partition, None)
        self._no_origin.discard(partition)
        self._broken.discard(partition)
        pdir = partition_dir(self.config.data_dir, partition)
        if pdir.exists():
            shutil.rmtree(pdir, ignore_errors=True)
            fsync_dir(self.config.data_dir)
        self._reclaim()

    def close(self) -> None:
        """fsync everything (whatever the policy), close the segments, release the lock."""
        if self._closed:
            return
        try:
            self.sync()
        finally:
            self._closed = True
            if self._active is not None:
                self._active.close()
                self._active = None
            with self._lock:
                for seg in self._dirty.values():
                    seg.close()
                self._dirty = {}
            self._lock_file.release()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def backup_files(self) -> list[tuple[str, int]]:
        """The files (relative to data_dir) and byte lengths of a consistent
        point-in-time copy right now: every partition's newest snapshot and the journal
        from the oldest position any of them (or a partition without one) replays from,
        cut at its current size.  Calls sync() first."""
        self.sync()
        out: list[tuple[str, int]] = []
        start = NEVER
        for p, part in sorted(self._parts.items()):
            if part.snapshots:
                newest = part.snapshots[-1]
                rel = f"{partition_dir(self.config.data_dir, p).name}/{snapshot_name(newest)}"
                out.append((rel, os.path.getsize(self.config.data_dir / rel)))
                start = min(start, newest)
            elif part.origin is not None:
                start = min(start, part.origin)
        for n, size in sorted(self._segments.items()):
            if n >= start >> SHIFT:
                out.append((f"{JOURNAL_DIR}/{segment_name(n)}", size))
        return out

    # -- internals ---------------------------------------------------------------------

    def _require_recovery(self) -> None:
        if self._closed:
            raise PersistenceError("journal is closed")
        raise RecoveryRequired("call recover() before appending to the journal")

    def _ready(self, partition: int) -> _Part:
        if self._closed:
            raise PersistenceError("journal is closed")
        if not self._recovered:
            self._require_recovery()
        part = self._parts.get(partition)
        if part is None:
            if not 0 <= partition < 10_000:
                raise ValueError(f"partition {partition} out of range")
            part = self._parts[partition] = _Part(partition)
            self._last[partition] = 0
            self._no_origin.add(partition)
        return part

    def _partition_dir(self, partition: int) -> tuple[Path, bool]:
        pdir = partition_dir(self.config.data_dir, partition)
        if pdir.is_dir():
            return pdir, False
        try:
            pdir.mkdir(exist_ok=True)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(f"creating {pdir}: {exc}", [partition]) from None
            raise
        return pdir, True

    def _end(self) -> int:
        """The position the next append lands at or after."""
        seg = self._active
        if seg is None or self._roll:
            return position(self._next_segment, 0)
        return position(seg.number, seg.size)

    def _roll_segment(self) -> SegmentWriter:
        old, self._active = self._active, None
        if old is not None:
            old.retire(close_now=self.config.fsync is FsyncPolicy.NEVER)
        number = self._next_segment
        seg = SegmentWriter.create(-1, number, self.dir / segment_name(number), JOURNAL_MAGIC)
        self._next_segment = number + 1
        self._segments[number] = seg.size
        self._active = seg
        self._roll = False
        with self._lock:
            self._dirty[number] = seg
            self._dirty_dir = True
        return seg

    def _trim_snapshots(self, part: _Part) -> None:
        keep = self.config.keep_snapshots
        if len(part.snapshots) <= keep:
            return
        pdir = partition_dir(self.config.data_dir, part.number)
        for start in part.snapshots[:-keep]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pdir / snapshot_name(start))
        part.snapshots = part.snapshots[-keep:]

    def _need(self, part: _Part) -> int:
        """Where this partition's recovery (with its fallbacks) may start reading."""
        snaps = part.snapshots
        if len(snaps) >= self.config.keep_snapshots:
            return snaps[-self.config.keep_snapshots]
        if part.origin is not None:
            return min(part.origin, snaps[0]) if snaps else part.origin
        return snaps[0] if snaps else NEVER

    def _reclaim(self) -> None:
        """Delete every segment wholly before what the partitions need (never the
        active one); a segment is whole before a position in a later segment."""
        need = min((self._need(part) for part in list(self._parts.values())), default=NEVER)
        first = min(need >> SHIFT, self._active.number if self._active else self._next_segment)
        gone = [n for n in self._segments if n < first]
        for n in sorted(gone):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.dir / segment_name(n))
            del self._segments[n]


def report_segments(jdir: Path) -> Iterator[tuple[int, int]]:
    """(number, size) of the journal segments on disk."""
    for name in os.listdir(jdir):
        m = _SEG_RE.match(name)
        if m and name == segment_name(int(m.group(1))):
            yield int(m.group(1)), os.path.getsize(jdir / name)


def _quarantined_segments(jdir: Path) -> list[int]:
    return [int(m.group(1)) for name in os.listdir(jdir) if (m := _SEG_RE.match(name)) is not None]


def _encode(batch: Mapping[int, Sequence[tuple[object, ...]]], max_frame_bytes: int) -> bytes:
    """One frame for the batch; a few if it packs past max_frame_bytes."""
    payload = msgpack.packb(batch, use_bin_type=True)
    if len(payload) + HEADER_LEN <= max_frame_bytes:
        return encode_payload(payload)
    return b"".join(encode_payload(p) for p in _split(list(batch.items()), max_frame_bytes))


def _split(items: list[tuple[int, Sequence[tuple[object, ...]]]], limit: int) -> list[bytes]:
    payload = msgpack.packb(dict(items), use_bin_type=True)
    if len(payload) + HEADER_LEN <= limit:
        return [payload]
    if len(items) > 1:
        mid = len(items) // 2
        return _split(items[:mid], limit) + _split(items[mid:], limit)
    p, recs = items[0]
    if len(recs) == 1:
        raise InvalidRecord(f"one record packs to {len(payload)} bytes, more than {limit}")
    mid = len(recs) // 2
    return _split([(p, recs[:mid])], limit) + _split([(p, recs[mid:])], limit)


def _sync_one(seg: SegmentWriter) -> OSError | DiskFull | None:
    try:
        seg.sync()
    except (DiskFull, OSError) as exc:
        return exc
    return None


# ---- recovery ----------------------------------------------------------------------------


class _State:
    """A partition while the journal is replayed."""

    __slots__ = (
        "base",
        "dropped",
        "first",
        "log_bytes",
        "maps",
        "prev",
        "report",
        "snapshots",
        "start",
    )

    def __init__(self, partition: int) -> None:
        self.maps: dict[str, dict[bytes, tuple[object, ...]]] = {}
        self.base = 0
        """Seq of the loaded snapshot: records at or below it are in it."""
        self.start = 0
        """Position replay applies records from (the snapshot's)."""
        self.prev = 0
        self.first: int | None = None
        self.log_bytes = 0.0
        self.snapshots: list[int] = []
        self.dropped = False
        """A drop marker with no record after it: the partition is gone."""
        self.report = RecoveryReport(partition)


class _Restart(Exception):
    def __init__(self, at: tuple[int, int], error: str) -> None:
        self.at = at
        self.error = error


def _recover(
    config: Config, now_ms: int, collect: bool
) -> tuple[dict[int, PartitionRecovery], MemberRecoveryReport, dict[int, _Part], dict[int, float]]:
    jdir = config.data_dir / JOURNAL_DIR
    stop_at: tuple[int, int] | None = None
    errors: list[str] = []
    while True:
        try:
            states, journal = _load(config, now_ms, stop_at, collect)
            break
        except _Restart as again:
            # An invalid record inside a frame whose checksum was fine: replay again
            # stopping before that frame, so the frame counts as a whole.
            stop_at = again.at
            errors.append(again.error)
    if errors:
        journal.errors = list(dict.fromkeys(errors + journal.errors))
    report = MemberRecoveryReport(journal=journal)
    out: dict[int, PartitionRecovery] = {}
    parts: dict[int, _Part] = {}
    nbytes: dict[int, float] = {}
    for p, st in states.items():
        if st.dropped:  # a crash between drop()'s marker and the directory's removal
            shutil.rmtree(partition_dir(config.data_dir, p), ignore_errors=True)
            continue
        rep = st.report
        expired = 0
        for d in st.maps.values():
            dead = [k for k, e in d.items() if 0 < e[3] <= now_ms]  # type: ignore[operator]
            for k in dead:
                del d[k]
            expired += len(dead)
        maps = {name: d for name, d in st.maps.items() if d}
        rep.records_expired = expired
        rep.last_seq = max(st.prev, st.base)
        rep.keys = sum(len(d) for d in maps.values())
        out[p] = PartitionRecovery(
            partition=p,
            maps=maps,  # type: ignore[arg-type]
            seq=rep.last_seq,
            report=rep,
            segments={},
            snapshots=st.snapshots,
            next_segment=0,
            tail_segment=None,
        )
        report.partitions[p] = rep
        parts[p] = _Part(p, snapshots=st.snapshots, origin=st.first)
        nbytes[p] = st.log_bytes
    if not jdir.is_dir():
        jdir.mkdir()
        fsync_dir(config.data_dir)
    return out, report, parts, nbytes


def _load(
    config: Config, now_ms: int, stop_at: tuple[int, int] | None, collect: bool
) -> tuple[dict[int, _State], RecoveryReport]:
    data_dir = config.data_dir
    jdir = data_dir / JOURNAL_DIR
    max_frame = config.max_frame_bytes
    journal = RecoveryReport(-1)
    states: dict[int, _State] = {}
    segs = sorted(n for n, _ in report_segments(jdir)) if jdir.is_dir() else []
    for p in list_partitions(data_dir):
        st = states[p] = _State(p)
        _load_snapshot(st, partition_dir(data_dir, p), p, max_frame, bool(segs) and segs[0] != 1)
    sizes = {n: os.path.getsize(jdir / segment_name(n)) for n in segs}
    bad: tuple[int, int, bool] | None = None  # (segment, offset, torn)
    expected = segs[0] if segs else 1
    for i, number in enumerate(segs):
        if number != expected:
            journal.errors.append(
                f"journal segment {expected} is missing; stopping before {number}"
            )
            bad = (number, 0, False)
            break
        expected = number + 1
        last = i == len(segs) - 1
        buf = read_file(jdir / segment_name(number))
        if buf[:MAGIC_LEN] != JOURNAL_MAGIC:
            torn = last and len(buf) < MAGIC_LEN and JOURNAL_MAGIC.startswith(buf)
            journal.errors.append(f"{segment_name(number)}: bad magic")
            bad = (number, 0, torn)
            break
        scan = FrameScan(buf, MAGIC_LEN, max_frame)
        if stop_at is not None and stop_at[0] == number:
            scan.end = stop_at[1]
        try:
            _replay(scan, number, states, now_ms, collect)
        except _BadFrame as exc:
            # undecodable, or an invalid record in a frame whose checksum was fine: replay
            # again stopping before that frame (other partitions' records of it and of
            # later frames may already be applied)
            error = f"{segment_name(number)}: offset {exc.offset}: {exc}"
            raise _Restart((number, exc.offset), error) from None
        if stop_at is not None and stop_at[0] == number:
            bad = (number, stop_at[1], False)
            break
        if scan.error is not None:
            journal.errors.append(f"{segment_name(number)}: {scan.error}")
            bad = (number, scan.offset, scan.torn and last)
            break
    if bad is not None:
        _cut(jdir, segs, sizes, bad, states, journal, max_frame)
    return states, journal


def _load_snapshot(st: _State, pdir: Path, p: int, max_frame: int, trimmed: bool) -> None:
    rep = st.report
    _, snaps, tmps = list_files(pdir)
    for name in tmps:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pdir / name)
    loaded: LoadedSnapshot | None = None
    had = bool(snaps)
    for start in reversed(snaps):
        name = snapshot_name(start)
        try:
            loaded = load_snapshot(pdir / name, p, max_frame)
            break
        except CorruptSnapshot as exc:
            rep.errors.append(f"snapshot {exc}; falling back")
            quarantine(pdir, name, rep)
            snaps = [s for s in snaps if s != start]
    st.snapshots = snaps
    if loaded is not None:
        st.maps = loaded.maps  # type: ignore[assignment]
        st.base = loaded.seq
        st.start = loaded.start_segment
        rep.snapshot = snapshot_name(st.start)
        rep.snapshot_seq = st.base
        rep.snapshot_records = loaded.records
    elif had and trimmed:
        rep.history_incomplete = True
        rep.errors.append(
            "no valid snapshot and the journal's older segments are gone: "
            "records before them are lost"
        )


class _BadFrame(Exception):
    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset


def _replay(
    scan: FrameScan, number: int, states: dict[int, _State], now_ms: int, collect: bool
) -> None:
    """Apply every good frame of one journal segment to its partitions.

    Two passes, so that the records are applied one partition after the other as a
    per-partition log's were: the first only walks each frame's map and notes where each
    partition's array of records lies (msgpack's skip(), nothing decoded); the second
    decodes and applies each partition's arrays in journal order.  Applying a frame's
    records as they come touches hundreds of partitions' dicts per frame, and decoding a
    whole segment first leaves every decoded record cold by the time it is applied: both
    cost about 1.5x the CPU of the per-partition logs for 1M records; this way each
    record is applied right after it is decoded, into a dict that stays in cache.
    Raises _BadFrame with the offset of the first frame that holds an invalid record.
    """
    base_pos = number << SHIFT
    pending: dict[int, list[tuple[int, memoryview, float]]] = {}
    for payload in scan:
        at = base_pos | scan.frame_start
        try:
            up = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=len(payload))
            up.feed(payload)
            n = up.read_map_header()
            if not n:
                raise ValueError("no partition in the frame")
            share = len(payload) / n
            unpack, tell, skip = up.unpack, up.tell, up.skip
            for _ in range(n):
                p = unpack()
                if type(p) is not int or not 0 <= p < 10_000:
                    raise ValueError(f"partition {p!r:.20} out of range")
                start = tell()
                skip()
                got = pending.get(p)
                if got is None:
                    got = pending[p] = []
                got.append((at, payload[start : tell()], share))
            if up.tell() != len(payload):
                raise ValueError("bytes after the map of partitions")
        except Exception as exc:
            scan.reject(f"payload is not a map of partitions: {exc}")
            raise _BadFrame(scan.offset, f"payload is not a map of partitions: {exc}") from None
    _apply(pending, states, now_ms, collect)


RUN_GROUPS = 32
"""A partition's consecutive arrays of records (from as many frames) applied in one
call: one call per record array cost about 5k instructions, and the arrays of the
bench's 5,000-key batches hold 9-15 records; 32 of them (a few hundred KB decoded) stay
in cache until applied."""


def _apply(
    pending: dict[int, list[tuple[int, memoryview, float]]],
    states: dict[int, _State],
    now_ms: int,
    collect: bool,
) -> None:
    """Decode and apply each partition's records, in journal order within each.

    Up to RUN_GROUPS consecutive arrays of a partition are applied in one
    apply_records() call; when it finds a bad record, _locate() says which frame it
    came from (the checks do not depend on the state, so it replays the run's arrays
    one at a time on a scratch state)."""
    unpackb = msgpack.unpackb
    mask = (1 << SHIFT) - 1
    for p, groups in pending.items():
        st = states.get(p)
        if st is None:
            st = states[p] = _State(p)
        run: list[tuple[object, ...]] = []
        run_at: list[int] = []
        run_bytes = 0.0
        for at, blob, share in groups:
            try:
                recs = unpackb(blob, use_list=False, raw=False)
            except Exception as exc:
                _apply_run(st, run, run_at, run_bytes, now_ms)
                raise _BadFrame(at & mask, f"undecodable records: {exc}") from None
            if recs is None:  # dropped here: what came before is gone
                _apply_run(st, run, run_at, run_bytes, now_ms)
                run, run_at, run_bytes = [], [], 0.0
                if at >= st.start:
                    st.maps, st.base, st.prev, st.first, st.log_bytes = {}, 0, 0, None, 0.0
                    st.start = at
                    st.dropped = True
                continue
            if st.first is None:
                st.first = at
                st.dropped = False
            if at < st.start:  # before the partition's snapshot
                continue
            if type(recs) is not tuple or not recs:
                _apply_run(st, run, run_at, run_bytes, now_ms)
                raise _BadFrame(at & mask, "payload is not an array of records")
            run.append(recs)
            run_at.append(at)
            run_bytes += share
            if len(run) == RUN_GROUPS:
                _apply_run(st, run, run_at, run_bytes, now_ms)
                run, run_at, run_bytes = [], [], 0.0
        _apply_run(st, run, run_at, run_bytes, now_ms)
        # The cyclic GC is off while recovering (journal.recover). If the caller runs with
        # it on, scanning this partition's new objects now, while they are in cache,
        # untracks its entry tuples (atomic contents) at a fraction of what one
        # collection over millions costs when it is turned back on. A caller that keeps
        # it off (the member: grid/store/durability.py) frees the tuples once they are
        # in its store, before any collection sees them, so it skips this.
        if collect:
            gc.collect(0)


def _apply_run(
    st: _State, run: list[tuple[object, ...]], run_at: list[int], nbytes: float, now_ms: int
) -> None:
    """Apply a partition's consecutive arrays of records (journal positions `run_at`)."""
    if not run:
        return
    prev = st.prev
    recs = run[0] if len(run) == 1 else tuple(chain.from_iterable(run))
    try:
        st.prev, loaded, skipped = apply_records(
            recs,
            st.maps,  # type: ignore[arg-type]
            prev,
            st.base,
            now_ms,
        )
    except BadRecord as exc:
        _locate(run, run_at, prev, st.base, now_ms)
        raise _BadFrame(run_at[0] & ((1 << SHIFT) - 1), str(exc)) from None  # (not reached)
    rep = st.report
    rep.records_loaded += loaded
    rep.records_skipped += skipped
    st.log_bytes += nbytes


def _locate(
    run: list[tuple[object, ...]], run_at: list[int], prev: int, base: int, now_ms: int
) -> None:
    """Raise _BadFrame for the first array of the run holding a bad record."""
    scratch: dict[str, dict[bytes, Entry]] = {}
    mask = (1 << SHIFT) - 1
    for recs, at in zip(run, run_at, strict=True):
        try:
            prev, _, _ = apply_records(recs, scratch, prev, base, now_ms)
        except BadRecord as exc:
            raise _BadFrame(at & mask, str(exc)) from None


def _cut(
    jdir: Path,
    segs: list[int],
    sizes: dict[int, int],
    bad: tuple[int, int, bool],
    states: dict[int, _State],
    journal: RecoveryReport,
    max_frame: int,
) -> None:
    """Cut the journal at its first bad frame; count what is cut, keep damage aside."""
    number, offset, torn = bad
    later = [s for s in segs if s > number]
    journal.frames_dropped += 1
    journal.bytes_truncated += sizes[number] - offset + sum(sizes[s] for s in later)
    dropped: dict[int, int] = {}
    if not torn:
        path = jdir / segment_name(number)
        _count_records(read_file(path)[max(offset, MAGIC_LEN) :], max_frame, dropped)
        for s in later:
            _count_records(read_file(jdir / segment_name(s))[MAGIC_LEN:], max_frame, dropped)
    for p, n in dropped.items():
        st = states.get(p)
        if st is not None:
            st.report.records_dropped += n
            st.report.errors.append(f"{n} records cut off with the journal's damaged tail")
        journal.records_dropped += n
    path = jdir / segment_name(number)
    if offset < MAGIC_LEN:
        if torn:
            os.unlink(path)
        else:
            quarantine(jdir, segment_name(number), journal)
    else:
        if not torn:
            save_tail(path, offset, journal)
        with open(path, "r+b") as f:
            f.truncate(offset)
            os.fsync(f.fileno())
    for s in later:
        quarantine(jdir, segment_name(s), journal)
    fsync_dir(jdir)


def _count_records(buf: bytes, max_frame: int, into: dict[int, int]) -> None:
    """Best effort: the records per partition in frames that still decode, skipping a
    frame whose payload is damaged but whose header checks (its length is right)."""
    off = 0
    mv = memoryview(buf)
    while off + HEADER_LEN <= len(buf):
        scan = FrameScan(buf, off, max_frame)
        for payload in scan:
            try:
                groups = msgpack.unpackb(payload, use_list=False, raw=False, strict_map_key=False)
            except Exception:
                continue
            if type(groups) is dict:
                for p, recs in groups.items():
                    if type(p) is int and type(recs) is tuple:
                        into[p] = into.get(p, 0) + len(recs)
        if scan.error is None or scan.torn:
            return
        length = int.from_bytes(mv[scan.offset : scan.offset + 4], "little")
        if "payload checksum" not in scan.error or length <= 0:
            return  # a damaged header: frame boundaries after it are unknown
        off = scan.offset + HEADER_LEN + length


# ---- migration from the per-partition layout ---------------------------------------------


def _is_legacy(pdir: Path) -> bool:
    segs, snaps, _ = list_files(pdir)
    return bool(segs) or any(s < 1 << SHIFT for s in snaps)


def _migrate(config: Config, now_ms: int) -> MemberRecoveryReport | None:
    """Convert a data dir of the per-partition layout (earlier builds) to the journal's:
    each partition's state, recovered by the old rules, becomes a reset snapshot.
    Returns the old layout's recovery report, None if there was nothing to convert."""
    data_dir = config.data_dir
    done = data_dir / MIGRATED
    if done.is_dir():  # a crash after the commit point: finish moving
        _finish_migration(data_dir)
        return MemberRecoveryReport()
    work = data_dir / MIGRATING
    if work.exists():  # a crash before the commit point: start again
        shutil.rmtree(work)
    if (data_dir / JOURNAL_DIR).is_dir():
        return None
    legacy = [p for p in list_partitions(data_dir) if _is_legacy(partition_dir(data_dir, p))]
    if not legacy:
        return None
    states, report = recover_all(
        data_dir, now_ms, max_frame_bytes=config.max_frame_bytes, partitions=legacy
    )
    work.mkdir()
    start = position(1, 0)
    for p, st in states.items():
        pdir = partition_dir(work, p)
        pdir.mkdir()
        _write_snapshot(
            pdir,
            p,
            st.seq,
            start,
            _state_records(st.maps, st.seq),
            reset=True,
            frame_target_bytes=config.frame_target_bytes,
            max_frame_bytes=config.max_frame_bytes,
        )
    fsync_dir(work)
    os.rename(work, done)  # the commit point
    fsync_dir(data_dir)
    _finish_migration(data_dir)
    return report


def _state_records(
    maps: Mapping[str, Mapping[bytes, tuple[object, ...]]], seq: int
) -> Iterator[tuple[object, ...]]:
    for name, entries in maps.items():
        for key, (value, ts, member, expiry, idle) in entries.items():
            if value is None:  # a tombstone, or the map's clear marker (key b"")
                yield (seq, _DELETE, name, key, None, ts, member, 0, 0)
            else:
                yield (seq, _PUT, name, key, value, ts, member, expiry, idle)


def _finish_migration(data_dir: Path) -> None:
    """Move the converted partitions over the old ones (idempotent: a crash midway
    redoes what is left).  Files an old recovery set aside (*.corrupt) are kept."""
    done = data_dir / MIGRATED
    for name in sorted(os.listdir(done)):
        target = data_dir / name
        if target.exists():
            for f in target.iterdir():
                if ".corrupt" in f.name:
                    os.replace(f, done / name / f.name)
            shutil.rmtree(target)
        os.rename(done / name, target)
    (data_dir / JOURNAL_DIR).mkdir(exist_ok=True)
    os.rmdir(done)
    fsync_dir(data_dir)
