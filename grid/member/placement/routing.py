"""Which partitions this member serves, and where everything else goes: the IO
around `partitioning.ownership.Ownership`.

The partition table (partitioning/table.py) comes from the coordinator
(grid/member/placement/coordinator.py) and changes in steps; between two steps a hand-off may
already have happened that the next table will only confirm. What a member
serves across tables and hand-offs (`moved`, `early`, `owner`, `serves`) is
decided by the Ownership core; this module carries it out:

* `store.owned` is the one thing the hot path reads: a bytearray of the
  partitions this member serves as primary right now (the core's `owned`),
  kept under the store lock. The store raises NotOwner for anything else
  before touching it, and the server forwards those operations
  (grid/member/forwarding.py).
* The installed table is saved to `data_dir/table.json` with the hand-offs
  no table has settled yet (`moved`), so that a member restarting from disk
  knows who held what (grid/member/placement/coordinator.py waits for those
  members before handing their partitions to others) and does not serve what
  it handed off before it stopped (`restarted`). A member that starts with no
  table.json holds no copy: a first table that already names it gives it
  `lacking` places, which it does not serve and reports to the coordinator.
* Member addresses, the table's wire form, WatchTable streams and table
  listeners.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from grid import logs
from grid.store import Store
from partitioning import PartitionTable
from partitioning.ownership import Moved, Ownership, Verdict
from proto import grid_pb2 as pb

log = logs.get("grid.member.placement.routing")
TABLE_FILE = "table.json"

TableListener = Callable[[PartitionTable], None]


class Saved(NamedTuple):
    """What table.json holds: the last installed table, the member addresses it was
    sent with, and the hand-offs this member made that no table had settled."""

    table: PartitionTable
    addresses: dict[str, str]
    moved: dict[int, Moved]
    known: tuple[str, ...] = ()
    """The members this member's membership knew and that had not departed (the
    coordinator's `sight`): a restart that hears from nobody still counts them."""


class Routing:
    def __init__(self, me: str, address: str, store: Store, data_dir: str = "") -> None:
        self.me = me
        self.address = address
        self.store = store
        self.partitions = store.partitions
        self._path = Path(data_dir) / TABLE_FILE if data_dir else None
        # a saved table: this member holds its copies, even if a publish comes before
        # the coordinator restores it (Ownership's `restored`)
        restored = self._path is not None and self._path.exists()
        self.ownership = Ownership(me, store.partitions, restored=restored)
        self.addresses: dict[str, str] = {me: address}
        self.known: tuple[str, ...] = (me,)  # saved with the table (`Saved.known`)
        self.listeners: list[TableListener] = []
        self._watchers: set[asyncio.Queue[pb.PartitionTable]] = set()
        self._proto: pb.PartitionTable | None = None
        store.owned = bytearray(self.partitions)  # nothing until the first table

    # ---- the table ---------------------------------------------------------------------------
    @property
    def table(self) -> PartitionTable | None:
        return self.ownership.table

    @property
    def moved(self) -> dict[int, Moved]:
        return self.ownership.moved

    @property
    def early(self) -> dict[int, int]:
        return self.ownership.early

    @property
    def version(self) -> int:
        return self.ownership.version

    def install(self, table: PartitionTable, addresses: dict[str, str]) -> bool:
        """Adopt a table if it is newer than ours (or the first); True if adopted."""
        return self._adopt(table, addresses, self.ownership.install)

    def restarted(self, saved: Saved) -> bool:
        """A restart from disk: the saved table is in use at once, and the hand-offs saved
        with it are not served (Ownership.restarted); True if adopted."""
        return self._adopt(
            saved.table, saved.addresses, lambda t: self.ownership.restarted(t, saved.moved)
        )

    def _adopt(
        self,
        table: PartitionTable,
        addresses: dict[str, str],
        install: Callable[[PartitionTable], bool],
    ) -> bool:
        verdict = self.ownership.verdict(table)
        if verdict is Verdict.WRONG_COUNT:
            log.error(
                "table refused: wrong partition count",
                theirs=table.partition_count,
                ours=self.partitions,
            )
            return False
        if verdict is not Verdict.INSTALL:
            if verdict is Verdict.OLDER:
                log.debug("older table ignored", version=table.version, ours=self.version)
            return False
        self.addresses = {**self.addresses, **addresses, self.me: self.address}
        self._proto = None
        lacked = bool(self.ownership.lacking)
        with self.store.lock:
            install(table)
            self.store.owned = self.ownership.owned()
        self.save()
        if self.ownership.lacking and not lacked:
            log.warning(
                "restarted without data: the table names this member for copies it lacks",
                partitions=len(self.ownership.lacking),
                version=table.version,
            )
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

    def handed_off(self, partition: int, to: str, epoch: int) -> None:
        """This member gave the partition away (caller holds the store lock; it calls
        `save` before HANDOFF can leave: a restart must not serve the partition)."""
        self.ownership.handed_off(partition, to, epoch)
        assert self.store.owned is not None
        self.store.owned[partition] = 0

    def take_over(self, partition: int, epoch: int, source: str) -> bool:
        """The partition was handed to this member by `source` (caller holds the store
        lock); it serves it unless the table in use settled the hand-off without it or
        names another primary (Ownership.take_over). True if it takes it over."""
        if not self.ownership.take_over(partition, epoch, source):
            return False
        assert self.store.owned is not None
        self.store.owned[partition] = 1
        return True

    @property
    def fenced(self) -> bool:
        return self.ownership.fenced

    def fence(self) -> None:
        """Serve no partition until `unfence` (the store answers NotOwner), whatever the
        table says: the member may have been failed over while it stood still."""
        with self.store.lock:
            self.ownership.fenced = True
            self.store.owned = self.ownership.owned()

    def unfence(self) -> None:
        with self.store.lock:
            self.ownership.fenced = False
            self.store.owned = self.ownership.owned()

    def take_back(self, partition: int) -> bool:
        """A hand-off that never reached the new owner: serve it again (lock held; the
        caller calls `save` after). True if anything changed."""
        if not self.ownership.take_back(partition):
            return False
        self.store.owned = self.ownership.owned()
        return True

    def unsettled(self) -> int:
        """The epoch of a hand-off no table in use settled (0: none), for publish answers
        and the coordinator's view (Ownership.unsettled)."""
        return self.ownership.unsettled()

    @property
    def lacking(self) -> frozenset[int]:
        """Places the table gives this member whose copy it does not hold (it started
        without its data): served by nobody here, reported (Ownership.lacking)."""
        return frozenset(self.ownership.lacking)

    # ---- questions ---------------------------------------------------------------------------
    def serves(self, partition: int) -> bool:
        owned = self.store.owned
        return owned is not None and bool(owned[partition])

    def owner(self, partition: int) -> str | None:
        """Who serves the partition, as far as this member knows (None: no table yet)."""
        return self.ownership.owner(partition)

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
    def save(self) -> None:
        """table.json: the table in use, the addresses, the hand-offs no table settled
        yet (`moved`) and the members known (`known`); a file without the last two, from
        an older member, loads them as none."""
        if self._path is None or self.table is None:
            return
        tmp = self._path.with_suffix(".tmp")
        moved = {str(p): [m.to, m.epoch] for p, m in self.ownership.moved.items()}
        data = {
            "table": self.table.to_dict(),
            "addresses": self.addresses,
            "moved": moved,
            "known": list(self.known),
        }
        try:
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self._path)
        except OSError as e:  # a full disk must not stop routing; the table is also in memory
            log.warning("cannot save the partition table", path=str(self._path), error=str(e))

    def load_saved(self) -> Saved | None:
        """The table this member had before it stopped, if it kept one."""
        if self._path is None or not self._path.exists():
            return None
        try:
            data: Any = json.loads(self._path.read_text())
            table = PartitionTable.from_dict(data["table"])
            addresses = {str(k): str(v) for k, v in dict(data["addresses"]).items()}
            moved = {
                int(p): Moved(str(to), int(epoch))
                for p, (to, epoch) in dict(data.get("moved") or {}).items()
            }
            known = tuple(str(m) for m in list(data.get("known") or ()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("saved partition table ignored", path=str(self._path), error=str(e))
            return None
        if table.partition_count != self.partitions:
            return None
        moved = {p: m for p, m in moved.items() if 0 <= p < self.partitions}
        return Saved(table, addresses, moved, known)


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
