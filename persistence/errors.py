"""Exceptions of the persistence layer.

Each failure the member must react to differently has its own type, so the runtime can
tell "the disk is full, stop accepting writes and retry later" from "another member owns
this directory, refuse to start" without parsing messages.
"""

from __future__ import annotations


class PersistenceError(Exception):
    """Base class of every error raised on purpose by this package."""


class DataDirLocked(PersistenceError):
    """Another process holds the data directory's LOCK; two members must never share it."""

    def __init__(self, path: str, pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "an unknown process"
        super().__init__(
            f"data directory {path} is in use by {holder} (lock file {path}/LOCK); "
            "each member needs its own data directory"
        )
        self.path = path
        self.pid = pid


class DataDirNotWritable(PersistenceError):
    """The data directory cannot be created or written (permissions, read-only mount)."""


class DiskFull(PersistenceError):
    """ENOSPC/EDQUOT while appending or syncing.

    The log is left consistent: the affected segment was truncated back to its last good
    (for append) or last durable (for sync) offset, so appends can resume once space
    returns.  `partitions` lists the partitions whose recent records are not on disk.
    """

    def __init__(self, message: str, partitions: list[int]) -> None:
        super().__init__(message)
        self.partitions = partitions


class InvalidRecord(PersistenceError, ValueError):
    """A record given to append/snapshot has the wrong shape, type or sequence number."""


class RecoveryRequired(PersistenceError):
    """The partition has data on disk that was not recovered; appending would fork it."""


class CorruptSnapshot(PersistenceError):
    """A snapshot file failed validation (recovery falls back and reports it)."""


class BackupError(PersistenceError):
    """A backup set is incomplete or does not match its manifest's checksums."""
