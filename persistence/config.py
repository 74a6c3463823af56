"""Configuration of the persistence layer: one frozen dataclass, defaults with reasons.

Every default here is a trade-off between what a crash can lose, how fast the
member answers, and how long a restart takes.  The reasons are written next to
each field so an operator tuning them knows what moves.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024


class FsyncPolicy(enum.StrEnum):
    """When appended bytes are forced to stable storage (see docs/persistence.md).

    Every policy writes each batch to the kernel with one write() before append()
    returns, so a killed *process* (kill -9, OOM killer, crash) loses nothing that
    append() accepted.  The policies differ in what a lost *machine* (power cut,
    kernel panic) loses.
    """

    ALWAYS = "always"
    """The runtime calls sync() before answering; a group shares one fsync."""

    INTERVAL = "interval"
    """The runtime calls sync() when sync_due() says so (every fsync_interval_s)."""

    NEVER = "never"
    """Never fsync while running; the kernel writes back when it likes (~30 s)."""


@dataclass(frozen=True, slots=True)
class Config:
    """Settings of one member's data directory."""

    data_dir: Path
    """Root of this member's persistent state; one member per directory (LOCK file)."""

    fsync: FsyncPolicy = FsyncPolicy.INTERVAL
    """Default `interval`, as Redis's appendfsync everysec: at most about a second of
    acknowledged writes lost on power loss, while client latency never waits on a disk
    flush.  Replication to backups covers the single-machine loss in between."""

    fsync_interval_s: float = 1.0
    """How stale the disk may get under `interval`.  1 s is Redis's everysec; shorter
    costs more fsyncs (about 0.2 ms each here, budget 3k/s per disk)."""

    segment_bytes: int = 64 * MiB
    """Roll the active segment past this size.  Big enough that rolls (and their file
    creations and directory fsyncs) are rare, small enough that a snapshot frees disk in
    reasonable steps and recovery reads one segment into memory at a time."""

    max_frame_bytes: int = 64 * MiB
    """Upper bound a decoder accepts for one frame.  Values are limited to 16 MiB by the
    member; 64 MiB leaves room for a batch of large values while still refusing absurd
    lengths from a corrupt header before allocating anything."""

    frame_target_bytes: int = 1 * MiB
    """Snapshots are written as frames of about this size (so a corrupt byte costs at
    most one frame's worth of work to detect, and memory stays bounded while writing)."""

    snapshot_ratio: float = 2.0
    """Snapshot when the log since the last snapshot exceeds this multiple of the live
    data: recovery then reads at most ~3x the live bytes and disk use stays bounded, and
    snapshot write amplification stays at most 1/ratio of the append volume."""

    keep_snapshots: int = 2
    """Snapshots kept per partition, with every segment from the oldest kept one on.  2
    means a snapshot that turns out corrupt at recovery falls back to the previous one
    plus the log, losing nothing; 1 halves the disk use but then a corrupt snapshot
    loses the data it covered."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "fsync", FsyncPolicy(self.fsync))
        if self.fsync_interval_s <= 0:
            raise ValueError("fsync_interval_s must be positive")
        if self.segment_bytes < 4096:
            raise ValueError("segment_bytes must be at least 4096")
        if not 1024 <= self.max_frame_bytes <= 2**32 - 1:
            raise ValueError("max_frame_bytes must be in [1024, 2**32-1]")
        if not 1024 <= self.frame_target_bytes <= self.max_frame_bytes:
            raise ValueError("frame_target_bytes must be in [1024, max_frame_bytes]")
        if self.snapshot_ratio <= 1.0:
            raise ValueError("snapshot_ratio must be > 1.0")
        if self.keep_snapshots < 1:
            raise ValueError("keep_snapshots must be >= 1")
