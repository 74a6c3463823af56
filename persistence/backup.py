"""Backup and restore of a whole data directory, online.

A backup is a directory holding, for every partition, the newest snapshot, and the
journal segments from the oldest position one of them replays from (or the
per-partition segments after each snapshot, for a `Log` of earlier builds), plus
manifest.json listing each file's length and sha256.  It is
itself a valid data directory (restore is a verified copy), so recovery code is the
only reader of the data format.

Consistency.  Log.backup_files() runs on the loop thread after a sync(): between two
appends it names every file and its current length, a cut that is consistent across
all partitions.  Those files are then hard-linked into a staging directory inside the
data directory (same filesystem, so it is instant and survives the member deleting
them after a snapshot), and copied from there, each only up to its recorded length,
so appends that continue meanwhile are not part of the backup.  The copy and the
hashing can run in a worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from persistence.errors import BackupError
from persistence.journal import Journal
from persistence.layout import LOCK_NAME, fsync_dir
from persistence.lock import DirLock
from persistence.log import Log

MANIFEST = "manifest.json"
FORMAT = 1
_CHUNK = 1024 * 1024


def backup(log: Log | Journal, dest: Path) -> dict[str, object]:
    """Copy a consistent point-in-time image of `log` into the empty directory `dest`."""
    dest = Path(dest)
    _require_empty(dest)
    data_dir = log.config.data_dir
    files = log.backup_files()
    staging = data_dir / f".backup-{os.getpid()}-{time.time_ns()}"
    try:
        for rel, _ in files:
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(data_dir / rel, staging / rel)
        entries = []
        for rel, size in files:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            digest = _copy(staging / rel, dest / rel, size)
            entries.append({"path": rel, "size": size, "sha256": digest})
        manifest: dict[str, object] = {
            "format": FORMAT,
            "created_ms": int(time.time() * 1000),
            "source": str(data_dir),
            "files": entries,
        }
        _write_json(dest / MANIFEST, manifest)
        for d in {(dest / e["path"]).parent for e in entries} | {dest}:
            fsync_dir(d)
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def verify_backup(src: Path) -> list[str]:
    """Every problem with a backup directory (missing, resized or altered files)."""
    src = Path(src)
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        return [f"{MANIFEST}: unreadable: {exc}"]
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), list):
        return [f"{MANIFEST}: unknown format"]
    problems = []
    for e in manifest["files"]:
        rel = e.get("path", "")
        path = src / rel
        if rel.startswith("/") or ".." in Path(rel).parts:
            problems.append(f"{rel}: unsafe path")
        elif not path.is_file():
            problems.append(f"{rel}: missing")
        elif path.stat().st_size != e.get("size"):
            problems.append(f"{rel}: size {path.stat().st_size}, manifest says {e.get('size')}")
        elif _sha256(path) != e.get("sha256"):
            problems.append(f"{rel}: checksum mismatch")
    return problems


def restore(src: Path, data_dir: Path) -> int:
    """Verify a backup and copy it into an empty (or missing) data directory.

    Holds the data directory's lock meanwhile so no member starts on a half-restored
    directory.  Returns the number of files restored.  Raises BackupError.
    """
    src, data_dir = Path(src), Path(data_dir)
    problems = verify_backup(src)
    if problems:
        raise BackupError("backup is damaged: " + "; ".join(problems))
    if data_dir.exists() and any(n != LOCK_NAME for n in os.listdir(data_dir)):
        raise BackupError(f"restore target {data_dir} is not empty")
    lock = DirLock(data_dir)
    lock.acquire()
    try:
        manifest = json.loads((src / MANIFEST).read_text())
        dirs = {data_dir}
        for e in manifest["files"]:
            target = data_dir / e["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            dirs.add(target.parent)
            if _copy(src / e["path"], target, e["size"]) != e["sha256"]:
                raise BackupError(f"{e['path']}: changed while restoring")
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            fsync_dir(d)
        return len(manifest["files"])
    finally:
        lock.release()


def _copy(src: Path, dst: Path, size: int) -> str:
    """Copy the first `size` bytes, fsync, and return their sha256."""
    h = hashlib.sha256()
    left = size
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        while left > 0:
            chunk = fi.read(min(_CHUNK, left))
            if not chunk:
                raise BackupError(f"{src} is shorter than {size} bytes")
            h.update(chunk)
            fo.write(chunk)
            left -= len(chunk)
        fo.flush()
        os.fsync(fo.fileno())
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, obj: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _require_empty(dest: Path) -> None:
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"backup destination {dest} is not empty")
    with contextlib.suppress(FileExistsError):
        dest.mkdir(parents=True)
