"""Online backup is a consistent point in time; restore verifies before copying."""

from __future__ import annotations

from pathlib import Path

import pytest

from persistence import BackupError, Config, Log, backup, restore, verify_backup
from tests.persistence.conftest import put, state_of


def test_backup_restore_roundtrip_at_a_point_in_time(cfg: Config, tmp_path: Path) -> None:
    with Log.open(cfg) as log:
        for p in range(3):
            for i in range(1, 80):
                log.append(p, [put(i, b"k%d" % (i % 20), b"v%d" % i)])
            if p != 1:
                log.snapshot(p, 79, [put(79, b"k%d" % k, b"snap") for k in range(20)])
                log.append(p, [put(80, b"after-snap", b"1")])
        manifest = backup(log, tmp_path / "bk")
        log.append(0, [put(81, b"after-backup", b"1")])  # not part of the backup
        expected, _ = log.backup_files(), None
    assert verify_backup(tmp_path / "bk") == []
    assert len(manifest["files"]) == len(expected)  # type: ignore[arg-type]
    assert restore(tmp_path / "bk", tmp_path / "restored") == len(expected)
    got, report = state_of(tmp_path / "restored")
    src, _ = state_of(cfg.data_dir)
    assert b"after-backup" in src[0].maps["m"]
    assert b"after-backup" not in got[0].maps["m"]
    for p in range(3):
        want = dict(src[p].maps["m"])
        want.pop(b"after-backup", None)
        assert got[p].maps["m"] == want
    assert report.problems == {}


def test_restore_refuses_damaged_backup_and_non_empty_target(cfg: Config, tmp_path: Path) -> None:
    with Log.open(cfg) as log:
        log.append(0, [put(1, b"a", b"1")])
        backup(log, tmp_path / "bk")
    seg = next((tmp_path / "bk").rglob("seg-*.log"))
    good = seg.read_bytes()
    seg.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    assert verify_backup(tmp_path / "bk") == [
        f"{seg.relative_to(tmp_path / 'bk')}: checksum mismatch"
    ]
    with pytest.raises(BackupError, match="checksum"):
        restore(tmp_path / "bk", tmp_path / "r1")
    seg.write_bytes(good)
    (tmp_path / "r2").mkdir()
    (tmp_path / "r2" / "junk").write_text("x")
    with pytest.raises(BackupError, match="not empty"):
        restore(tmp_path / "bk", tmp_path / "r2")
    seg.unlink()
    assert "missing" in verify_backup(tmp_path / "bk")[0]
