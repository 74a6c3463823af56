"""Where a backup's copies stand, kept on disk so a restart can catch up from the log.

Why
===

A backup that restarts (a crash and a supervisor's restart, a deploy) has its
copies back from its data dir, but without this file it does not know which
change of each partition they end at, so it subscribes with nothing and every
partition it backs up is sent whole: a restart of a member holding a third of
a 1M-key cluster re-copies a third of the data. With the position of each
copy, `(term, seq)`, it subscribes from there: a primary that still keeps
the changes since (`replication_log_changes` per partition, in memory) sends
just those, as after a broken stream; one that does not, or that is of
another lineage (a new term: it was promoted meanwhile), sends a snapshot as
before. This is Redis's partial resynchronisation (PSYNC with a replication
offset) for a partition stream.

The one rule: the file must never claim more than the data dir holds
=====================================================================

A position behind the data is harmless (changes are applied again; last
writer wins, so a repeat changes nothing). A position ahead of it would skip
changes the copy lacks, for good. So:

- a save reads the positions under the store lock, where every change a
  position counts has already been appended to the member's log, and waits
  for an fsync covering those appends before it writes the file;
- before a copy is dropped (no role any more) its position is taken out of
  the file, synchronously, so a restart cannot catch that copy up with
  nothing under it;
- recovery that found a partition damaged (a torn tail, a bad frame, a
  quarantined file) ignores the partition's saved position;
- while the disk is full nothing is saved, and a partition that had disk
  trouble keeps the position it had before (changes applied while it was
  re-persisted may be missing on disk);
- with fsync `never` there is no file at all: the log is not fsynced, so a
  power cut could leave the file ahead of it;
- only positions of copies that are live (caught up, not mid-snapshot) are
  saved, and only when every map is copied to every backup: with per-map
  backups a copy may hold fewer maps than a new rank needs (grid/member/replicas/map_backups.py).

The file is tiny (one line per partition backed up), written atomically
(temporary file, fsync, rename) once a second when something moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

import msgpack

from grid import logs
from grid.errors import Unavailable
from grid.store import Store
from grid.store.durability import Durability
from persistence.layout import fsync_dir
from replication.stream import FollowerLog, Phase

log = logs.get("grid.member.replicas.positions")

FILE = "follow-positions.msgpack"
SAVE_EVERY_S = 1.0
MAX_FILE_BYTES = 4 << 20  # 65,536 partitions x a few dozen bytes, with room to spare

Positions = dict[int, tuple[int, int]]


class FollowPositions:
    """Loads the saved positions at start, saves them while the member runs."""

    def __init__(
        self,
        data_dir: str,
        store: Store,
        durability: Durability,
        state: dict[int, FollowerLog],
        enabled: bool,
    ) -> None:
        self.path = Path(data_dir) / FILE
        self.store = store
        self.durability = durability
        self.state = state  # the followers' positions (grid/member/replicas/follower.py), shared
        self.enabled = enabled
        self.saved: Positions = {}  # what the file says now
        self.loaded = 0  # positions taken from the file at start
        self._task: asyncio.Task[None] | None = None
        self._io = asyncio.Lock()  # one write of the file at a time, in order
        self._dropping: set[int] = set()  # copies about to be dropped: never saved

    # ---- start ---------------------------------------------------------------------------------
    def load(self, damaged: Iterable[int]) -> Positions:
        """Put the saved positions into the followers' state (before any subscription),
        except for partitions recovery found damaged; returns what was used."""
        positions = self._read()
        if not self.enabled:
            positions = {}
        for p in damaged:
            positions.pop(p, None)
        for p, (term, seq) in positions.items():
            if 0 <= p < self.store.partitions:
                self.state[p] = FollowerLog(term=term, seq=seq)  # phase IDLE: will subscribe
        self.saved = dict(positions)
        self.loaded = len(positions)
        if positions:
            log.info("follow positions loaded", partitions=len(positions), path=str(self.path))
        return positions

    def _read(self) -> Positions:
        try:
            if not self.path.exists():
                return {}
            data = self.path.read_bytes()
            if len(data) > MAX_FILE_BYTES:
                raise ValueError(f"{len(data)} bytes, over {MAX_FILE_BYTES}")
            rows = msgpack.unpackb(data, max_array_len=1 << 17, max_map_len=0, max_str_len=0)
            out: Positions = {}
            for row in rows:
                p, term, seq = row
                if not all(isinstance(x, int) and x >= 0 for x in (p, term, seq)):
                    raise ValueError(f"bad row {row!r}")
                out[p] = (term, seq)
            return out
        except (OSError, ValueError, TypeError, msgpack.UnpackException) as e:
            # without positions every copy is filled by a snapshot: slower, never wrong
            log.warning("follow positions ignored", path=str(self.path), error=str(e))
            return {}

    # ---- while running ---------------------------------------------------------------------
    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="grid-positions")

    async def stop(self) -> None:
        """No last save: the file is at most a second behind, and behind is harmless."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(SAVE_EVERY_S)
            try:
                await self.save()
            except (OSError, Unavailable) as e:  # a full disk: positions only save time
                log.warning("cannot save follow positions", error=str(e))

    async def save(self) -> None:
        durability = self.durability
        with self.store.lock:
            if durability.disk_full:
                return  # changes are not reaching the disk: claim nothing newer
            troubled = durability.troubled
            live = {
                p: st
                for p, st in self.state.items()
                if st.phase is Phase.LIVE and p not in self._dropping and p not in troubled
            }
            now = {p: (st.term, st.seq) for p, st in live.items()}
            # a partition re-persisted after disk trouble may lack changes applied
            # meanwhile: it keeps the position it had before (older is harmless)
            kept = {p: self.saved[p] for p in troubled if p in self.saved}
            now.update(kept)
            token = durability.log.token
        if now == self.saved:
            return
        await self.durability.wait_synced(token)  # the data first, then the claim
        async with self._io:
            # a copy dropped (or being dropped) meanwhile must not come back into the file
            with self.store.lock:
                now = {
                    p: v
                    for p, v in now.items()
                    if (p in kept or self.state.get(p) is live[p]) and p not in self._dropping
                }
            await asyncio.to_thread(self._write, now)
            self.saved = now

    async def forget(self, p: int) -> None:
        """Before the copy of p is dropped: out of the file now, and kept out until `done`."""
        self._dropping.add(p)
        async with self._io:
            if p in self.saved:
                keep = {q: v for q, v in self.saved.items() if q != p}
                await asyncio.to_thread(self._write, keep)
                self.saved = keep

    def done(self, p: int) -> None:
        """The drop of p is over (or was called off: the copy stays, and may be saved)."""
        self._dropping.discard(p)

    def _write(self, positions: Positions) -> None:
        tmp = self.path.with_suffix(".tmp")
        data = msgpack.packb([(p, t, s) for p, (t, s) in sorted(positions.items())])
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
