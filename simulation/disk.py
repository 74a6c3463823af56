"""A simulated member's data dir: the member's real journal and recovery.

With `persist` on, every simulated member journals its store through
grid/store/durability.py onto the persistence library, exactly as a member with a
data dir does, and a crashed member restarts with a new store recovered from
that journal by the same code (`Durability.recover`). So the simulator runs
the journal's record mapping (a client's clear journaled as a marker, a
dropped copy as a bare clear) and recovery's rules, and a bug in either shows
up as a restarted member holding something its store did not hold before the
crash, or missing something it did (`Invariants.recovered`).

The files live in a temporary directory (on /dev/shm when there is one:
fsync is free there, and the simulator never asks for it anyway: fsync is
`never`, changes are flushed to the files after every simulated event, and a
simulated crash kills the process, not the machine, so the page cache keeps
them, as it does for kill -9). The directory is removed when the run ends.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from grid.config import Config
from grid.store.durability import Durability
from grid.store.store import Store

SHM = Path("/dev/shm")


class Disks:
    """Every member's data dir for one run."""

    def __init__(self) -> None:
        base = SHM if SHM.is_dir() else None
        self.root = Path(tempfile.mkdtemp(prefix="grid-sim-", dir=base))

    def data_dir(self, name: str) -> str:
        return str(self.root / name)

    def open(self, config: Config, store: Store) -> Durability:
        """The member's journal, with what it holds loaded into `store` (a new one)."""
        journal = Durability(config, store, store.clock)
        journal.recover()
        return journal

    @staticmethod
    def crash(journal: Durability) -> None:
        """The process dies: its descriptors close, nothing more (no flush of pending
        changes: there are none between simulated events)."""
        journal.log.close()

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
