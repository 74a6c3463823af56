"""The data directory lock: two members sharing one directory would interleave appends
into the same segments and destroy both.

flock(2) rather than a pid file alone: the kernel releases it when the holder dies, even
by kill -9, so a crashed member never leaves a stale lock that needs manual cleanup.  The
pid is written into the file only so the error message can name the holder.  flock is
per open file description, so a second open in the same process is refused too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from persistence.errors import DataDirLocked, DataDirNotWritable
from persistence.layout import LOCK_NAME


class DirLock:
    """An exclusive, non-blocking lock on a data directory, held until release()."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise DataDirNotWritable(f"data directory {self.data_dir}: {exc}") from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise DataDirLocked(str(self.data_dir), pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor drops the flock

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).split()[0])
    except (OSError, ValueError, IndexError):
        return None
