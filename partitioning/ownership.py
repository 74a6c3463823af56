"""Which partitions a member serves as primary, between one table and the next.

The partition table (table.py) comes from the coordinator and changes in steps.
Between two steps a hand-off may already have happened that the next table
will only confirm, so a member's own answer to "do I serve p?" is the table
corrected by the hand-offs it took part in:

* `moved[p] = Moved(N, e)`: this member handed p to N and must not serve it any
  more, whatever a table older than epoch e says;
* `early[p] = e`: p was handed *to* this member, which serves it although its
  tables do not show it before epoch e (unless the table in use is of epoch e
  or later already: it settled the hand-off, see `take_over`).

The epoch comes from the coordinator with the hand-off: the epoch of its next
table. A table of an earlier epoch that arrives late (a slow publish) cannot
undo the hand-off, so neither member drops or stops serving what it should
hold; the first table of epoch e or later settles it (it shows the hand-off,
or undoes it on purpose), and the entry goes.

A hand-off the new owner did not confirm is taken back (`take_back`) only if
HANDOFF never left the old primary (replication/primary.py decides): once
sent, the new owner may serve p and only its word was lost, so the old
primary keeps `moved[p]` and serves nothing of p until the table of epoch e.
Normally the coordinator that ordered the hand-off publishes that table at
once; if it crashed first, `unsettled()` (reported with every answer to a
publish) makes the next coordinator publish it (partitioning/rebalancer.py).
`moved` is saved with the table (a restart must not serve by the saved table
what it handed off before the crash); `early` is not (a restart lost the log
it took over with, and nobody serves p then, which the same table settles).

A member that restarts with its saved table (`restarted`) serves by it at once,
but the cluster may have gone past it: it asks the live members for theirs
first. If it is still the saved one afterwards (a restart quicker than the
failure detector: nobody noticed, so nobody will publish it again), the
runtime must start the table's streams itself (`start_saved`).

A member that starts with no saved table holds no copy of anything (a first
start, or a restart without a data dir). If the first table it installs
already names it (epoch above 1: a table made before it started, by a cluster
that did not notice it was gone), its places in that table are `lacking`: it
serves none of them as primary (an empty primary would answer reads with
nothing and restart counters from zero, and the coordinator would take its
copy for the partition's data), and it reports them with every answer to a
publish, so that the coordinator removes it from those lists as it does a
dead member (partitioning/failover.py). A table that no longer names it there
settles them. The first table of a new cluster (epoch 1) lacks nothing: no
copy exists anywhere yet. But a cluster that never changed since its birth
keeps epoch 1, so an epoch-1 table lacks nothing only to a member that took part
in making it (`born`): the coordinator that made it, and the members it asked
for their tables while they had none (it asks every live member first). Any
other member with no data installing it joined a running cluster: a restart
without a data dir quicker than failure detection, which served its empty
store as primary before (the simulator, 3 members without data dirs, seed 39:
an increment from 0 after 16 acknowledged; tests/integration/
test_restart_without_data.py: 927 of 3,000 keys read as missing). Two members
restarted so at once, asking each other, would pass for born: not handled.
A member with a saved table says so when it is made (`restored`), not only at
`restarted`: a publish may reach it before it restores, and its copies are on
its disk all the same.

Pure state, no IO: grid/member/placement/routing.py keeps it for a member (and mirrors `owned`
into the store's hot-path bytearray), and the simulator keeps one per
simulated member.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import NamedTuple

from partitioning.table import PartitionTable


class Moved(NamedTuple):
    """A partition this member handed off: to whom, and the epoch of the table that
    will show it."""

    to: str
    epoch: int


class Verdict(Enum):
    """What a member does with a table it is given."""

    INSTALL = "install"  # the first, or of a higher epoch than the one in use
    SAME = "same"  # the table in use
    OLDER = "older"  # not newer than the one in use (a late publish, another lineage)
    WRONG_COUNT = "wrong partition count"  # from a cluster with another partition count


class Ownership:
    """The table in use, and the hand-offs not settled by a table yet."""

    def __init__(self, me: str, partitions: int, restored: bool = False) -> None:
        """`restored`: the member starts from its data dir with a saved table (it will
        call `restarted`), so it holds its copies even if a publish is installed first."""
        self.me = me
        self.partitions = partitions
        self.table: PartitionTable | None = None
        self.moved: dict[int, Moved] = {}
        self.early: dict[int, int] = {}
        self.saved = 0  # a restart's saved table, until `start_saved` is asked
        self.lacking: set[int] = set()
        """Places the table gives this member whose copy it does not hold (it started
        with no data): never served, reported until a table moves them."""
        self._restored = restored  # it started from a saved table (its data dir)
        self._born = False  # `born`: it takes part in making a new cluster's first table
        self.fenced = False
        """Serve nothing, whatever the table says: the member stood still for longer than
        failure detection and may have been failed over (grid/member/placement/coordinator.py lifts
        it once it has the live members' newest table)."""

    @property
    def version(self) -> int:
        return self.table.version if self.table is not None else 0

    # ---- tables ----------------------------------------------------------------------------
    def verdict(self, table: PartitionTable) -> Verdict:
        if table.partition_count != self.partitions:
            return Verdict.WRONG_COUNT
        current = self.table
        if current is None or table.newer_than(current):
            return Verdict.INSTALL
        return Verdict.SAME if table.version == current.version else Verdict.OLDER

    def install(self, table: PartitionTable) -> bool:
        """Use `table` if its verdict is INSTALL; True if it is now the one in use.
        Hand-offs that a table of their epoch or later has settled (shown or undone)
        are forgotten."""
        if self.verdict(table) is not Verdict.INSTALL:
            return False
        first = self.table is None and not self._restored
        self.table = table
        epoch = table.epoch
        self.moved = {p: m for p, m in self.moved.items() if m.epoch > epoch}
        self.early = {p: e for p, e in self.early.items() if e > epoch}
        if first and (epoch > 1 or not self._born):
            self.lacking = set(_places(table, self.me))
        elif self.lacking:
            self.lacking &= set(_places(table, self.me))
        return True

    def born(self) -> None:
        """This member takes part in making a new cluster's first table, if it has no
        table yet: a peer asked for its table (a coordinator asks every live member
        before it makes the first one), or it publishes one itself. Its first table
        then lacks nothing at epoch 1 (see the module docstring)."""
        if self.table is None:
            self._born = True

    def restarted(self, saved: PartitionTable, moved: Mapping[int, Moved] | None = None) -> bool:
        """A restart with the table saved before it, and the hand-offs saved with it: in
        use at once (see the module docstring); its streams wait for `start_saved`."""
        self._restored = True
        if not self.install(saved):
            return False
        self.saved = saved.version
        self.remember(moved or {})
        return True

    def remember(self, moved: Mapping[int, Moved]) -> None:
        """Hand-offs made before a restart that the table in use does not settle: this
        member serves none of them, whatever that table says."""
        epoch = self.table.epoch if self.table is not None else 0
        for p, m in moved.items():
            if m.epoch > epoch:
                self.moved[p] = Moved(m.to, m.epoch)
                self.early.pop(p, None)

    def start_saved(self) -> bool:
        """Asked once, after a restart asked the live members for their tables: True
        if the table in use is still the saved one, so the runtime must start the
        streams by it now, as an install would (primaries get a log, backups
        subscribe). A newer table installed meanwhile started them itself."""
        saved, self.saved = self.saved, 0
        return saved != 0 and self.version == saved

    # ---- hand-offs -------------------------------------------------------------------------
    def handed_off(self, partition: int, to: str, epoch: int) -> None:
        """This member gave the partition to `to`; a table of `epoch` will show it."""
        self.moved[partition] = Moved(to, epoch)
        self.early.pop(partition, None)

    def take_over(self, partition: int, epoch: int, source: str) -> bool:
        """The partition was handed to this member by `source`; a table of `epoch` will
        show it. True if this member serves it now. Refused (the source waits for that
        table, serving nothing of it meanwhile) in two cases, where serving it would make
        a second primary under the table in use:

        * that table is of `epoch` or later: it settled the hand-off without this member
          (the source was told the hand-off failed; this member was paused, or the
          hand-off was slow), or it comes from another lineage (a split heals);
        * by that table, `source` does not serve the partition: another member does,
          which holds the same table (a hand-off ordered by the coordinator of another
          lineage, reaching the source late after a heal)."""
        if self.table is None or self.table.epoch >= epoch or self.owner(partition) != source:
            return False
        self.early[partition] = epoch
        self.moved.pop(partition, None)
        return True

    def take_back(self, partition: int) -> bool:
        """A hand-off that never reached the new owner: serve it again. True if anything
        changed."""
        return self.moved.pop(partition, None) is not None

    def unsettled(self) -> int:
        """The highest epoch of a hand-off this member took part in that no table in use
        has settled (0: none): a table of that epoch must be published."""
        epochs = [m.epoch for m in self.moved.values()]
        epochs.extend(self.early.values())
        return max(epochs, default=0)

    # ---- questions -------------------------------------------------------------------------
    def owned(self) -> bytearray:
        """One byte per partition, 1 where this member serves it as primary: the table's
        primaries, minus what it handed off, plus what was handed to it; nothing while
        fenced."""
        owned = bytearray(self.partitions)
        if self.fenced:
            return owned
        if self.table is not None:
            for p in self.table.partitions_of(self.me).primary:
                owned[p] = 1
        for p in self.moved:
            owned[p] = 0
        for p in self.early:
            owned[p] = 1
        for p in self.lacking:
            owned[p] = 0
        return owned

    def serves(self, partition: int) -> bool:
        """Whether this member serves the partition as primary (what `owned` says)."""
        if self.fenced or partition in self.lacking:
            return False
        if partition in self.early:
            return True
        if partition in self.moved or self.table is None:
            return False
        return self.table.owner(partition) == self.me

    def owner(self, partition: int) -> str | None:
        """Who serves the partition, as far as this member knows (None: no table yet)."""
        moved = self.moved.get(partition)
        if moved is not None:
            return moved.to
        if partition in self.early:
            return self.me
        return self.table.owner(partition) if self.table is not None else None


def _places(table: PartitionTable, me: str) -> list[int]:
    """The partitions whose replica list names `me` (as primary or backup)."""
    held = table.partitions_of(me)
    return [*held.primary, *held.backup]
