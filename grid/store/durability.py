"""Durability: the member's store on disk, through the persistence library.

How a write becomes durable
===========================

The store reports every change it applies to a *sink* (grid/store/store.py),
under the store lock and in order: puts and counter results as their new
state, deletes as tombstones, TTL changes as puts with the new expiry,
evictions and expirations as removals, clears per partition. This module is
that sink. It buffers the changes per partition, each with its partition's
next sequence number, and `flush()` (called at the end of every batch, still
under the lock) appends them all to the member's journal as one frame: one
write syscall per batch, however many partitions and operations it touched
(persistence/journal.py).

When the client's answer waits for the disk depends on `fsync`:

- always: the batch's reply is held until an fsync covers its log token. One
  background task runs fsync after fsync in a worker thread; everything
  appended while one fsync runs is covered by the next (group commit), so 64
  concurrent writers share a handful of fsyncs, not 64.
- interval (default): the same task fsyncs once a second. kill -9 loses
  nothing (every append is in the kernel before the reply); a power cut loses
  at most the last second.
- never: the kernel writes back when it likes; a clean stop still fsyncs.

Snapshots: every few seconds the member looks for partitions whose records in
the journal are over `snapshot_ratio` times their share of live data, and,
when the journal itself outgrows `keep_snapshots` x `snapshot_ratio` x the
live data + 2 segments, for the partitions that keep its oldest segment on
disk (an idle partition's old snapshot would keep every segment after it);
a journal segment is deleted once every partition's snapshots cover it. It
copies such a
partition's dicts under the lock (shallow: microseconds), notes the journal's
position, and
writes the snapshot a slice at a time while writes go on, so that it never
holds the loop or the GIL for long (grid/store/disk_snapshot.py). The
partition's share of live data is the member's live bytes / P: keys spread
evenly over partitions by hash, and an exact per-partition count would cost
every write.

Disk full: an append or fsync that fails with ENOSPC marks the member
`disk_full`. Writes are then refused with UNAVAILABLE before they touch
memory (reads go on); the failed batch's changes are applied in memory but
not on disk (a journal append is all or nothing, so every partition of the
batch), so the affected partitions are re-persisted by a snapshot as
soon as space returns (a repair task retries every second), and then writes
resume. Nothing on disk is corrupted: the library cuts a failed append back
to the last whole frame.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import persistence
from grid import logs
from grid.config import Config
from grid.errors import Unavailable
from grid.store import Store, disk_snapshot
from grid.store.store import CLEAR, DELETE, DROPPED, INCR, PUT
from persistence import DiskFull, FsyncPolicy, Journal, Op, should_snapshot

log = logs.get("grid.store.durability")

SNAPSHOT_CHECK_S = 2.0
MIN_SNAPSHOT_LOG_BYTES = 1 << 20  # never snapshot a partition for less than 1 MiB of log
SYNC_THREADS = 2  # a roll leaves two journal segments to fsync: in parallel
CLEARED = int(Op.CLEARED)  # a clear as journaled (a bare CLEAR is a dropped copy)
CLIENT_WRITES = frozenset({PUT, DELETE, INCR, CLEARED})
DISK_FULL_WRITE = (
    "disk full: this write is applied in memory but not on disk; writes are refused "
    "until space returns"
)


FSYNC_BUCKETS_S: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
"""Upper bounds of the fsync time histogram (a loaded fsync here: 0.2-10 ms), then +Inf."""


@dataclass
class Counters:
    snapshots: int = 0
    fsyncs: int = 0
    last_error: str = ""
    fsync_counts: list[int] = field(default_factory=lambda: [0] * (len(FSYNC_BUCKETS_S) + 1))
    """fsync rounds by duration (FSYNC_BUCKETS_S, then +Inf): the metrics' histogram."""
    fsync_seconds: float = 0.0


class Durability:
    def __init__(self, config: Config, store: Store, clock: Callable[[], int]) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.policy = FsyncPolicy(config.fsync)
        self.log = Journal.open(
            persistence.Config(
                data_dir=Path(config.data_dir),
                fsync=self.policy,
                snapshot_ratio=config.snapshot_ratio,
                segment_bytes=config.journal_segment_mb * 1024 * 1024,
            )
        )
        self._pending: dict[int, list[tuple[Any, ...]]] = {}
        self._seq: dict[int, int] = {}
        self._needs_snapshot: set[int] = set()  # partitions whose disk state is behind
        # partitions that had disk trouble since start: changes applied while one was
        # re-persisted may be missing on disk, so no newer follow position is saved
        self.troubled: set[int] = set()
        self.disk_full = False
        self.write_failed = False  # the last flush lost a client's write (disk full)
        self.counters = Counters()
        self.report: persistence.MemberRecoveryReport | None = None
        self.entries_recovered = 0
        self.start_s = 0.0
        """Seconds of recover(): the journal's recovery and the load into the store."""
        self._pool = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="grid-fsync")
        self._snapshot_io = ThreadPoolExecutor(1, thread_name_prefix="grid-snapshot")
        self._snapshot_lock = asyncio.Lock()
        self._durable_changed: asyncio.Event | None = None
        self._work = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._tasks: list[asyncio.Task[None]] = []

    # ---- start: recovery ---------------------------------------------------------------------
    def recover(self) -> persistence.MemberRecoveryReport:
        """Load every partition on disk into the store, then start journaling.

        The cyclic GC stays off from the journal's recovery to the end of the load: the
        recovered tuples (one per key) are freed once their entries are in the store,
        before any collection could scan them, and the store's records are bytes, which
        it never scans (the member then freezes what is left: GC_FREEZE_EVERY_S)."""
        t0 = time.perf_counter()
        store = self.store
        now = self.clock()
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            states, report = self.log.recover(now)
            store.sink = self._record  # evictions while loading are logged like any other
            store.write_gate = self.check_writable
            loaded = self._load(states, now)
            states.clear()  # the recovered tuples go now, with the GC still off
        finally:
            if gc_was_enabled:
                gc.enable()
        self.flush()
        self.report = report
        self.entries_recovered = loaded
        if store.restored_over_limit:
            log.warning("recovered data exceeds max_memory and eviction_policy frees "
                        "nothing: loaded all of it; writes are refused until it is under",
                        entries_over=store.restored_over_limit, used=store.used,
                        max_memory=store.max_memory,
                        eviction_policy=store.config.eviction_policy)  # fmt: skip
        self.start_s = time.perf_counter() - t0
        log.info(
            "recovery done",
            data_dir=self.config.data_dir,
            entries=loaded,
            seconds=round(self.start_s, 3),
            summary=report.summary(),
            problems=report.problems or None,
        )
        return report

    def _load(self, states: dict[int, persistence.PartitionRecovery], now: int) -> int:
        store = self.store
        loaded = 0
        for p, state in states.items():
            self._seq[p] = state.seq
            for name, entries in state.maps.items():
                loaded += store.restore_many(store.map(name), p, entries, now)
        return loaded

    def start(self) -> None:
        """Background work: fsync (always/interval), snapshots, disk-full repair."""
        self._durable_changed = asyncio.Event()
        if self.policy is FsyncPolicy.ALWAYS:  # interval syncs on a timer: no wake-ups
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
        if self.policy is not FsyncPolicy.NEVER:
            self._tasks.append(asyncio.create_task(self._sync_loop(), name="grid-fsync"))
        self._tasks.append(asyncio.create_task(self._snapshot_loop(), name="grid-snapshot"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        with self.store.lock:
            self.flush()
            if self.disk_full:
                log.error("stopping with the disk full: the last writes are not on disk")
            try:
                self.log.close()  # fsyncs everything, whatever the policy
            except OSError as e:
                log.error("closing the log failed", error=str(e))
        self._pool.shutdown(wait=True)
        self._snapshot_io.shutdown(wait=True)

    # ---- the write path ----------------------------------------------------------------------
    def _record(
        self,
        partition: int,
        op: int,
        map_name: str,
        key: bytes,
        value: bytes | None,
        ts: int,
        member: int,
        expire_at: int,
        max_idle: int,
    ) -> None:
        """The store's sink: buffer one change (under the store lock)."""
        # Sequence numbers are given here, under the lock and in the order of changes, so
        # the record is built once. A partition whose append fails keeps counting: it is
        # rewritten by install() at its current seq, which may be any number.
        seq = self._seq[partition] = self._seq.get(partition, 0) + 1
        pending = self._pending.get(partition)
        if pending is None:
            pending = self._pending[partition] = []
        if op == CLEAR:  # a clear: the entries go, its marker stays (Op.CLEARED)
            op = CLEARED
        elif op == DROPPED:  # a copy forgotten: its entries go, no marker stays
            op = CLEAR
        pending.append((seq, op, map_name, key, value, ts, member, expire_at, max_idle))

    def check_writable(self) -> None:
        """Refuse a write before it touches memory while the disk is full."""
        if self.disk_full:
            raise Unavailable(
                "disk full: writes are refused until space returns (reads go on); "
                f"data_dir {self.config.data_dir}"
            )

    def flush(self) -> int:
        """Append what the store changed since the last flush; return the log token of
        this flush's appends (0 if it appended nothing).

        Caller holds the store lock, so sequence numbers follow the order of changes.
        Never raises: when an append fails (disk full), `write_failed` says whether a
        client's write was among the changes lost (removals by expiry or eviction are
        not a client's write); those partitions are re-persisted by a snapshot from
        memory once space returns.
        """
        self.write_failed = False
        pending = self._pending
        if not pending:
            return 0
        self._pending = {}
        blocked = self._needs_snapshot
        batch = {p: c for p, c in pending.items() if p not in blocked} if blocked else pending
        lost = [c for p, c in pending.items() if p in blocked] if blocked else []
        token = 0
        if batch:
            try:
                token = self.log.append(batch, trusted=True)
            except DiskFull:
                self._disk_trouble(list(batch), "append failed: no space left on the device")
                lost = list(pending.values())
            except OSError as e:  # EIO and friends: the same treatment, louder
                log.error("journal append failed", partitions=len(batch), error=str(e))
                self._disk_trouble(list(batch), f"append failed: {e}")
                lost = list(pending.values())
        self.write_failed = any(c[1] in CLIENT_WRITES for changes in lost for c in changes)
        if token and self._loop is not None:
            self._wake()
        return token

    def _wake(self) -> None:
        """Tell the fsync task there is work (under `always`); safe from any thread."""
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            self._work.set()
        else:  # an embedded caller's thread: asyncio objects belong to the loop's
            self._loop.call_soon_threadsafe(self._work.set)

    def _disk_trouble(self, partitions: list[int], why: str) -> None:
        if not self.disk_full:
            log.error("disk full: refusing writes", data_dir=self.config.data_dir, why=why)
        self.disk_full = True
        self.counters.last_error = why
        self._needs_snapshot.update(partitions)
        self.troubled.update(partitions)

    @property
    def holds_replies(self) -> bool:
        return self.policy is FsyncPolicy.ALWAYS

    async def wait_durable(self, token: int) -> None:
        """Under `always`, return once an fsync covers `token` (immediately otherwise)."""
        if self.policy is FsyncPolicy.ALWAYS:
            await self._fsynced(token)

    async def wait_synced(self, token: int) -> None:
        """Until an fsync covers `token` under `always` or `interval` (then the next timed
        one); at once under `never`, which promises nothing past the kernel."""
        if self.policy is not FsyncPolicy.NEVER:
            await self._fsynced(token)

    async def _fsynced(self, token: int) -> None:
        assert self._durable_changed is not None
        while self.log.durable_token < token:
            if self.disk_full:
                raise Unavailable("disk full: the write could not be made durable")
            if self._loop is not None:  # `always` syncs on demand; `interval` on its timer
                self._wake()
            await self._durable_changed.wait()

    def commit_blocking(self, token: int) -> None:
        """The same for embedded callers in other threads: fsync in the caller's thread."""
        if self.policy is FsyncPolicy.ALWAYS and self.log.durable_token < token:
            try:
                self.log.sync(self._pool)
            except (DiskFull, OSError) as e:
                raise Unavailable(f"disk full: the write could not be made durable ({e})") from e

    # ---- background work -----------------------------------------------------------------------
    async def _sync_loop(self) -> None:
        interval = self.policy is FsyncPolicy.INTERVAL
        assert self._durable_changed is not None
        while True:
            if interval:
                await asyncio.sleep(self.log.config.fsync_interval_s)
            else:
                await self._work.wait()
            self._work.clear()
            if self.log.durable_token >= self.log.token:
                continue
            try:
                started = time.perf_counter()
                await asyncio.to_thread(self.log.sync, self._pool)
                took = time.perf_counter() - started
                counters = self.counters
                counters.fsyncs += 1
                counters.fsync_counts[bisect_left(FSYNC_BUCKETS_S, took)] += 1
                counters.fsync_seconds += took
            except DiskFull as e:
                self._disk_trouble(list(e.partitions), f"fsync failed: {e}")
            except OSError as e:
                self._disk_trouble(self.log.partitions(), f"fsync failed: {e}")
            event, self._durable_changed = self._durable_changed, asyncio.Event()
            event.set()  # wake every waiter; they re-check their token

    async def _snapshot_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0 if self.disk_full else SNAPSHOT_CHECK_S)
            try:
                if self._needs_snapshot:
                    await self._repair()
                else:
                    await self.snapshot_due()
            except Exception as e:  # keep the loop alive; the next round retries
                log.exception("snapshot round failed", error=str(e))

    async def _repair(self) -> None:
        """Re-persist partitions whose changes did not reach the disk; then allow writes."""
        for p in sorted(self._needs_snapshot):
            try:
                await self.snapshot(p)
            except (DiskFull, OSError) as e:
                self.counters.last_error = f"still no space: {e}"
                return
            self._needs_snapshot.discard(p)
        if self.disk_full:
            log.info("disk has space again: writes resume", data_dir=self.config.data_dir)
        self.disk_full = False

    async def snapshot_due(self) -> int:
        """Snapshot every partition whose records in the journal outgrew its data, and,
        when the journal outgrew its bound, the partitions pinning its oldest segment;
        returns how many snapshots were taken."""
        share = self.store.used / self.store.partitions
        done: set[int] = set()
        for p in self.log.partitions():
            size = self.log.log_bytes(p)
            if size >= MIN_SNAPSHOT_LOG_BYTES and should_snapshot(
                size, int(share), self.config.snapshot_ratio
            ):
                await self.snapshot(p)
                done.add(p)
        if self.log.journal_bytes() > self.journal_bound():
            for p in self.log.pinning():
                if p not in done:
                    await self.snapshot(p)
                    done.add(p)
        return len(done)

    def journal_bound(self) -> int:
        """Journal bytes past which the partitions pinning its oldest segment are
        snapshotted: what per-partition logs held at most (keep_snapshots x
        snapshot_ratio x live data), plus two segments (the active one, and the oldest,
        deleted whole)."""
        cfg = self.log.config
        ratio = cfg.keep_snapshots * self.config.snapshot_ratio
        return int(ratio * self.store.used) + 2 * cfg.segment_bytes

    async def snapshot_all(self) -> tuple[int, int]:
        """Snapshot every partition that has data or a log; returns (partitions, records)."""
        partitions = sorted(
            set(self.log.partitions())
            | {p for rmap in self.store.maps.values() for p, part in enumerate(rmap.recs) if part}
        )
        records = 0
        for p in partitions:
            records += await self.snapshot(p)
        return len(partitions), records

    async def snapshot(self, p: int) -> int:
        """Copy partition p under the lock (shallow: microseconds), write it a slice at a
        time (grid/store/disk_snapshot.py); returns the number of records written.

        One snapshot at a time: the timer's and an operator's may overlap, and two of one
        partition begun with no append between them would share a file name."""
        async with self._snapshot_lock:
            store = self.store
            with store.lock:
                self.flush()
                seq = self._seq.get(p, 0)
                frozen = disk_snapshot.freeze(store, p)
                # A partition whose log lost records is rewritten from memory (install).
                job = None if p in self._needs_snapshot else self.log.begin_snapshot(p, seq)
            started = time.monotonic()
            if job is None:
                records = disk_snapshot.records(frozen, seq)
                loop = asyncio.get_running_loop()
                info = await loop.run_in_executor(
                    self._snapshot_io, self.log.install, p, seq, records
                )
            else:
                info = await disk_snapshot.write(frozen, seq, job.writer(), self._snapshot_io)
                self.log.end_snapshot(job)
        self.counters.snapshots += 1
        log.info(
            "snapshot written",
            partition=p,
            records=info.records,
            seq=seq,
            seconds=round(time.monotonic() - started, 3),
        )
        return info.records

    # ---- backup and stats ------------------------------------------------------------------------
    async def backup(self, dest: str) -> dict[str, Any]:
        with self.store.lock:
            self.flush()
        return await asyncio.to_thread(persistence.backup, self.log, Path(dest))

    def stats(self) -> dict[str, Any]:
        r = self.report
        return {
            "enabled": True,
            "data_dir": self.config.data_dir,
            "fsync": self.policy.value,
            "partitions_recovered": len(r.partitions) if r else 0,
            "records_loaded": r.records_loaded if r else 0,
            "records_skipped": r.total("records_skipped") if r else 0,
            "records_dropped": (r.total("frames_dropped") + r.total("records_expired")) if r else 0,
            "bytes_truncated": r.total("bytes_truncated") if r else 0,
            "recovery_s": r.duration_s if r else 0.0,
            "entries_recovered": self.entries_recovered,
            # what recovery would replay after the snapshots (the journal on disk also
            # holds what fallbacks need, and at least its active segment)
            "log_bytes": sum(self.log.log_bytes(p) for p in self.log.partitions()),
            "snapshots": self.counters.snapshots,
            "fsyncs": self.counters.fsyncs,
            "disk_full": self.disk_full,
            "last_error": self.counters.last_error,
        }


class DurableGuard:
    """The store lock for embedded maps of a member with a data_dir: on release it
    flushes the changes to the log and, under fsync=always, waits for the fsync in the
    caller's thread (after releasing the lock, so other threads go on meanwhile)."""

    __slots__ = ("_durability", "_lock")

    def __init__(self, lock: Any, durability: Durability) -> None:
        self._lock = lock
        self._durability = durability

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        d = self._durability
        try:
            token = d.flush()
            failed = d.write_failed
        finally:
            self._lock.release()
        if exc_type is not None:
            return
        if failed:
            raise Unavailable(DISK_FULL_WRITE)
        if token:
            d.commit_blocking(token)
