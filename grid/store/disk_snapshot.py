"""A partition's snapshot to disk, taken while writers go on, without stalling them.

What used to stall them (profiled in docs/benchmarks.md, "Snapshots under load"):
the member built a whole partition's records (a tuple and a copy of each
value) on the event loop under the store lock, freed them there again, and
checked and msgpacked them in a worker thread whose Python work took the GIL
from the loop for up to the switch interval (5 ms) each time the loop woke.

How it works now:

1. Under the store lock, at the partition's seq: a shallow copy of each of the
   partition's dicts (entries, tombstones) and its clear markers (`freeze`). A
   record is an immutable bytes object and a tombstone a tuple, so the copy is
   a point-in-time image: a later write puts a new object in the store's dict
   and never changes the one the copy holds. It is a C-level dict copy, no
   value is copied: tens of microseconds per partition.
2. On the event loop, a slice at a time (SLICE_RECORDS records or SLICE_BYTES,
   whichever comes first, about 0.1 ms of work): build the slice's
   records from the copy, msgpack and frame them (SnapshotWriter.pack), then
   yield to the loop so the requests that arrived meanwhile run before the
   next slice.
3. In a worker thread: one writev per WRITE_BYTES batch of frames, one batch
   in flight; at the end the trailer, fsync, rename, fsync of the directory
   (persistence/snapshot.py). The thread only makes system calls, so it takes
   the GIL a few times per MiB: a thread doing Python work takes it from the
   loop whenever the loop wakes, for up to the switch interval (5 ms), or for
   as long as the OS leaves it off a CPU on a busy machine.

Why it is still right. Every record carries the snapshot's seq, and the copy
does not change while the slices are built, so the file is the partition's
state at that seq whatever was written meanwhile. Those later writes go to the
segment that begin_snapshot() opened, the snapshot's start_segment, which
recovery replays after loading it. The file format is unchanged (a slice is a
frame), so old data dirs load as before. A crash (kill -9) at any point leaves
either the .tmp file, which recovery deletes, next to the previous snapshot
and every segment after it (end_snapshot() removes them only after commit()),
or, once renamed, the new snapshot whole with the segments from its start.

Memory: while a partition is written, entries overwritten since the copy stay
alive through it; that is one partition's worth (1/271 of the data by
default), and at most one batch of packed slices waits for the disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import Executor, Future
from typing import Any, NamedTuple

from grid.store.entry import unpack
from grid.store.store import DELETE, PUT, Store
from persistence import SnapshotInfo, SnapshotWriter

SLICE_RECORDS = 256  # 100-byte values: ~150 us of loop work per slice
SLICE_BYTES = 64 * 1024  # 1 KB values: 64 records, ~60 us; larger buffers are mmap'd
WRITE_BYTES = 1 << 20  # packed bytes handed to the writer thread at once


class FrozenMap(NamedTuple):
    """One map's part of a partition at the snapshot's seq (shallow copies)."""

    name: str
    records: dict[bytes, bytes]
    tombstones: dict[bytes, tuple[int, int]]
    cleared: tuple[int, int]


def freeze(store: Store, partition: int) -> list[FrozenMap]:
    """The partition as it is now; call under the store lock."""
    return [
        FrozenMap(
            rmap.name,
            rmap.recs[partition].copy(),
            rmap.tombs[partition].copy(),
            rmap.cleared[partition],
        )
        for rmap in store.maps.values()
        if rmap.recs[partition] or rmap.tombs[partition] or rmap.cleared[partition][0]
    ]


def slices(frozen: list[FrozenMap], seq: int) -> Iterator[list[tuple[Any, ...]]]:
    """The snapshot's records in slices: live entries, then tombstones (a restarted
    member must remember its deletes for the grace period, or a replica that missed one
    gives the key back at a merge), then each map's clear marker, as a delete of the
    empty key (never a real key)."""
    out: list[tuple[Any, ...]] = []
    size = 0
    for m in frozen:
        name = m.name
        for key, blob in m.records.items():
            out.append((seq, PUT, name, key, *unpack(blob)))
            size += len(blob)
            if size >= SLICE_BYTES or len(out) >= SLICE_RECORDS:
                yield out
                out, size = [], 0
    for m in frozen:
        for key, (ts, member) in m.tombstones.items():
            out.append((seq, DELETE, m.name, key, None, ts, member, 0, 0))
            if len(out) >= SLICE_RECORDS:
                yield out
                out, size = [], 0
    out += [(seq, DELETE, m.name, b"", None, *m.cleared, 0, 0) for m in frozen if m.cleared[0]]
    if out:
        yield out


def records(frozen: list[FrozenMap], seq: int) -> Iterator[tuple[Any, ...]]:
    """The same records one by one (for Log.install, the repair path after a full disk)."""
    for part in slices(frozen, seq):
        yield from part


async def write(
    frozen: list[FrozenMap], seq: int, writer: SnapshotWriter, io: Executor
) -> SnapshotInfo:
    """Pack the slices on the loop, write them in `io` (one thread), commit."""
    pending: list[bytes] = []
    size = 0
    inflight: Future[Any] | None = None
    try:
        for part in slices(frozen, seq):
            for piece in writer.pack(part, trusted=True):  # frame headers and payloads
                pending.append(piece)
                size += len(piece)
            if size >= WRITE_BYTES:
                if inflight is not None:
                    await asyncio.wrap_future(inflight)
                inflight = io.submit(writer.write, pending)
                pending, size = [], 0
            await asyncio.sleep(0)  # the requests that arrived meanwhile go first
        if inflight is not None:
            await asyncio.wrap_future(inflight)
        inflight = io.submit(_commit, writer, pending)
        return await asyncio.wrap_future(inflight)
    except BaseException:
        # never close the file under the thread still writing it (cancelled mid-write)
        if inflight is None:
            writer.abort()
        else:
            inflight.add_done_callback(lambda _: writer.abort())
        raise


def _commit(writer: SnapshotWriter, last: list[bytes]) -> SnapshotInfo:
    writer.write(last)
    return writer.commit()
