"""The active log segment of one partition: positional writes, fsync, truncate-on-failure.

Raw file descriptors and os.pwrite instead of buffered Python files, because the log
must know exactly which bytes reached the kernel: an append is one pwrite of whole
frames at the segment's current size, and if it fails (ENOSPC half-way through) the
file is ftruncate'd back to that size, so the next append starts on a frame boundary
and recovery never sees a half frame in the middle of the log.

Threads.  append() runs on the runtime's event-loop thread; sync() may run in one
worker thread at the same time (group commit: the loop keeps appending the next group
while the previous one is being flushed).  A small lock guards the size bookkeeping and
the descriptor's lifetime, never a disk flush: sync() takes a dup() of the descriptor
and the size it covers under the lock, then fsyncs the dup without it, so an append
never waits for an fsync.  close() from the loop thread can therefore never pull the
descriptor out from under an fsync in progress.

One open descriptor per partition that has been written since startup (at most the
partitions a member owns, 271 by default) plus rolled segments waiting for their final
fsync: opening and closing per batch would cost two syscalls per append and lose the
descriptor sync() needs, and a few hundred descriptors are nothing next to the usual
RLIMIT_NOFILE.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

from persistence.errors import DiskFull
from persistence.frame import MAGIC_LEN, SEGMENT_MAGIC

_FULL = (errno.ENOSPC, errno.EDQUOT)


class SegmentWriter:
    """Appends frames to one segment file."""

    __slots__ = (
        "_lock",
        "closed",
        "fd",
        "number",
        "partition",
        "path",
        "retired",
        "size",
        "synced_size",
    )

    def __init__(self, partition: int, number: int, path: Path, fd: int, size: int) -> None:
        self.partition = partition
        self.number = number
        self.path = path
        self.fd = fd
        self.size = size
        self.synced_size = size
        self.closed = False
        self.retired = False
        """Rolled away from; closed by the next sync() (or now, if nothing is pending)."""
        self._lock = threading.Lock()

    @classmethod
    def create(
        cls, partition: int, number: int, path: Path, magic: bytes = SEGMENT_MAGIC
    ) -> SegmentWriter:
        """A new segment file with its magic.  The caller fsyncs the directory later."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            if exc.errno in _FULL:
                raise DiskFull(f"creating {path}: {exc}", [partition]) from None
            raise
        seg = cls(partition, number, path, fd, 0)
        try:
            seg.write(magic)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        seg.synced_size = 0  # the magic is not durable until the first sync
        return seg

    @classmethod
    def reopen(cls, partition: int, number: int, path: Path, size: int) -> SegmentWriter:
        """Continue appending to a segment recovery has validated (and truncated) to size."""
        fd = os.open(path, os.O_WRONLY)
        return cls(partition, number, path, fd, size)

    @property
    def has_records(self) -> bool:
        return self.size > MAGIC_LEN

    def write(self, data: bytes) -> None:
        """Write whole frames at the end, or leave the file exactly as it was."""
        with self._lock:
            offset = self.size
            view = memoryview(data)
            done = 0
            try:
                while done < len(view):
                    done += os.pwrite(self.fd, view[done:], offset + done)
            except OSError as exc:
                os.ftruncate(self.fd, offset)
                if exc.errno in _FULL:
                    raise DiskFull(
                        f"no space appending {len(data)} bytes to {self.path}: {exc}",
                        [self.partition],
                    ) from None
                raise
            self.size = offset + done

    def sync(self) -> None:
        """fsync what was written before the call, without blocking concurrent write()s.

        If the flush fails the bytes past the last durable offset are in an unknown
        state (Linux may have dropped the dirty pages), so they are cut off: the file
        is then exactly its durable prefix, and DiskFull/OSError tells the caller those
        records are gone.
        """
        with self._lock:
            if self.closed or self.synced_size >= self.size:
                self._close_if_retired()
                return
            fd = os.dup(self.fd)
            target = self.size
        try:
            os.fdatasync(fd) if hasattr(os, "fdatasync") else os.fsync(fd)
        except OSError as exc:
            with self._lock:
                if not self.closed:
                    os.ftruncate(self.fd, self.synced_size)
                    self.size = self.synced_size
            if exc.errno in _FULL:
                raise DiskFull(f"no space syncing {self.path}: {exc}", [self.partition]) from None
            raise
        finally:
            os.close(fd)
        with self._lock:
            self.synced_size = max(self.synced_size, target)
            self._close_if_retired()

    def retire(self, close_now: bool) -> None:
        """Stop appending here; close now or leave it for the next sync() to flush."""
        with self._lock:
            self.retired = True
            if close_now:
                self._close()

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close_if_retired(self) -> None:
        if self.retired and self.synced_size >= self.size:
            self._close()

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)
