"""Durable partitions: a member-wide journal, per-partition snapshots, recovery, backup.

The member runtime uses `Journal` (journal.py explains the layout and the protocol),
builds `Record`s, and applies the `PartitionRecovery.maps` that `Journal.recover()`
returns.  `Log` (log.py) is the per-partition layout of earlier builds: its recovery
is what converts an old data dir on the first start (journal.py, "Old data dirs").
This package imports only the standard library and msgpack.  Format and guarantees:
docs/persistence.md.
"""

from persistence.backup import backup, restore, verify_backup
from persistence.config import Config, FsyncPolicy
from persistence.errors import (
    BackupError,
    CorruptSnapshot,
    DataDirLocked,
    DataDirNotWritable,
    DiskFull,
    InvalidRecord,
    PersistenceError,
    RecoveryRequired,
)
from persistence.journal import Journal
from persistence.log import Log, SnapshotJob, should_snapshot
from persistence.record import Entry, Op, Record
from persistence.recovery import MemberRecoveryReport, PartitionRecovery, RecoveryReport
from persistence.snapshot import SnapshotInfo, SnapshotWriter

__all__ = [
    "BackupError",
    "Config",
    "CorruptSnapshot",
    "DataDirLocked",
    "DataDirNotWritable",
    "DiskFull",
    "Entry",
    "FsyncPolicy",
    "InvalidRecord",
    "Journal",
    "Log",
    "MemberRecoveryReport",
    "Op",
    "PartitionRecovery",
    "PersistenceError",
    "Record",
    "RecoveryReport",
    "RecoveryRequired",
    "SnapshotInfo",
    "SnapshotJob",
    "SnapshotWriter",
    "backup",
    "restore",
    "should_snapshot",
    "verify_backup",
]
