"""Which partitions this member serves, and where everything else goes.

The partition table (partitioning/table.py) comes from the coordinator
(grid/coordinator.py) and names, per partition, the primary and its backups.
It changes in steps, and between two steps a hand-off may already have
happened that the next table will only confirm:

* `moved[p] = (N, e)`: this member handed partition p to N (grid/replica.py)
  and must not serve it any more, whatever a table older than epoch e says;
* `early[p] = e`: partitions handed *to* this member that its tables do not
  show as its own before epoch e.

The epoch comes from the coordinator with the hand-off: its next table. A
table of an earlier epoch that arrives late (a slow publish) cannot undo the
hand-off, so neither member drops or stops serving what it should hold.

`store.owned` is the one thing the hot path reads: a bytearray of the
partitions this member serves as primary right now (table, minus moved,
plus early). The store raises NotOwner for anything else before touching it,
and the server forwards those operations (grid/forwarding.py).

The installed table is also saved to `data_dir/table.json`, so that a member
restarting from disk knows who held what (grid/coordinator.py waits for
those members before handing their partitions to others).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grid import logs
from grid.store import Store
from partitioning import PartitionTable
from proto import grid_pb2 as pb

log = logs.get("grid.routing")
TABLE_FILE = "table.json"

TableListener = Callable[[PartitionTable], None]


class Routing:
    def __init__(self, me: str, address: str, store: Store, data_dir: str = "") -> None:
        self.me = me
        self.address = address
        self.store = store
        self.partitions = store.partitions
        self.table: PartitionTable | None = None
        self.addresses: dict[str, str] = {me: address}
        self.moved: dict[int, tuple[str, int]] = {}
        self.early: dict[int, int] = {}
        self.fenced = False  # serve nothing (grid/coordinator.py: back from a stall)
        self.listeners: list[TableListener] = []
        self._watchers: set[asyncio.Queue[pb.PartitionTable]] = set()
        self._path = Path(data_dir) / TABLE_FILE if data_dir else None
        self._proto: pb.PartitionTable | None = None
        store.owned = bytearray(self.partitions)  # nothing until the first table

    # ---- the table ---------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self.table.version if self.table is not None else 0

    def install(self, table: PartitionTable, addresses: dict[str, str]) -> bool:
        """Adopt a table if it is newer than ours (or the first); True if adopted."""
        if table.partition_count != self.partitions:
            log.error(
                "table refused: wrong partition count",
                theirs=table.partition_count,
                ours=self.partitions,
            )
            return False
        current = self.table
        if current is not None and not table.newer_than(current):
            if table.version != current.version:
                log.debug("older table ignored", version=table.version, ours=current.version)
            return False
        self.table = table
        self.addresses = {**self.addresses, **addresses, self.me: self.address}
        self._proto = None
        with self.store.lock:
            # hand-offs a table of their epoch or later has settled (shown or undone)
            epoch = table.epoch
            self.moved = {p: m for p, m in self.moved.items() if m[1] > epoch}
            self.early = {p: e for p, e in self.early.items() if e > epoch}
            self._recompute()
        self._save()
        for q in list(self._watchers):
            q.put_nowait(self.to_proto())
        for listener in list(self.listeners):
            try:
                listener(table)
            except Exception:  # a bug in one listener must not stop routing
                log.exception("table listener failed")
        log.debug(
            "partition table installed",
            version=table.version,
            epoch=table.epoch,
            members=len(table.members),
            primaries=len(table.partitions_of(self.me).primary),
            backups=len(table.partitions_of(self.me).backup),
        )
        return True

    def _recompute(self) -> None:
        """Rebuild store.owned (caller holds the store lock)."""
        owned = bytearray(self.partitions)
        table = self.table
        if self.fenced:
            self.store.owned = owned
            return
        if table is not None:
            for p in table.partitions_of(self.me).primary:
                owned[p] = 1
        for p in self.moved:
            owned[p] = 0
        for p in self.early:
            owned[p] = 1
        self.store.owned = owned

    def handed_off(self, partition: int, to: str, epoch: int) -> None:
        """This member gave the partition away (caller holds the store lock)."""
        self.moved[partition] = (to, epoch)
        self.early.pop(partition, None)
        assert self.store.owned is not None
        self.store.owned[partition] = 0

    def handed_over(self, partition: int, epoch: int) -> None:
        """The partition was handed to this member (caller holds the store lock)."""
        self.early[partition] = epoch
        self.moved.pop(partition, None)
        assert self.store.owned is not None
        self.store.owned[partition] = 1

    def fence(self) -> None:
        """Serve no partition until `unfence` (the store answers NotOwner), whatever the
        table says: the member may have been failed over while it stood still."""
        with self.store.lock:
            self.fenced = True
            self._recompute()

    def unfence(self) -> None:
        with self.store.lock:
            self.fenced = False
            self._recompute()

    def take_back(self, partition: int) -> None:
        """A hand-off failed before the new owner took over: serve it again (lock held)."""
        if self.moved.pop(partition, None) is not None:
            self._recompute()

    # ---- questions ---------------------------------------------------------------------------
    def serves(self, partition: int) -> bool:
        owned = self.store.owned
        return owned is not None and bool(owned[partition])

    def owner(self, partition: int) -> str | None:
        """Who serves the partition, as far as this member knows (None: no table yet)."""
        if partition in self.moved:
            return self.moved[partition][0]
        if partition in self.early:
            return self.me
        return self.table.owner(partition) if self.table is not None else None

    def set_address(self, member: str, address: str) -> None:
        """Membership's word on where a member answers (fresher than a saved table's)."""
        if not address or member == self.me or self.addresses.get(member) == address:
            return
        self.addresses[member] = address
        self._proto = None  # Table answers carry it now; the coordinator republishes the
        # table (a new version) so that watching clients learn it too

    def address_of(self, member: str) -> str | None:
        return self.addresses.get(member)

    def role(self, partition: int) -> int:
        """LocalKeys roles: 1 primary, 2 backup, 3 neither."""
        if self.serves(partition):
            return 1
        if self.table is not None and self.me in self.table.replicas(partition)[1:]:
            return 2
        return 3

    def members(self) -> list[str]:
        return list(self.table.members) if self.table is not None else [self.me]

    # ---- wire form ---------------------------------------------------------------------------
    def to_proto(self) -> pb.PartitionTable:
        if self._proto is None:
            self._proto = table_to_proto(self.table, self.addresses)
        return self._proto

    def watch(self) -> asyncio.Queue[pb.PartitionTable]:
        q: asyncio.Queue[pb.PartitionTable] = asyncio.Queue()
        self._watchers.add(q)
        return q

    def unwatch(self, q: asyncio.Queue[pb.PartitionTable]) -> None:
        self._watchers.discard(q)

    def end_watches(self) -> None:
        """For shutdown: every WatchTable stream ends now (an empty table says so)."""
        for q in self._watchers:
            q.put_nowait(pb.PartitionTable())

    # ---- saved table -------------------------------------------------------------------------
    def _save(self) -> None:
        if self._path is None or self.table is None:
            return
        tmp = self._path.with_suffix(".tmp")
        data = {"table": self.table.to_dict(), "addresses": self.addresses}
        try:
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self._path)
        except OSError as e:  # a full disk must not stop routing; the table is also in memory
            log.warning("cannot save the partition table", path=str(self._path), error=str(e))

    def load_saved(self) -> tuple[PartitionTable, dict[str, str]] | None:
        """The table this member had before it stopped, if it kept one."""
        if self._path is None or not self._path.exists():
            return None
        try:
            data: Any = json.loads(self._path.read_text())
            table = PartitionTable.from_dict(data["table"])
            addresses = {str(k): str(v) for k, v in dict(data["addresses"]).items()}
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("saved partition table ignored", path=str(self._path), error=str(e))
            return None
        if table.partition_count != self.partitions:
            return None
        return table, addresses


def table_to_proto(table: PartitionTable | None, addresses: dict[str, str]) -> pb.PartitionTable:
    if table is None:
        return pb.PartitionTable()
    index = {m: i for i, m in enumerate(table.members)}
    return pb.PartitionTable(
        version=table.version,
        partition_count=table.partition_count,
        backups=table.backups,
        members=[pb.TableMember(name=m, address=addresses.get(m, "")) for m in table.members],
        replicas=[pb.Replicas(members=[index[m] for m in r]) for r in table.replica_lists],
    )


def table_from_proto(msg: pb.PartitionTable) -> tuple[PartitionTable, dict[str, str]]:
    """Raises ValueError on anything malformed (the table validates itself)."""
    members = [m.name for m in msg.members]
    table = PartitionTable.from_dict(
        {
            "version": msg.version,
            "partition_count": msg.partition_count,
            "backups": msg.backups,
            "members": members,
            "replicas": [list(r.members) for r in msg.replicas],
        }
    )
    return table, {m.name: m.address for m in msg.members if m.address}
