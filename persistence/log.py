"""The member's log: per-partition append-only segments, group commit, snapshots.

This is the one object the member runtime talks to.  Its life:

    log = Log.open(Config(data_dir))          # lock the directory, check it is writable
    states, report = log.recover(now_ms)      # load every partition found on disk
    ...
    token = log.append(partition, records)    # one pwrite of one frame per batch
    if log.sync_due():                        # the fsync policy, in one question
        durable = log.sync()                  # may run in a worker thread
    ...
    log.close()                               # fsync everything, release the lock

Group commit.  append() writes the batch to the kernel (so a killed process loses
nothing) and returns a token, an integer that increases with every append across all
partitions.  sync() flushes every segment written since the previous sync() with one
fsync per dirty segment (plus the directories of newly created segments) and returns
the highest token that is now durable.  Under `always` the runtime answers the clients
of a batch only once a sync() has returned a token at least as high as the batch's.
sync() is built to run in a worker thread (asyncio.to_thread) while the event loop
keeps appending: it swaps the dirty set under a lock held for microseconds, and the
fsyncs happen on dup'ed descriptors outside any lock the appender needs (segment.py).
Everything appended while one sync() runs is the next group.  So under load the fsync
rate stays one per segment per group, however many clients wait on it.

Per-partition files.  The design card puts each partition's log in its own directory,
which is what makes migration (ship one directory's worth), dropping a partition (rm
-r) and per-partition damage containment simple.  The price is one fsync per dirty
partition per group instead of one per member; the bench measures it.  One descriptor
stays open per partition written since startup (at most 271 by default).

Snapshots without stopping writes.  The runtime copies a partition's state at some seq
on the event loop (shallow dict copies: cheap), then

    job = log.begin_snapshot(partition, seq)  # loop thread, microseconds: roll segment
    job.write(records)                        # worker thread: tmp, fsync, rename, fsync dir
    log.end_snapshot(job)                     # loop thread: retire superseded files

or, instead of job.write(), job.writer() to pack the records in slices on the loop and
write them in a worker thread (snapshot.py's SnapshotWriter; grid/store/durability.py).

begin_snapshot() only closes the current segment for appends: every later record lands
in a new segment whose number the snapshot records as its start_segment, so "the
segments before the snapshot" are whole files that can be deleted without rewriting
anything.  install() is the variant for state received from elsewhere (migration):
it replaces the partition's history.

Threads: every method runs on one thread (the event loop), except sync() and
SnapshotJob.write(), which may run in worker threads concurrently with it (at most one
sync() at a time; a lock enforces it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from persistence.config import Config, FsyncPolicy
from persistence.errors import (
    DiskFull,
    InvalidRecord,
    PersistenceError,
    RecoveryRequired,
)
from persistence.frame import encode_frames
from persistence.layout import (
    check_writable,
    fsync_dir,
    list_files,
    list_partitions,
    partition_dir,
    segment_name,
    snapshot_name,
)
from persistence.lock import DirLock
from persistence.record import check_batch
from persistence.recovery import MemberRecoveryReport, PartitionRecovery, recover_all
from persistence.segment import SegmentWriter
from persistence.snapshot import SnapshotInfo, SnapshotWriter, write_snapshot


def should_snapshot(log_bytes: int, live_bytes: int, ratio: float = 2.0) -> bool:
    """Whether a partition's log has grown enough past its live data to snapshot it.

    The log since the last snapshot is what recovery replays and what disk holds beyond
    the live data; snapshotting when it exceeds `ratio` x live keeps both within
    (1 + ratio) x live while writing each live byte at most once per `ratio` bytes
    appended.  A tiny floor avoids snapshotting near-empty partitions over and over.
    """
    return log_bytes > 1024 * 1024 and log_bytes > ratio * live_bytes


@dataclass(slots=True)
class _Partition:
    number: int
    dir: Path
    ready: bool
    """Recovered (or new): we know its last seq and where its log continues."""
    last_seq: int = 0
    segments: dict[int, int] = field(default_factory=dict)
    snapshots: list[int] = field(default_factory=list)
    next_segment: int = 1
    tail: int | None = None
    """An existing segment (from recovery) the next append reopens."""
    active: SegmentWriter | None = None
    broken: bool = False
    """A sync() failed and cut records off the log; only a snapshot repairs it."""


@dataclass(slots=True)
class SnapshotJob:
    """A snapshot begun on the loop thread; write() it anywhere, then end_snapshot()."""

    partition: int
    seq: int
    start_segment: int
    dir: Path
    config: Config
    reset: bool = False
    info: SnapshotInfo | None = None

    def write(self, records: Iterable[tuple[object, ...]]) -> SnapshotInfo:
        """Write the point-in-time records (PUT/INCR/DELETE, seq <= self.seq) durably.

        Safe in a worker thread: touches only this snapshot's own files.
        """
        self.info = write_snapshot(
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
        """The alternative to write(): the snapshot a slice at a time (snapshot.py).  Its
        commit() completes the job; then call end_snapshot()."""
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


class Log:
    """One member's persistent partitions.  See the module docstring for the protocol."""

    def __init__(self, config: Config, lock: DirLock) -> None:
        self.config = config
        self._lock_file = lock
        self._parts: dict[int, _Partition] = {}
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._token = 0
        self._durable = 0
        self._dirty: dict[int, SegmentWriter] = {}
        self._dirty_dirs: dict[Path, None] = {}
        self._last_sync = time.monotonic()
        self._closed = False

    # -- opening and recovery ----------------------------------------------------------

    @classmethod
    def open(cls, config: Config) -> Log:
        """Lock the data directory (DataDirLocked if taken) and check it is writable."""
        lock = DirLock(config.data_dir)
        lock.acquire()
        try:
            check_writable(config.data_dir)
            log = cls(config, lock)
            for p in list_partitions(config.data_dir):
                log._parts[p] = _Partition(p, partition_dir(config.data_dir, p), ready=False)
        except BaseException:
            lock.release()
            raise
        return log

    def recover(
        self, now_ms: int, partitions: Sequence[int] | None = None
    ) -> tuple[dict[int, PartitionRecovery], MemberRecoveryReport]:
        """Recover the partitions on disk (or the given ones) and prepare their logs.

        Returns each partition's live state (PartitionRecovery.maps) and a report.  Must
        run before appending to a partition that has data on disk.
        """
        todo = [
            p
            for p in (partitions if partitions is not None else list(self._parts))
            if p in self._parts and not self._parts[p].ready
        ]
        results, report = recover_all(
            self.config.data_dir,
            now_ms,
            max_frame_bytes=self.config.max_frame_bytes,
            partitions=todo,
        )
        for p, rec in results.items():
            part = self._parts[p]
            part.ready = True
            part.last_seq = rec.seq
            part.segments = dict(rec.segments)
            part.snapshots = list(rec.snapshots)
            part.next_segment = rec.next_segment
            part.tail = rec.tail_segment
        return results, report

    # -- appending and group commit ----------------------------------------------------

    def append(
        self, partition: int, records: Sequence[tuple[object, ...]], trusted: bool = False
    ) -> int:
        """Append a batch (seqs strictly increasing, above the partition's last) as one
        write; return its group-commit token.

        Raises InvalidRecord (nothing written), DiskFull (nothing written; retry when
        space returns), RecoveryRequired.  The batch is in the kernel when this returns:
        it survives the process dying, and a power cut once sync() covers its token.

        `trusted`: the records come from a writer that builds them from typed state (the
        member's store), so only their sequence numbers are checked, not every field's
        type: the full check costs more than the write itself on the member's hot path.
        """
        part = self._ready(partition)
        if part.broken:
            raise DiskFull(
                f"partition {partition} lost unsynced records to a failed sync; "
                "take a snapshot to persist it again",
                [partition],
            )
        if trusted:
            if not records or records[0][0] <= part.last_seq:  # type: ignore[operator]
                raise InvalidRecord(f"batch does not continue after seq {part.last_seq}")
            last = records[-1][0]  # type: ignore[assignment]
        else:
            last = check_batch(records, part.last_seq)
        data = encode_frames(records, self.config.max_frame_bytes)
        seg = part.active
        if seg is None:
            seg = self._open_active(part)
        if seg.has_records and seg.size + len(data) > self.config.segment_bytes:
            self._retire(part)
            seg = self._open_active(part)
        seg.write(data)
        part.segments[seg.number] = seg.size
        part.last_seq = last
        with self._lock:
            self._token += 1
            self._dirty[id(seg)] = seg
            return self._token

    def sync(self, executor: Executor | None = None) -> int:
        """fsync everything appended so far; return the highest durable token.

        Thread-safe against append() (run it in a worker thread); one at a time.  With
        an `executor` (a thread pool the runtime owns) the per-segment fsyncs run in
        parallel: the filesystem journal then commits them together, 2.6x faster for
        16 dirty partitions on our disks (docs/persistence.md).  On DiskFull/OSError the
        affected segments are cut back to their durable prefix and their partitions
        refuse appends until snapshotted: treat every token not yet acknowledged as
        failed.
        """
        with self._sync_lock:
            with self._lock:
                segs = list(self._dirty.values())
                dirs = list(self._dirty_dirs)
                self._dirty = {}
                self._dirty_dirs = {}
                upto = self._token
            failed: list[int] = []
            first_error: OSError | None = None
            if executor is not None and len(segs) > 1:
                outcomes = list(executor.map(_sync_one, segs))
            else:
                outcomes = [_sync_one(seg) for seg in segs]
            for seg, exc in zip(segs, outcomes, strict=True):
                if exc is not None:
                    failed.append(seg.partition)
                    if not isinstance(exc, DiskFull) and first_error is None:
                        first_error = exc
            for d in dirs:
                with contextlib.suppress(FileNotFoundError):  # a dropped partition
                    fsync_dir(d)
            self._last_sync = time.monotonic()
            if failed:
                for p in failed:
                    if p in self._parts:
                        self._parts[p].broken = True
                if first_error is not None and first_error.errno not in (
                    errno.ENOSPC,
                    errno.EDQUOT,
                ):
                    raise first_error
                raise DiskFull(f"fsync failed for partitions {sorted(set(failed))}", failed)
            self._durable = max(self._durable, upto)
            return upto

    def sync_due(self, now: float | None = None) -> bool:
        """The fsync policy as one question: should the runtime call sync() now?

        always: whenever something is pending.  interval: when something is pending and
        fsync_interval_s passed since the last sync.  never: no.
        """
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
        """Start a snapshot of the state at `seq`, which must be the partition's last
        appended seq (copy the state and call this with no append in between).

        Only rolls the segment: microseconds, on the loop thread.
        """
        part = self._ready(partition)
        if seq != part.last_seq:
            raise InvalidRecord(
                f"snapshot seq {seq} is not partition {partition}'s last seq {part.last_seq}"
            )
        if part.active is not None and not part.active.has_records:
            start = part.active.number
        else:
            self._retire(part)
            part.tail = None
            start = part.next_segment
        return SnapshotJob(partition, seq, start, part.dir, self.config)

    def end_snapshot(self, job: SnapshotJob) -> None:
        """Adopt a written snapshot: drop files older than the kept snapshots need."""
        if job.info is None:
            raise PersistenceError("end_snapshot() before the job's write() finished")
        part = self._ready(job.partition)
        if job.start_segment not in part.snapshots:
            part.snapshots = sorted([*part.snapshots, job.start_segment])
        part.broken = False
        keep = part.snapshots[-self.config.keep_snapshots :]
        for start in part.snapshots[: -self.config.keep_snapshots]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part.dir / snapshot_name(start))
        part.snapshots = keep
        if len(keep) < self.config.keep_snapshots:
            return  # the log from its start is the fallback for the oldest snapshot
        for number in [n for n in part.segments if n < keep[0]]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part.dir / segment_name(number))
            del part.segments[number]

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

        For state received from another member (migration, catch-up of a backup that
        diverged): the next append may use any seq above `seq`, even one this member
        logged before.  Writes the snapshot before touching the old files, so a crash
        leaves either the old history or the new state.  Do not append to the partition
        while it runs (it may run in a worker thread).
        """
        part = self._parts.get(partition)
        if part is None:
            part = self._new_partition(partition)
        if not part.ready:
            segs, snaps, _ = list_files(part.dir)
            part.next_segment = max([*segs, *snaps, 0]) + 1
            part.segments = {s: 0 for s in segs}
            part.snapshots = snaps
            part.ready = True
        self._retire(part)
        part.tail = None
        start = part.next_segment
        job = SnapshotJob(partition, seq, start, part.dir, self.config, reset=True)
        info = job.write(records)
        for s in part.snapshots:
            if s != start:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(part.dir / snapshot_name(s))
        for n in part.segments:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part.dir / segment_name(n))
        part.snapshots = [start]
        part.segments = {}
        part.last_seq = seq
        part.broken = False
        return info

    # -- partitions --------------------------------------------------------------------

    def partitions(self) -> list[int]:
        """Partitions with a directory (recovered or not)."""
        return sorted(self._parts)

    def last_seq(self, partition: int) -> int:
        part = self._parts.get(partition)
        return part.last_seq if part is not None else 0

    def log_bytes(self, partition: int) -> int:
        """Bytes of log recovery would replay after the newest snapshot (for
        should_snapshot())."""
        part = self._parts.get(partition)
        if part is None:
            return 0
        since = part.snapshots[-1] if part.snapshots else 0
        return sum(size for n, size in part.segments.items() if n >= since)

    def drop(self, partition: int) -> None:
        """Delete a partition this member no longer holds (after migrating it away)."""
        part = self._parts.pop(partition, None)
        if part is None:
            return
        if part.active is not None:
            part.active.close()
            part.active = None
        shutil.rmtree(part.dir, ignore_errors=True)
        fsync_dir(self.config.data_dir)

    def close(self) -> None:
        """fsync everything (whatever the policy: a clean stop loses nothing), close
        every descriptor and release the directory lock."""
        if self._closed:
            return
        try:
            self.sync()
        finally:
            self._closed = True
            for part in self._parts.values():
                if part.active is not None:
                    part.active.close()
                    part.active = None
            with self._lock:
                for seg in self._dirty.values():
                    seg.close()
                self._dirty = {}
            self._lock_file.release()

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def backup_files(self) -> list[tuple[str, int]]:
        """The files (relative to data_dir) and byte lengths that make up a consistent
        point-in-time copy right now: per partition, the newest snapshot and every
        segment after it, cut at their current sizes.  Calls sync() first."""
        self.sync()
        out: list[tuple[str, int]] = []
        for _, part in sorted(self._parts.items()):
            rel = part.dir.name
            if not part.ready:
                segs, snaps, _ = list_files(part.dir)
                sizes = {n: os.path.getsize(part.dir / segment_name(n)) for n in segs}
            else:
                snaps, sizes = part.snapshots, part.segments
            since = snaps[-1] if snaps else 0
            if snaps:
                name = snapshot_name(since)
                out.append((f"{rel}/{name}", os.path.getsize(part.dir / name)))
            for n, size in sorted(sizes.items()):
                if n >= since:
                    out.append((f"{rel}/{segment_name(n)}", size))
        return out

    # -- internals ---------------------------------------------------------------------

    def _ready(self, partition: int) -> _Partition:
        if self._closed:
            raise PersistenceError("log is closed")
        part = self._parts.get(partition)
        if part is None:
            return self._new_partition(partition)
        if not part.ready:
            raise RecoveryRequired(
                f"partition {partition} has data on disk; call recover() before using it"
            )
        return part

    def _new_partition(self, partition: int) -> _Partition:
        if not 0 <= partition < 10_000:
            raise ValueError(f"partition {partition} out of range")
        pdir = partition_dir(self.config.data_dir, partition)
        try:
            pdir.mkdir(exist_ok=True)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(f"creating {pdir}: {exc}", [partition]) from None
            raise
        part = _Partition(partition, pdir, ready=True)
        self._parts[partition] = part
        with self._lock:
            self._dirty_dirs[self.config.data_dir] = None
        return part

    def _open_active(self, part: _Partition) -> SegmentWriter:
        if part.tail is not None:
            number, part.tail = part.tail, None
            seg = SegmentWriter.reopen(
                part.number, number, part.dir / segment_name(number), part.segments[number]
            )
        else:
            number = part.next_segment
            seg = SegmentWriter.create(part.number, number, part.dir / segment_name(number))
            part.next_segment = number + 1
            with self._lock:
                self._dirty_dirs[part.dir] = None
                self._dirty[id(seg)] = seg
        part.segments[number] = seg.size
        part.active = seg
        return seg

    def _retire(self, part: _Partition) -> None:
        seg, part.active = part.active, None
        if seg is not None:
            seg.retire(close_now=self.config.fsync is FsyncPolicy.NEVER)


def _sync_one(seg: SegmentWriter) -> OSError | DiskFull | None:
    try:
        seg.sync()
    except (DiskFull, OSError) as exc:
        return exc
    return None
