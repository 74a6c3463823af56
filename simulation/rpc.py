"""Peer RPCs in the simulated world: request, response, deadline.

grid's coordinator talks to other members with unary gRPC calls (Table,
Publish, Fill, Handoff, Leave) that either answer or fail with an error at
their deadline. Here a call is a REQUEST datagram and a RESPONSE datagram
(simulation/wire.py) on the members' replication endpoints: the network may
lose either (link loss), cut it (a partition, a one-way cut, a crashed or
restarted host) or hold it (a pause, a slow member). Whatever does not come
back before the deadline is an RPC error (`None`), as a gRPC deadline or
UNAVAILABLE is to grid; a late response is ignored. A call to a member whose
process is down, over a path that works both ways, fails after a round trip
instead: its machine answers the connection with a reset (kill -9 leaves the
machine up), as grid's channel fails at once with UNAVAILABLE; so do the calls
in flight to a member whose process ends.

A handler answers at once (a list) or later (a `Future` of one): a fill
answers when its partitions are live, a hand-off when the new owner took
over. If the server crashes meanwhile, nothing answers and the caller's
deadline decides.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from simulation import wire
from simulation.tasks import Future

if TYPE_CHECKING:
    from simulation.member import SimMember

REFUSED_AFTER_S = 0.001
"""A connection to a machine whose process is gone is reset after about a round trip."""

Result = list[Any]
Handler = Callable[[str, int, list[Any]], "Result | Future[Result]"]


class Rpc:
    """One member's calls in flight, and the dispatch of calls it receives."""

    def __init__(self, member: SimMember, handler: Handler) -> None:
        self.m = member
        self.handler = handler  # (caller, method, args) -> a result now or later
        self.pending: dict[int, Future[Result | None]] = {}
        self.callee: dict[int, str] = {}  # call id -> the member called
        self.next_id = 0

    def call(self, to: str, method: int, args: list[Any], timeout: float) -> Future[Result | None]:
        """Call `method` on `to`; resolves with its result, or None at the deadline."""
        self.next_id += 1
        rid = self.next_id
        fut: Future[Result | None] = Future()
        self.pending[rid] = fut
        self.callee[rid] = to
        self.m.later(timeout, self._deadline, rid)
        if self.m.w.refuses(self.m.name, to):
            self.m.later(REFUSED_AFTER_S, self._deadline, rid)
        self.m.send(to, [wire.RQ, rid, method, args])
        return fut

    def _deadline(self, rid: int) -> None:
        fut = self.pending.pop(rid, None)
        self.callee.pop(rid, None)
        if fut is not None:
            fut.resolve(None)

    def callee_died(self, member: str) -> None:
        """`member`'s process ended: calls to it over a working path fail now (the
        connection is reset), the others at their deadline."""
        if not self.m.w.refuses(self.m.name, member):
            return
        for rid in sorted(r for r, to in self.callee.items() if to == member):
            self.m.later(REFUSED_AFTER_S, self._deadline, rid)

    def on_response(self, rid: int, result: Result) -> None:
        fut = self.pending.pop(rid, None)
        self.callee.pop(rid, None)
        if fut is not None:
            fut.resolve(result)

    def on_request(self, caller: str, rid: int, method: int, args: list[Any]) -> None:
        answer = self.handler(caller, method, args)
        if isinstance(answer, Future):
            answer.then(lambda result: self._respond(caller, rid, result))
        else:
            self._respond(caller, rid, answer)

    def _respond(self, caller: str, rid: int, result: Result) -> None:
        if self.m.alive:  # a crashed server answers nothing
            self.m.send(caller, [wire.RS, rid, result])
