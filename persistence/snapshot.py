"""Snapshot files: a partition's live state at one sequence number, written atomically.

A snapshot lets recovery skip the history of every key and lets the log be cut: once
it is durable, the segments before it are only needed as a fallback.

Format: SNAPSHOT_MAGIC, then frames (frame.py) of three kinds, in order

    header   msgpack map {format, partition, seq, start_segment, created_ms, reset}
    records  msgpack arrays of records (PUT/INCR for live entries, DELETE for
             tombstones), about frame_target_bytes each
    trailer  msgpack map {end: true, records: <count>}

A file is valid only if every frame checks, the header comes first, the trailer last
with the right count, and nothing follows it: a snapshot is all or nothing.

Writing (the same dance as Redis's rdbSave and every careful database):

    1. write <name>.tmp         the records come from an iterable the caller captured
                                at `seq` (a point-in-time copy), so appends continue
    2. fsync the file           its bytes are on disk
    3. rename to <name>         atomic: a reader sees the old state or the new, whole
    4. fsync the directory      the rename itself is on disk

Only after step 4 may segments before it be deleted (log.py does that).  A crash at any
point leaves either no snapshot (the .tmp is deleted at recovery) or a complete one.

`seq` is the sequence number the state reflects; replay continues with records whose
seq is greater, from segment `start_segment` on.  `reset` marks a snapshot installed
from elsewhere (migration, catch-up): the history before it is not this partition's any
more, so recovery never falls back past it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgpack

from persistence.errors import CorruptSnapshot, DiskFull, InvalidRecord
from persistence.frame import (
    MAGIC_LEN,
    SNAPSHOT_MAGIC,
    FrameScan,
    encode_payload,
    frame_header,
    pack_payloads,
)
from persistence.layout import fsync_dir, read_file, snapshot_name
from persistence.record import SNAPSHOT_OPS, Entry, Op, check_record

FORMAT = 1
_VALUE_OPS = (int(Op.PUT), int(Op.INCR))
_DELETE = int(Op.DELETE)
_IOV_MAX = 512  # buffers per writev (Linux allows 1024)


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """What a finished snapshot wrote."""

    path: Path
    seq: int
    start_segment: int
    records: int
    bytes: int


def write_snapshot(
    pdir: Path,
    partition: int,
    seq: int,
    start_segment: int,
    records: Iterable[tuple[object, ...]],
    *,
    reset: bool = False,
    frame_target_bytes: int,
    max_frame_bytes: int,
) -> SnapshotInfo:
    """Write, fsync, rename and fsync-dir one snapshot.  Touches no file but its own, so
    it may run in a worker thread while the partition keeps appending."""
    writer = SnapshotWriter(
        pdir, partition, seq, start_segment, reset=reset, max_frame_bytes=max_frame_bytes
    )
    try:
        batch: list[tuple[object, ...]] = []
        est = 0
        for r in records:
            batch.append(r)
            v = r[4]
            est += len(r[3]) + (len(v) if v is not None else 0) + 40  # type: ignore[arg-type]
            if est >= frame_target_bytes:
                writer.write(writer.pack(batch))
                batch, est = [], 0
        if batch:
            writer.write(writer.pack(batch))
        return writer.commit()
    except BaseException:
        writer.abort()
        raise


class SnapshotWriter:
    """One snapshot written a slice at a time: the caller packs and frames slices of
    records where it likes (a member does it on its event loop, between requests) and
    hands the bytes to write() and commit() in a worker thread, which then only makes
    system calls: one writev per batch, so it takes the GIL a few times per MiB and never
    competes with the loop for long.  The file is the same as write_snapshot()'s.

        w = SnapshotWriter(pdir, partition, seq, start_segment, max_frame_bytes=...)
        pieces = w.pack(records)     # checks (unless trusted), msgpack, CRC; no I/O
        w.write(pieces)              # appends them to <name>.tmp
        info = w.commit()            # trailer, fsync, rename, fsync the directory
        w.abort()                    # after any failure: close and remove the .tmp

    pack() and write() may run in different threads, but each call must finish before
    the next call touching the same state begins (pack: the count; write/commit: the
    file).
    """

    def __init__(
        self,
        pdir: Path,
        partition: int,
        seq: int,
        start_segment: int,
        *,
        reset: bool = False,
        max_frame_bytes: int,
        on_commit: Callable[[SnapshotInfo], None] | None = None,
    ) -> None:
        self.partition = partition
        self.seq = seq
        self.start_segment = start_segment
        self.reset = reset
        self.max_frame_bytes = max_frame_bytes
        self.final = pdir / snapshot_name(start_segment)
        self.tmp = self.final.with_name(self.final.name + ".tmp")
        self.records = 0
        self.info: SnapshotInfo | None = None
        self._fd: int | None = None
        self._size = 0
        self._on_commit = on_commit

    def pack(self, records: Sequence[tuple[object, ...]], trusted: bool = False) -> list[bytes]:
        """A slice of records (PUT/INCR/DELETE, seq <= self.seq) as frames: header and
        payload alternately, ready for write().

        `trusted`: built by the caller from typed state (a member's store), so the
        per-field check is skipped as Log.append does for the same records."""
        if not trusted:
            seq = self.seq
            for r in records:
                check_record(r, SNAPSHOT_OPS)
                if r[0] > seq:  # type: ignore[operator]
                    raise InvalidRecord(f"snapshot record seq {r[0]} is after snapshot {seq}")
        if not records:
            return []
        pieces: list[bytes] = []
        for payload in pack_payloads(records, self.max_frame_bytes):
            pieces += (frame_header(payload), payload)
        self.records += len(records)
        return pieces

    def write(self, pieces: Sequence[bytes]) -> None:
        """Append packed frames to the temporary file (a worker thread: system calls)."""
        with self._io():
            fd = self._open()
            for i in range(0, len(pieces), _IOV_MAX):
                self._write_all(fd, pieces[i : i + _IOV_MAX])

    def commit(self) -> SnapshotInfo:
        """Trailer, fsync, rename, fsync the directory: the snapshot is durable and whole.
        Calls abort() itself if it fails."""
        try:
            with self._io():
                fd = self._open()
                trailer = msgpack.packb({"end": True, "records": self.records})
                self._write_all(fd, [encode_payload(trailer)])
                os.fsync(fd)
                self._fd = None
                os.close(fd)
                os.replace(self.tmp, self.final)
                fsync_dir(self.final.parent)
        except BaseException:
            self.abort()
            raise
        info = SnapshotInfo(self.final, self.seq, self.start_segment, self.records, self._size)
        self.info = info
        if self._on_commit is not None:
            self._on_commit(info)
        return info

    def abort(self) -> None:
        """Forget the snapshot: close and remove the temporary file (never the final one)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.info is None:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            header = {
                "format": FORMAT,
                "partition": self.partition,
                "seq": self.seq,
                "start_segment": self.start_segment,
                "created_ms": int(time.time() * 1000),
                "reset": self.reset,
            }
            self._write_all(self._fd, [SNAPSHOT_MAGIC, encode_payload(msgpack.packb(header))])
        return self._fd

    def _write_all(self, fd: int, pieces: Sequence[bytes]) -> None:
        want = sum(map(len, pieces))
        done = os.writev(fd, pieces)
        if done < want:  # short (a signal, a nearly full disk): finish plainly
            rest = memoryview(b"".join(pieces))[done:]
            while rest:
                rest = rest[os.write(fd, rest) :]
        self._size += want

    @contextlib.contextmanager
    def _io(self) -> Iterator[None]:
        """A full disk as DiskFull (so the member can refuse writes), other errors as is."""
        try:
            yield
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(
                    f"no space writing snapshot {self.final}: {exc}", [self.partition]
                ) from None
            raise


@dataclass(slots=True)
class LoadedSnapshot:
    header: dict[str, object]
    maps: dict[str, dict[bytes, Entry]]
    records: int

    @property
    def seq(self) -> int:
        return self.header["seq"]  # type: ignore[return-value]

    @property
    def start_segment(self) -> int:
        return self.header["start_segment"]  # type: ignore[return-value]

    @property
    def reset(self) -> bool:
        return bool(self.header.get("reset"))


def load_snapshot(path: Path, partition: int, max_frame_bytes: int) -> LoadedSnapshot:
    """Read and validate a whole snapshot into per-map dicts; CorruptSnapshot if invalid.

    All or nothing: the state is built in fresh dicts that are thrown away on any error,
    so a caller falling back to an older snapshot starts clean.
    """
    try:
        buf = read_file(path)
    except OSError as exc:
        raise CorruptSnapshot(f"{path.name}: unreadable: {exc}") from None
    if buf[:MAGIC_LEN] != SNAPSHOT_MAGIC:
        raise CorruptSnapshot(f"{path.name}: bad magic")
    scan = FrameScan(buf, MAGIC_LEN, max_frame_bytes)
    frames = iter(scan)
    header = _map_frame(next(frames, None), path, "header")
    expect = {"format": FORMAT, "partition": partition}
    for k, v in expect.items():
        if header.get(k) != v:
            raise CorruptSnapshot(f"{path.name}: header {k}={header.get(k)!r}, expected {v!r}")
    seq, start = header.get("seq"), header.get("start_segment")
    if type(seq) is not int or type(start) is not int or seq < 0 or start < 1:
        raise CorruptSnapshot(f"{path.name}: bad header {header!r:.200}")
    if path.name != snapshot_name(start):
        raise CorruptSnapshot(f"{path.name}: header says start_segment {start}")
    maps: dict[str, dict[bytes, Entry]] = {}
    count = 0
    trailer: dict[str, object] | None = None
    unpackb = msgpack.unpackb
    for payload in frames:
        if trailer is not None:
            raise CorruptSnapshot(f"{path.name}: data after the trailer")
        try:
            obj = unpackb(payload, use_list=False, raw=False)
        except Exception as exc:
            raise CorruptSnapshot(f"{path.name}: undecodable frame: {exc}") from None
        if type(obj) is dict:
            trailer = obj
            continue
        if type(obj) is not tuple:
            raise CorruptSnapshot(f"{path.name}: unexpected frame type {type(obj).__name__}")
        try:
            count += _load_records(obj, maps, seq)
        except (ValueError, TypeError) as exc:
            raise CorruptSnapshot(f"{path.name}: bad record: {exc}") from None
    if scan.error is not None:
        raise CorruptSnapshot(f"{path.name}: {scan.error}")
    if trailer is None or trailer.get("end") is not True:
        raise CorruptSnapshot(f"{path.name}: no trailer (incomplete file)")
    if trailer.get("records") != count:
        raise CorruptSnapshot(f"{path.name}: trailer says {trailer.get('records')} records")
    return LoadedSnapshot(header, maps, count)


def _map_frame(payload: memoryview | None, path: Path, what: str) -> dict[str, object]:
    if payload is None:
        raise CorruptSnapshot(f"{path.name}: missing {what}")
    try:
        obj = msgpack.unpackb(payload, raw=False)
    except Exception as exc:
        raise CorruptSnapshot(f"{path.name}: undecodable {what}: {exc}") from None
    if type(obj) is not dict:
        raise CorruptSnapshot(f"{path.name}: {what} is not a map")
    return obj


def _load_records(
    recs: tuple[object, ...], maps: dict[str, dict[bytes, Entry]], snap_seq: int
) -> int:
    """Validate and insert one frame's records.  Inlined checks: this runs per key."""
    last_map: object = None
    d: dict[bytes, Entry] = {}
    for r in recs:
        if type(r) is not tuple or len(r) != 9:
            raise ValueError("record is not a 9-array")
        seq, op, m, k, v, ts, mid, exp, idle = r
        if (
            type(seq) is not int
            or type(k) is not bytes
            or type(ts) is not int
            or type(mid) is not int
            or type(exp) is not int
            or type(idle) is not int
            or not 0 <= seq <= snap_seq
            or ts < 0
            or mid < 0
            or exp < 0
            or idle < 0
        ):
            raise ValueError(f"bad field in {r!r:.100}")
        if op in _VALUE_OPS:
            if type(v) is not bytes:
                raise ValueError("PUT without a bytes value")
        elif op != _DELETE or v is not None:
            raise ValueError(f"op {op!r} not allowed in a snapshot")
        if m != last_map:
            if type(m) is not str:
                raise ValueError("map name is not a string")
            got = maps.get(m)
            if got is None:
                got = maps[m] = {}
            d = got
            last_map = m
        d[k] = r[4:]  # type: ignore[assignment]
    return len(recs)
