"""Runs a client's batch of operations against the store: the proto <-> store adapter.

One call per batch, one lock acquisition per batch, one clock reading per
batch: everything per-operation here is a dict lookup and a store call. Each
operation gets its own result; a failed operation never fails its neighbours.
Reads of a map that does not exist answer as an empty map without creating
it, so a client cannot make the member allocate maps by reading random names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from grid import logs
from grid.config import Config
from grid.errors import GridError, InvalidArgument, Status
from grid.store import Store
from grid.store.durability import DISK_FULL_WRITE, Durability
from grid.store.entry import HEAD, HEAD_SIZE, SLOT_AT, VHEAD_SIZE, value_len, value_of
from grid.store.recordmap import RecordMap
from proto import grid_pb2 as pb

log = logs.get("grid.member.executor")
REPLY_HEADROOM = 64 * 1024
REPLY_FULL = "reply would exceed max_message_bytes; retry this operation in a smaller batch"
Handler = Callable[["BatchExecutor", pb.Op, pb.Result, int], None]


class BatchExecutor:
    __slots__ = (
        "_empty",
        "_handlers",
        "_reply_budget",
        "config",
        "durability",
        "fanout",
        "from_backup",
        "last_token",
        "misrouted",
        "operations",
        "rejected",
        "requests",
        "routing",
        "store",
    )

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        self.requests = 0
        self.operations = 0
        self.rejected = 0
        # What reads of a map that does not exist see: an empty map that is never
        # registered, so reading random names makes the member allocate nothing.
        self._empty = RecordMap("", store.partitions)
        self._reply_budget = 0
        self.durability: Durability | None = None  # set by the member when it has a data_dir
        self.last_token = 0  # log token of the last batch's changes (0: none)
        self.routing: Any = (
            None  # grid/member/placement/routing.py Routing, once the member is in a cluster
        )
        self.misrouted = 0  # operations of the last batch answered NOT_OWNER
        self.fanout = False  # the last batch had a map-wide operation (SIZE, CLEAR)
        self.from_backup = False  # the batch's reads may be answered from a backup copy
        self._handlers: dict[int, Handler] = {
            pb.GET: BatchExecutor._get,
            pb.PUT: BatchExecutor._put,
            pb.DELETE: BatchExecutor._delete,
            pb.EXPIRE: BatchExecutor._expire,
            pb.TTL: BatchExecutor._ttl,
            pb.CONTAINS: BatchExecutor._contains,
            pb.INCR: BatchExecutor._incr,
            pb.SIZE: BatchExecutor._size,
            pb.SCAN: BatchExecutor._scan,
            pb.CLEAR: BatchExecutor._clear,
            pb.TOUCH: BatchExecutor._touch,
        }

    def execute(self, request: pb.BatchRequest) -> pb.BatchReply:
        reply = pb.BatchReply(id=request.id)
        if self.routing is not None:
            reply.table_version = self.routing.version
        ops = request.ops
        self.requests += 1
        self.misrouted = 0
        self.fanout = False
        self.from_backup = request.read_from_backup
        if len(ops) > self.config.max_batch_ops:
            self.rejected += 1
            reply.status = pb.TOO_LARGE
            reply.max_batch_ops = self.config.max_batch_ops
            reply.error = (
                f"batch has {len(ops)} operations; max_batch_ops is {self.config.max_batch_ops}"
            )
            return reply
        self.operations += len(ops)
        # Replies are bounded like requests: reads that would push this reply past the
        # member's message limit answer UNAVAILABLE ("retry in a smaller batch"), and the
        # SDK re-asks for exactly those. A single value always fits (config validation).
        self._reply_budget = self.config.max_message_bytes - REPLY_HEADROOM
        results = reply.results
        handlers = self._handlers
        store = self.store
        with store.lock:
            now = store.clock()
            for op in ops:
                r = results.add()
                handler = handlers.get(op.code)
                try:
                    if handler is None:
                        raise InvalidArgument(f"unknown operation code {op.code}")
                    handler(self, op, r, now)
                except GridError as e:
                    r.status = e.status  # type: ignore[assignment]
                    r.error = e.message
                    if e.status == Status.NOT_OWNER:
                        self.misrouted += 1
                except Exception as e:  # a bug: answer this op, keep serving the others
                    log.exception("operation failed", code=op.code, map=op.map)
                    r.status = pb.UNAVAILABLE
                    r.error = f"internal error: {type(e).__name__}: {e}"
            if self.durability is not None:
                self.last_token = self.durability.flush()
                if self.durability.write_failed:
                    fail_writes(ops, results, DISK_FULL_WRITE)
        return reply

    def run_keys(self, map_name: str, plans: Sequence[Any]) -> None:
        """`execute` for the front ends' one-key GETs and PUTs (grid/frontends/ops.py
        KeyPlan): the same store calls, checks and counters, with each result written
        into its plan instead of a pb.Result (a plan's status starts as OK). The caller
        keeps it to max_batch_ops."""
        self.requests += 1
        self.misrouted = 0
        self.fanout = False
        self.from_backup = False
        self.operations += len(plans)
        full = self.config.max_message_bytes - REPLY_HEADROOM
        budget = full
        store = self.store
        read, write, unpack = store.read, store.write, HEAD.unpack_from
        get, not_found = pb.GET, pb.NOT_FOUND
        rmap = store.maps.get(map_name)  # looked up once; a PUT creates it if need be
        writes = False
        with store.lock:
            now = store.clock()
            for plan in plans:  # (entry.value_of written out, as store.read inlines its checks)
                try:
                    if plan.code == get:
                        m = rmap if rmap is not None else self._read_map(map_name)
                        blob = read(m, plan.key, now)
                        if blob is None:
                            plan.status = not_found
                            continue
                        value = blob[VHEAD_SIZE:] if blob[SLOT_AT] & 1 else blob[HEAD_SIZE:]
                        if len(value) > budget and budget < full:  # (_spend, inlined)
                            plan.status = pb.UNAVAILABLE
                            plan.error = REPLY_FULL
                            continue
                        budget -= len(value) + 16
                        plan.value = value
                        plan.version_ts = unpack(blob)[0]
                    else:
                        writes = True
                        if rmap is None:
                            rmap = store.map(map_name)
                        at = plan.expire_at
                        write(rmap, plan.key, plan.value, now, max(1, at - now) if at else 0, 0,
                              plan.condition)  # fmt: skip
                except GridError as e:
                    plan.status = e.status
                    plan.error = e.message
                    if e.status == Status.NOT_OWNER:
                        self.misrouted += 1
                except Exception as e:  # a bug: answer this op, keep serving the others
                    log.exception("operation failed", code=plan.code, map=map_name)
                    plan.status = pb.UNAVAILABLE
                    plan.error = f"internal error: {type(e).__name__}: {e}"
            if self.durability is not None:
                self.last_token = self.durability.flush()
                if self.durability.write_failed and writes:
                    for plan in plans:
                        if plan.code != pb.GET and plan.status == pb.OK:
                            plan.status = pb.UNAVAILABLE
                            plan.error = DISK_FULL_WRITE

    def _spend(self, size: int) -> bool:
        """Charge a result's payload to this reply; False if it no longer fits."""
        full = self.config.max_message_bytes - REPLY_HEADROOM
        if size > self._reply_budget and self._reply_budget < full:  # the first always fits
            return False
        self._reply_budget -= size + 16
        return True

    @staticmethod
    def _reply_full(r: pb.Result) -> None:
        r.status = pb.UNAVAILABLE
        r.error = REPLY_FULL

    # ---- one method per opcode; each fills `r` --------------------------------------------------
    def _read_map(self, name: str) -> RecordMap:
        rmap = self.store.maps.get(name)
        if rmap is not None:
            return rmap
        if not name:
            raise InvalidArgument("map name is empty")
        return self._empty

    def _get(self, op: pb.Op, r: pb.Result, now: int) -> None:
        store = self.store
        blob = store.read(self._read_map(op.map), op.key, now, self.from_backup)
        if blob is None:
            r.status = pb.NOT_FOUND
            return
        if not self._spend(value_len(blob)):
            return self._reply_full(r)
        r.value = value_of(blob)
        r.version_ts, r.version_member, volatile = HEAD.unpack_from(blob)
        if volatile & 1:
            # (>= 1: a backup copy's max-idle clock may have run out; its TTL has not)
            deadline = store.deadline(blob)
            r.ttl_ms = max(1, deadline - now)
            r.expire_at_ms = deadline

    def _put(self, op: pb.Op, r: pb.Result, now: int) -> None:
        # (each field read of a protobuf message builds a Python object: read each once)
        condition = op.condition
        expected = (op.expected_ts, op.expected_member) if condition == pb.IF_VERSION else None
        expire_at = op.expire_at_ms
        blob = self.store.write(
            self.store.map(op.map),
            op.key,
            op.value,
            now,
            max(1, expire_at - now) if expire_at else op.ttl_ms,
            op.max_idle_ms,
            condition,
            expected,
        )
        r.version_ts, r.version_member, _ = HEAD.unpack_from(blob)

    def _delete(self, op: pb.Op, r: pb.Result, now: int) -> None:
        expected = (op.expected_ts, op.expected_member) if op.condition == pb.IF_VERSION else None
        r.count = int(self.store.delete(self._read_map(op.map), op.key, now, expected))

    def _expire(self, op: pb.Op, r: pb.Result, now: int) -> None:
        ttl = max(1, op.expire_at_ms - now) if op.expire_at_ms else op.ttl_ms
        r.count = int(self.store.expire(self._read_map(op.map), op.key, ttl, now))

    def _ttl(self, op: pb.Op, r: pb.Result, now: int) -> None:
        left = self.store.ttl(self._read_map(op.map), op.key, now, self.from_backup)
        if left is None:
            r.status = pb.NOT_FOUND
        else:
            r.count = left
            if left >= 0:
                r.expire_at_ms = now + left

    def _contains(self, op: pb.Op, r: pb.Result, now: int) -> None:
        r.count = int(self.store.contains(self._read_map(op.map), op.key, now, self.from_backup))

    def _incr(self, op: pb.Op, r: pb.Result, now: int) -> None:
        r.count = self.store.incr(
            self.store.map(op.map), op.key, op.delta, op.ttl_ms, now, op.decimal
        )

    def _size(self, op: pb.Op, r: pb.Result, now: int) -> None:
        r.count = self.store.size(self._read_map(op.map))
        self.fanout = True

    def _scan(self, op: pb.Op, r: pb.Result, now: int) -> None:
        keys, cursor = self.store.scan(self._read_map(op.map), op.cursor, op.limit, now)
        if not self._spend(sum(map(len, keys)) + 4 * len(keys)):
            return self._reply_full(r)
        r.keys.extend(keys)
        r.cursor = cursor

    def _clear(self, op: pb.Op, r: pb.Result, now: int) -> None:
        r.count = self.store.clear(self._read_map(op.map))
        self.fanout = True

    def _touch(self, op: pb.Op, r: pb.Result, now: int) -> None:
        r.count = int(self.store.touch(self._read_map(op.map), op.key, now))


WRITES = frozenset({pb.PUT, pb.DELETE, pb.EXPIRE, pb.INCR, pb.CLEAR})


def fail_writes(ops: Sequence[pb.Op], results: Sequence[pb.Result], why: str) -> None:
    """Turn the successful writes of a batch into UNAVAILABLE (they did not reach disk)."""
    for op, r in zip(ops, results, strict=True):
        if op.code in WRITES and r.status == pb.OK:
            r.status = pb.UNAVAILABLE
            r.error = why


assert {s.name: s.value for s in Status} == dict(pb.Status.items()), "Status drifted from proto"
