"""Durable partitions: append-only log segments, snapshots, recovery, backup.

The member runtime uses `Log` (log.py explains the protocol), builds `Record`s, and
applies the `PartitionRecovery.maps` that `Log.recover()` returns.  This package imports
only the standard library and msgpack.  Format and guarantees: docs/persistence.md.
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
