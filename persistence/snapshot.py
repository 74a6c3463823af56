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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import msgpack

from persistence.errors import CorruptSnapshot, DiskFull, InvalidRecord
from persistence.frame import (
    MAGIC_LEN,
    SNAPSHOT_MAGIC,
    FrameScan,
    encode_frames,
    encode_payload,
)
from persistence.layout import fsync_dir, read_file, snapshot_name
from persistence.record import SNAPSHOT_OPS, Entry, Op, check_record

FORMAT = 1
_VALUE_OPS = (int(Op.PUT), int(Op.INCR))
_DELETE = int(Op.DELETE)


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
    final = pdir / snapshot_name(start_segment)
    tmp = final.with_name(final.name + ".tmp")
    count = 0
    try:
        with open(tmp, "wb") as f:
            f.write(SNAPSHOT_MAGIC)
            header = {
                "format": FORMAT,
                "partition": partition,
                "seq": seq,
                "start_segment": start_segment,
                "created_ms": int(time.time() * 1000),
                "reset": reset,
            }
            f.write(encode_payload(msgpack.packb(header)))
            batch: list[tuple[object, ...]] = []
            est = 0
            for r in records:
                check_record(r, SNAPSHOT_OPS)
                if r[0] > seq:  # type: ignore[operator]
                    raise InvalidRecord(f"snapshot record seq {r[0]} is after snapshot {seq}")
                batch.append(r)
                v = r[4]
                est += len(r[3]) + (len(v) if v is not None else 0) + 40  # type: ignore[arg-type]
                if est >= frame_target_bytes:
                    f.write(encode_frames(batch, max_frame_bytes))
                    count += len(batch)
                    batch, est = [], 0
            if batch:
                f.write(encode_frames(batch, max_frame_bytes))
                count += len(batch)
            f.write(encode_payload(msgpack.packb({"end": True, "records": count})))
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(tmp, final)
        fsync_dir(pdir)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(f"no space writing snapshot {final}: {exc}", [partition]) from None
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return SnapshotInfo(final, seq, start_segment, count, size)


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
