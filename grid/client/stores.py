"""Read-through, write-through and durable write-behind to a database (a `MapStore`).

A `StoredMap` puts a map in front of the user's database, as Hazelcast's MapStore does,
but the work is done by clients, so members never run user code:

- read-through: `get` on a miss calls `store.load(key)` once for the whole cluster
  (get_or_load's lease, patterns.py) and keeps the value for `load_ttl`;
- write-through: `put`/`delete` call `store.store([Write])` first and change the map
  only once it returned, so the map never holds what the database refused;
- write-behind: `put`/`delete` change the map and queue the write in one batch, and a
  drainer stores queued writes after `delay`, `batch_size` at a time.

Why the write-behind queue cannot lose a write
==============================================

The queue is a map of its own, `grid.wb.<map>`, keyed by the same key as the entry. A
put sends two operations in one batch: the entry, and the queue record (the encoded
value, or none for a delete; an idempotency key; when it is due; how many attempts
failed). Both land on the key's partition, so they are replicated and persisted
together, through the partition's log: a kill -9 of the primary loses no queued write
that a backup holds (with `sync_backups` >= 1 none that was acknowledged), and a
database outage only makes the queue longer. A newer write to a key replaces its queued
record, so a key is stored once with its latest value (coalescing, as Hazelcast's).

A drain round, run by whichever client holds the lock `grid.wb:<map>` (one at a time in
the cluster; any client may run the drainer, and another takes over when it dies):

1. scan the queue map, read the records and their versions, keep the due ones;
2. call `store.store(writes)` with up to `batch_size` of them; each Write carries its
   idempotency key, the same on every retry (delivery is at least once: a drainer that
   dies after the database committed, before the queue was updated, sends it again);
3. on success, delete each record *if its version is still the one read*: a write that
   came in meanwhile keeps its record and is stored next round;
4. on `StoreUnavailable` (or ConnectionError, TimeoutError: the database is down), put
   the round's records back due later (backoff up to `retry_max`) without counting an
   attempt, and end the round: an outage never turns writes into dead letters;
5. on any other exception, store the batch's writes one at a time, so one bad write
   cannot hold up the rest; a write that failed `max_attempts` times moves to the
   dead-letter map `grid.wb.<map>.dead` (with its error) and leaves the queue.

The queue and dead-letter records are msgpack, whatever the map's codec.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import threading
import time
import uuid
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack

from grid import logs
from grid.client import patterns
from grid.client.aio import LOCK_MAP
from grid.client.keys import Key, decode_key, encode_key, to_ms
from grid.errors import InvalidArgument, Status, Unavailable
from proto import grid_pb2 as pb

log = logs.get("grid.client.stores")

QUEUE_PREFIX = "grid.wb."
DEAD_SUFFIX = ".dead"
LOCK_TTL_S = 30.0


class StoreUnavailable(Exception):
    """Raise it from `MapStore.store` when the database cannot be reached: the writes
    are retried later without counting an attempt (so they never become dead letters)."""


_OUTAGES = (StoreUnavailable, ConnectionError, TimeoutError)


@dataclass(frozen=True)
class Write:
    key: Key
    value: Any
    """The value to store, or None: delete the key."""
    idempotency_key: str
    """The same on every retry of this write: a database that remembers the keys it
    applied can drop a repeat (delivery is at least once)."""
    attempt: int = 1


class MapStore(Protocol):
    """What the user implements; either method may be a coroutine function."""

    def load(self, key: Key) -> Any:
        """The value for a key the map misses, or None when the database has none."""

    def store(self, writes: list[Write]) -> Any:
        """Apply the writes (puts, and deletes where `value` is None), all or none."""


@dataclass
class DrainReport:
    stored: int = 0
    retried: int = 0
    dead: int = 0
    pending: int = 0
    """Records left in the queue (not due yet, retried, or written meanwhile)."""
    outage: str = ""
    skipped: bool = False
    """Another client held the drain lock: this round did nothing."""


@dataclass
class _Queued:
    key: bytes
    record: dict[str, Any]
    version: tuple[int, int]
    write: Write = field(init=False)


# ---- the steps, as patterns.py generators ---------------------------------------------------
def enqueue(
    map_name: str, key: bytes, value: bytes | None, ttl_ms: int, delay: float
) -> Generator[patterns.Step, Any, None]:
    """The entry and its queue record, in one batch on the key's partition."""
    record = {"v": value, "id": uuid.uuid4().hex, "due": time.time() + delay, "n": 0}
    entry = (
        pb.Op(code=pb.DELETE, map=map_name, key=key)
        if value is None
        else pb.Op(code=pb.PUT, map=map_name, key=key, value=value, ttl_ms=ttl_ms)
    )
    queued = pb.Op(code=pb.PUT, map=QUEUE_PREFIX + map_name, key=key,
                   value=msgpack.packb(record))  # fmt: skip
    results = yield "ops", [entry, queued]
    for r in results:
        patterns.check(r)


def drain(
    map_name: str,
    decode: Callable[[bytes], Any],
    raw_keys: bool,
    *,
    batch_size: int,
    max_attempts: int,
    retry_base: float,
    retry_max: float,
    owner: bytes,
) -> Generator[patterns.Step, Any, DrainReport]:
    """One drain round (module docstring), under the map's drain lock."""
    report = DrainReport()
    try:
        _, held = yield from patterns.acquire(
            LOCK_MAP, f"grid.wb:{map_name}", owner, LOCK_TTL_S, time.monotonic()
        )
    except Unavailable:
        report.skipped = True
        return report
    try:
        due = yield from _due(map_name, decode, raw_keys, report)
        for start in range(0, len(due), batch_size):
            chunk = due[start : start + batch_size]
            outcome = yield "load", [q.write for q in chunk]
            if outcome is None:
                yield from _done(map_name, chunk, report)
                continue
            error: Exception = outcome
            if isinstance(error, _OUTAGES):
                report.outage = f"{type(error).__name__}: {error}"
                rest = due[start:]
                yield from _later(map_name, rest, retry_base, retry_max, report, count=False)
                report.pending += len(rest)
                break
            failures: list[tuple[_Queued, Exception]] = []
            if len(chunk) == 1:
                failures.append((chunk[0], error))
            else:  # one at a time: a bad write must not hold up the others
                for q in chunk:
                    one = yield "load", [q.write]
                    if one is None:
                        yield from _done(map_name, [q], report)
                    else:
                        failures.append((q, one))
            for q, failure in failures:
                if isinstance(failure, _OUTAGES):
                    report.outage = f"{type(failure).__name__}: {failure}"
                    yield from _later(map_name, [q], retry_base, retry_max, report, count=False)
                    report.pending += 1
                elif q.record["n"] + 1 >= max_attempts:
                    yield from _bury(map_name, q, failure, report)
                else:
                    q.record["err"] = f"{type(failure).__name__}: {failure}"
                    yield from _later(map_name, [q], retry_base, retry_max, report, count=True)
                    report.pending += 1
    finally:
        yield from patterns.release(LOCK_MAP, f"grid.wb:{map_name}", held)
    return report


def _due(
    map_name: str, decode: Callable[[bytes], Any], raw_keys: bool, report: DrainReport
) -> Generator[patterns.Step, Any, list[_Queued]]:
    now = time.time()
    due: list[_Queued] = []

    def keep(keys: list[bytes], results: list[pb.Result]) -> Generator[patterns.Step, Any, None]:
        for k, r in zip(keys, results, strict=True):
            record = msgpack.unpackb(r.value)
            if record["due"] > now:
                report.pending += 1
                continue
            q = _Queued(k, record, (r.version_ts, r.version_member))
            value = record["v"]
            q.write = Write(
                decode_key(k, raw_keys),
                None if value is None else decode(value),
                record["id"],
                record["n"] + 1,
            )
            due.append(q)
        yield from ()

    yield from patterns.scan_pages(QUEUE_PREFIX + map_name, keep)
    return due


def read_all(map_name: str) -> Generator[patterns.Step, Any, dict[bytes, bytes]]:
    """Every entry of a map (the queue and dead-letter maps)."""
    out: dict[bytes, bytes] = {}

    def keep(keys: list[bytes], results: list[pb.Result]) -> Generator[patterns.Step, Any, None]:
        out.update(zip(keys, (r.value for r in results), strict=True))
        yield from ()

    yield from patterns.scan_pages(map_name, keep)
    return out


def _if_version(q: _Queued) -> dict[str, Any]:
    return {"condition": pb.IF_VERSION, "expected_ts": q.version[0],
            "expected_member": q.version[1]}  # fmt: skip


def _done(
    map_name: str, chunk: Sequence[_Queued], report: DrainReport
) -> Generator[patterns.Step, Any, None]:
    queue = QUEUE_PREFIX + map_name
    ops = [pb.Op(code=pb.DELETE, map=queue, key=q.key, **_if_version(q)) for q in chunk]
    results = yield "ops", ops
    for r in results:
        if r.status == Status.CAS_FAILED:
            report.pending += 1  # written again meanwhile: its new value goes next round
        elif r.status != Status.NOT_FOUND:
            patterns.check(r)
    report.stored += len(chunk)


def _later(
    map_name: str,
    chunk: Sequence[_Queued],
    retry_base: float,
    retry_max: float,
    report: DrainReport,
    *,
    count: bool,
) -> Generator[patterns.Step, Any, None]:
    """Put records back, due after a backoff; `count`: the write failed (not an outage)."""
    queue = QUEUE_PREFIX + map_name
    ops = []
    for q in chunk:
        record = dict(q.record)
        if count:
            record["n"] = record["n"] + 1
        record["o"] = record.get("o", 0) + (0 if count else 1)  # outages seen
        tries = record["n"] + record["o"]
        record["due"] = time.time() + min(retry_max, retry_base * 2 ** max(0, tries - 1))
        ops.append(pb.Op(code=pb.PUT, map=queue, key=q.key, value=msgpack.packb(record),
                         **_if_version(q)))  # fmt: skip
    results = yield "ops", ops
    for r in results:
        if r.status != Status.CAS_FAILED:  # a newer write replaced it: that one is queued
            patterns.check(r)
    report.retried += len(chunk)


def _bury(
    map_name: str, q: _Queued, error: Exception, report: DrainReport
) -> Generator[patterns.Step, Any, None]:
    """Move a write that failed `max_attempts` times to the dead-letter map."""
    record = dict(q.record, n=q.record["n"] + 1, err=f"{type(error).__name__}: {error}")
    record["failed_at"] = time.time()
    ops = [
        pb.Op(code=pb.PUT, map=QUEUE_PREFIX + map_name + DEAD_SUFFIX, key=q.key,
              value=msgpack.packb(record)),
        pb.Op(code=pb.DELETE, map=QUEUE_PREFIX + map_name, key=q.key, **_if_version(q)),
    ]  # fmt: skip
    dead, gone = yield "ops", ops
    patterns.check(dead)
    if gone.status not in (Status.CAS_FAILED, Status.NOT_FOUND):
        patterns.check(gone)
    log.warning(
        "write-behind: a write failed for good; moved to the dead letters",
        map=map_name, key=q.write.key, attempts=record["n"], error=record["err"],
    )  # fmt: skip
    report.dead += 1


# ---- the maps --------------------------------------------------------------------------------
class _Options:
    def __init__(
        self,
        store: MapStore,
        write: str,
        delay: float,
        batch_size: int,
        max_attempts: int,
        retry_base: float,
        retry_max: float,
        load_ttl: float,
    ) -> None:
        if write not in ("behind", "through", "none"):
            raise InvalidArgument(f"write must be behind, through or none, not {write!r}")
        if batch_size < 1 or max_attempts < 1 or delay < 0:
            raise InvalidArgument("batch_size and max_attempts are at least 1, delay >= 0")
        self.store, self.write, self.delay = store, write, delay
        self.batch_size, self.max_attempts = batch_size, max_attempts
        self.retry_base, self.retry_max, self.load_ttl = retry_base, retry_max, load_ttl
        self.owner = os.urandom(16)


class _StoredBase:
    """What the blocking and the asyncio StoredMap share: the map seen through a client,
    the options, and the patterns they drive (each with its own driver)."""

    def __init__(
        self,
        map: Any,
        store: MapStore,
        *,
        write: str = "behind",
        delay: float = 1.0,
        batch_size: int = 100,
        max_attempts: int = 5,
        retry_base: float = 0.5,
        retry_max: float = 30.0,
        load_ttl: float = 3600.0,
    ) -> None:
        self.map = _client_map(map)
        self.name = self.map.name
        self._amap = getattr(self.map, "_m", self.map)  # the AsyncMap (a blocking Map wraps one)
        self.o = _Options(store, write, delay, batch_size, max_attempts, retry_base,
                          retry_max, load_ttl)  # fmt: skip

    def _enqueue(self, key: Key, value: Any, ttl: float | None) -> patterns.Pattern:
        """The write-behind write (the entry and its queue record in one batch)."""
        if self.o.write == "none":
            raise InvalidArgument(f"{self.name} is read-through only (write='none')")
        encoded = None if value is None else self._amap.codec.encode(value)
        return enqueue(self.name, encode_key(key), encoded, to_ms(ttl), self.o.delay)

    def _drain(self) -> patterns.Pattern:
        o, m = self.o, self._amap
        return drain(self.name, m.codec.decode, m.raw_keys, batch_size=o.batch_size,
                     max_attempts=o.max_attempts, retry_base=o.retry_base,
                     retry_max=o.retry_max, owner=o.owner)  # fmt: skip

    def _letters(self, rows: dict[bytes, bytes]) -> dict[Key, dict[str, Any]]:
        return _letters(rows, self._amap.codec.decode, self._amap.raw_keys)


class StoredMap(_StoredBase):
    """A (blocking) map in front of a database; the module docstring says how.

        orders = grid.StoredMap(client.map("orders"), OrdersStore(), write="behind")
        orders.put("o-1", {...}); orders.get("o-2")   # loads o-2 on a miss
        orders.start()                                 # drain in a thread

    `map` is a `Client`'s map or an embedded node's (writes then go through the node's
    own client, as its patterns do)."""

    def __init__(self, map: Any, store: MapStore, **options: Any) -> None:
        """Options: write ("behind", "through", "none"), delay, batch_size, max_attempts,
        retry_base, retry_max, load_ttl (the module docstring says what each does)."""
        if inspect.iscoroutinefunction(store.store):
            raise InvalidArgument("an async MapStore needs AsyncStoredMap")
        super().__init__(map, store, **options)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _drive(self, pattern: patterns.Pattern, user: Callable[[Any], Any] | None) -> Any:
        m = self.map._m
        return patterns.drive_sync(pattern, lambda ops: self.map._run(m._conn.call(ops)), user)

    def get(self, key: Key, default: Any = None) -> Any:
        """The value; on a miss the store's `load` (once for the cluster), if it has one."""
        load = getattr(self.o.store, "load", None)
        if load is None:
            return self.map.get(key, default)
        value = self.map.get_or_load(key, load, ttl=self.o.load_ttl)
        return default if value is None else value

    def put(self, key: Key, value: Any, *, ttl: float | None = None) -> None:
        if value is None:
            raise InvalidArgument("None cannot be stored; delete the key instead")
        self._write(key, value, ttl)

    def delete(self, key: Key) -> None:
        self._write(key, None, None)

    def _write(self, key: Key, value: Any, ttl: float | None) -> None:
        if self.o.write == "through":
            self.o.store.store([Write(key, value, uuid.uuid4().hex)])
            if value is None:
                self.map.delete(key)
            else:
                self.map.put(key, value, ttl=ttl)
            return
        self._drive(self._enqueue(key, value, ttl), None)

    def drain(self) -> DrainReport:
        """One drain round now (the thread does one every `delay` seconds)."""
        return self._drive(self._drain(), _outcome(self.o.store.store))

    def dead_letters(self) -> dict[Key, dict[str, Any]]:
        """The writes that failed `max_attempts` times: key -> value, error, attempts, id."""
        return self._letters(self._drive(read_all(QUEUE_PREFIX + self.name + DEAD_SUFFIX), None))

    def queued(self) -> int:
        """Writes waiting in the queue (due or not)."""
        return len(self._drive(read_all(QUEUE_PREFIX + self.name), None))

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"grid-wb-{self.name}",
                                            daemon=True)  # fmt: skip
            self._thread.start()

    def stop(self, flush: bool = True) -> None:
        """Stop the drainer; `flush`: one last round first (what is due now)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if flush:
            self.drain()

    def _run(self) -> None:
        while not self._stop.wait(self.o.delay):
            try:
                self.drain()
            except Exception as e:  # the cluster unreachable for a moment: try next round
                log.warning("write-behind drain round failed", map=self.name, error=str(e))


def _client_map(map: Any) -> Any:
    """An embedded node's map works through the node's own client (its `remote()`), as its
    patterns do: the queue record and the lease must reach the key's primary."""
    remote = getattr(map, "remote", None)
    return remote() if callable(remote) else map


def _outcome(store_fn: Callable[[list[Write]], Any]) -> Callable[[list[Write]], Any]:
    """A store call as the drain pattern wants it: None on success, else the exception
    (returned, not raised, so the pattern decides what a failure means)."""

    def call(writes: list[Write]) -> Any:
        try:
            result = store_fn(writes)
        except Exception as e:
            return e
        if asyncio.iscoroutine(result):
            return _awaited(result)
        return None

    return call


async def _awaited(result: Any) -> Exception | None:
    try:
        await result
    except Exception as e:
        return e
    return None


def _letters(
    rows: dict[bytes, bytes], decode: Callable[[bytes], Any], raw_keys: bool
) -> dict[Key, dict[str, Any]]:
    out = {}
    for k, raw in rows.items():
        record = msgpack.unpackb(raw)
        value = None if record["v"] is None else decode(record["v"])
        out[decode_key(k, raw_keys)] = {
            "value": value, "error": record.get("err", ""), "attempts": record["n"],
            "id": record["id"], "failed_at": record.get("failed_at"),
        }  # fmt: skip
    return out


class AsyncStoredMap(_StoredBase):
    """StoredMap for asyncio: the same behaviour on an AsyncMap; `store` methods may be
    coroutine functions or plain ones."""

    def __init__(self, map: Any, store: MapStore, **options: Any) -> None:
        super().__init__(map, store, **options)
        self._task: asyncio.Task[None] | None = None

    async def _drive(self, pattern: patterns.Pattern, user: Callable[[Any], Any] | None) -> Any:
        return await patterns.drive_async(pattern, self.map._conn.call, user)

    async def get(self, key: Key, default: Any = None) -> Any:
        load = getattr(self.o.store, "load", None)
        if load is None:
            return await self.map.get(key, default)
        value = await self.map.get_or_load(key, load, ttl=self.o.load_ttl)
        return default if value is None else value

    async def put(self, key: Key, value: Any, *, ttl: float | None = None) -> None:
        if value is None:
            raise InvalidArgument("None cannot be stored; delete the key instead")
        await self._write(key, value, ttl)

    async def delete(self, key: Key) -> None:
        await self._write(key, None, None)

    async def _write(self, key: Key, value: Any, ttl: float | None) -> None:
        if self.o.write == "through":
            result = self.o.store.store([Write(key, value, uuid.uuid4().hex)])
            if asyncio.iscoroutine(result):
                await result
            if value is None:
                await self.map.delete(key)
            else:
                await self.map.put(key, value, ttl=ttl)
            return
        await self._drive(self._enqueue(key, value, ttl), None)

    async def dead_letters(self) -> dict[Key, dict[str, Any]]:
        return self._letters(
            await self._drive(read_all(QUEUE_PREFIX + self.name + DEAD_SUFFIX), None)
        )

    async def queued(self) -> int:
        return len(await self._drive(read_all(QUEUE_PREFIX + self.name), None))

    async def drain(self) -> DrainReport:
        return await self._drive(self._drain(), _outcome(self.o.store.store))

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, flush: bool = True) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if flush:
            await self.drain()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.o.delay)
            try:
                await self.drain()
            except Exception as e:
                log.warning("write-behind drain round failed", map=self.name, error=str(e))
