"""Names of things on disk, and the few filesystem primitives everything else shares.

    <data_dir>/
      LOCK                          flock'ed by the owning member, holds its pid
      p-0007/                       one directory per partition
        seg-0000000012.log          log segment 12 (numbers increase, never reused)
        snap-0000000012.snap        snapshot; replay continues at segment 12
        snap-0000000013.snap.tmp    snapshot being written (deleted at recovery)
        seg-0000000009.log.corrupt  bytes set aside by recovery for the operator

A snapshot is named by the first segment *after* it rather than by its sequence number
because installing a snapshot received from another member (migration) may move the
sequence backwards, while segment numbers only ever grow; "newest snapshot" is then
simply the highest number.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from persistence.errors import DataDirNotWritable

LOCK_NAME = "LOCK"
_PART_RE = re.compile(r"^p-(\d{4,})$")
_SEG_RE = re.compile(r"^seg-(\d{10,})\.log$")
_SNAP_RE = re.compile(r"^snap-(\d{10,})\.snap$")


def partition_dir(data_dir: Path, partition: int) -> Path:
    return data_dir / f"p-{partition:04d}"


def segment_name(number: int) -> str:
    return f"seg-{number:010d}.log"


def snapshot_name(start_segment: int) -> str:
    return f"snap-{start_segment:010d}.snap"


def list_partitions(data_dir: Path) -> list[int]:
    out = []
    for name in os.listdir(data_dir):
        m = _PART_RE.match(name)
        if m and (data_dir / name).is_dir():
            out.append(int(m.group(1)))
    return sorted(out)


def list_files(pdir: Path) -> tuple[list[int], list[int], list[str]]:
    """Segment numbers and snapshot start segments (ascending), and leftover temp files."""
    segs, snaps, tmps = [], [], []
    for name in os.listdir(pdir):
        if m := _SEG_RE.match(name):
            segs.append(int(m.group(1)))
        elif m := _SNAP_RE.match(name):
            snaps.append(int(m.group(1)))
        elif name.endswith(".tmp"):
            tmps.append(name)
    return sorted(segs), sorted(snaps), tmps


def fsync_dir(path: Path) -> None:
    """Make creations, renames and unlinks in `path` durable (a file's own fsync is not
    enough: its directory entry lives in the directory)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_file(path: Path) -> bytes:
    """Whole file in one read: recovery is faster slicing one buffer than streaming."""
    with open(path, "rb", buffering=0) as f:
        return f.read()


def check_writable(data_dir: Path) -> None:
    """DataDirNotWritable unless a file can be created in `data_dir` (a read-only mount,
    permissions): said at open, not at the first append."""
    probe = data_dir / f".probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DataDirNotWritable(f"data directory {data_dir} is not writable: {exc}") from None
