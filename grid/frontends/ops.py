"""What a protocol front end asks of its member: batches of grid operations, run in order.

A command of a foreign protocol (RESP now, memcached later) becomes one of:

- a `Plan`: the grid operations it needs and how their results become its reply.
  The connection gathers the plans of pipelined commands into one BatchRequest
  and runs it through `GridService.run`, the entry point the SDK's batches use, so
  a pipeline of 16 GETs costs one batch, not 16 (DESIGN.md: batches are first
  class). Operations run in command order, each with its own result.
- a coroutine, for a command that needs the answer of one operation to choose the
  next (a compare-and-set loop, a scan over partitions): it calls `Runner.call`
  as often as it needs; the connection runs nothing after it until it is done.
- a `KeyPlan`: the one-key GET or PUT of the commonest commands (GET, SET, a
  memcached get or set). The same as a Plan of one operation, but it is its own
  operation, result and reply slot: the connection runs a run of them through
  `GridService.run_keys`, which calls the store as the batch executor does, with no
  protobuf message built unless the batch must wait (forwarding, fsync, sync
  backups). A command's cost is mostly per-object Python work, and this path makes
  one object per command where a Plan makes five (op, request copy, result, reply,
  closure).
- bytes: a reply that needs no data (PING, CLIENT GETNAME).

Any member serves any key: operations for partitions it does not own come back
NOT_OWNER from the executor and `GridService.run`'s `later` forwards them to their
owners (grid/member/forwarding.py) before the reply goes out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from proto import grid_pb2 as pb

if TYPE_CHECKING:
    from grid.member.server import GridService

Later = Callable[[], Awaitable[None]]
Finish = Callable[[Sequence[pb.Result]], "bytes | Awaitable[bytes]"]
"""A plan's reply from its results; a coroutine when they call for more calls first."""


class Plan:
    """Grid operations for one command, and the function that turns their results (one
    per op, in order) into the command's reply. The connection keeps the plan in its
    order of replies until `data`, the reply, is set (a plan is its own reply slot)."""

    __slots__ = ("data", "finish", "ops")

    def __init__(self, ops: list[pb.Op], finish: Finish) -> None:
        self.ops = ops
        self.finish = finish
        self.data: bytes | None = None


class KeyPlan:
    """One GET or PUT of one key in the front end's map, run without protobuf messages.

    The executor fills in the result as it fills a pb.Result: `status` (pb.Status),
    `error`, and for a GET that found the key `value` and `version_ts`; then
    `finish(plan)` makes the reply (`ctx` is what it needs from the command, usually
    the connection). Like a Plan, it is its own reply slot (`data`).

    (No __slots__: what most plans leave at its default is a class attribute, not a
    store per plan, which makes one a third cheaper to build; it is built per command.)"""

    data: bytes | None = None
    status = 0
    error = ""
    version_ts = 0
    expire_at = 0
    """Absolute expiry in ms of a PUT (0: none), as pb.Op.expire_at_ms."""
    condition = 0
    """A PUT's pb.Condition (0: always)."""

    def __init__(
        self,
        code: int,
        key: bytes,
        value: bytes,
        ctx: Any,
        finish: Callable[[KeyPlan], bytes],
        expire_at: int = 0,
        condition: int = 0,
    ) -> None:
        self.code = code
        self.key = key
        self.value = value
        self.ctx = ctx
        self.finish = finish
        if expire_at:
            self.expire_at = expire_at
        if condition:
            self.condition = condition

    def fill(self, op: pb.Op, r: pb.Result, map_name: str) -> None:
        """The same operation and its result so far as protobuf messages (for forwarding
        and waits): set in place, as messages added to a batch are (no copy)."""
        op.code = self.code  # type: ignore[assignment]
        op.map = map_name
        op.key = self.key
        if self.code == pb.GET:
            if self.status == pb.OK:
                r.value = self.value
                r.version_ts = self.version_ts
                return
        else:
            op.value = self.value
            if self.expire_at:
                op.expire_at_ms = self.expire_at
            if self.condition:
                op.condition = self.condition  # type: ignore[assignment]
        r.status = self.status  # type: ignore[assignment]
        r.error = self.error

    def take(self, r: pb.Result) -> None:
        """The result of the operation as run elsewhere (forwarded) or failed later."""
        self.status = r.status
        self.error = r.error
        if self.code == pb.GET and r.status == pb.OK:
            self.value = r.value
            self.version_ts = r.version_ts


class Close:
    """A reply after which the connection closes (QUIT, a protocol error)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


Reply = bytes | Plan | KeyPlan | Close | Awaitable[bytes]


class Runner:
    """Runs operations through the member's one entry point for batches."""

    def __init__(self, service: GridService, map_name: str) -> None:
        self.service = service
        config = service.config
        self.max_ops = config.max_batch_ops
        self.map_name = map_name
        sync = config.sync_backups_by_map().get(map_name, config.sync_backups)
        self.waits_before_forwarding = bool(config.data_dir and config.fsync == "always") or (
            sync > 0
        )
        """Whether a batch's reply waits for fsync or sync backups before its forwarded
        operations are sent (GridService._finish), so that a later batch could overtake
        them (grid/frontends/connection.py)."""
        self._placed = False

    def placed(self) -> bool:
        """Whether the member has a partition table. Before its first one (the moments
        after a start, until the cluster places its partitions) every operation would be
        answered "no owner yet; retry"; a front end waits instead (`READY_WAIT_S`)."""
        if not self._placed:
            cluster = self.service.cluster
            self._placed = cluster is None or bool(cluster.routing.version)
        return self._placed

    def run(self, request: pb.BatchRequest) -> tuple[Sequence[pb.Result], Later | None]:
        """Run a batch now: its results (complete once `later`, if any, is awaited)."""
        reply, later = self.service.run(request)
        if reply.status != pb.OK:  # a whole-batch refusal: every op gets its status
            return _failed(len(request.ops), reply.status, reply.error), None
        return reply.results, later

    def run_keys(self, plans: list[KeyPlan]) -> Later | None:
        """Run a batch of KeyPlans now, filling in their results (complete once `later`,
        if any, is awaited)."""
        return self.service.run_keys(self.map_name, plans)

    async def call(self, ops: Sequence[pb.Op]) -> list[pb.Result]:
        """Run operations and wait for everything their replies wait for (fsync, sync
        backups, forwarding), in batches of at most max_batch_ops."""
        out: list[pb.Result] = []
        for start in range(0, len(ops), self.max_ops):
            request = pb.BatchRequest()
            request.ops.extend(ops[start : start + self.max_ops])
            results, later = self.run(request)
            if later is not None:
                await later()
            out.extend(results)
        return out

    async def one(self, op: pb.Op) -> pb.Result:
        return (await self.call([op]))[0]


def _failed(n: int, status: Any, error: str) -> list[pb.Result]:
    return [pb.Result(status=status, error=error) for _ in range(n)]
