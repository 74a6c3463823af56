"""ENOSPC on a real (tiny tmpfs) filesystem, and a directory that cannot be written.

Needs root to mount (and `mount`, which `make test` installs: tests/needs.py); skips
cleanly otherwise.  The mount is always undone."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from persistence import Config, DataDirNotWritable, DiskFull, Log
from persistence.layout import partition_dir
from tests import needs
from tests.persistence.conftest import put, state_of


@contextlib.contextmanager
def tmpfs(path: Path, opts: str) -> Iterator[Path]:
    needs.root("mounting a tmpfs")
    needs.command("mount")
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10)


def test_enospc_on_append_leaves_a_consistent_log_and_resumes(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "size=1m") as mnt:
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * 256 * 1024)
        cfg = Config(mnt / "data", segment_bytes=256 * 1024)
        log = Log.open(cfg)
        seq, written = 0, []
        with pytest.raises(DiskFull) as err:
            while seq < 10_000:
                seq += 1
                log.append(0, [put(seq, b"k%d" % seq, os.urandom(20_000))])
                written.append(seq)
        assert err.value.partitions == [0]
        seq -= 1  # the failed batch was not written and is not the log's last seq
        assert log.last_seq(0) == seq == written[-1]
        filler.unlink()  # space returns: appends resume
        log.append(0, [put(seq + 1, b"after", b"1")])
        log.close()
        states, report = state_of(cfg.data_dir)
        keys = states[0].maps["m"]
        assert all(b"k%d" % s in keys for s in written) and b"after" in keys
        assert report.problems == {}  # no half frame anywhere


def test_enospc_while_writing_a_snapshot_leaves_no_temp_file(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "size=512k") as mnt:
        cfg = Config(mnt / "data")
        with Log.open(cfg) as log:
            log.append(0, [put(1, b"a", b"1")])
            big = [put(1, b"k%d" % i, os.urandom(10_000)) for i in range(100)]
            with pytest.raises(DiskFull):
                log.snapshot(0, 1, big)
            assert not list(partition_dir(cfg.data_dir, 0).glob("*.tmp"))
            log.append(0, [put(2, b"b", b"2")])
        states, report = state_of(cfg.data_dir)
        assert set(states[0].maps["m"]) == {b"a", b"b"} and report.problems == {}


def test_read_only_directory_is_a_clear_error(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "size=64k,ro") as mnt, pytest.raises(DataDirNotWritable):
        Log.open(Config(mnt))
