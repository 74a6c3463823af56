"""Finishing a batch that this member could not answer alone.

The executor answers what this member serves and marks the rest NOT_OWNER
(the store refuses them before touching anything). Here those operations go
to their owners, grouped per owner into one forwarded batch each, sent in
parallel, and their results are put back in place, so the client gets one
reply in the order it asked. A forwarded batch carries `hops`; past
`max_forward_hops` an operation stays NOT_OWNER and a smart client refreshes
its table and retries (two members that disagree about a table cannot bounce
a batch forever).

One case waits instead of forwarding: during a hand-off the old owner
forwards to the new one as soon as it has stopped serving, which can be a
moment before the new owner has applied the HANDOFF on its stream. An
operation forwarded for a partition this member is following waits (at most
`HANDOVER_WAIT_S`) for the hand-off to arrive, then runs here.

Map-wide operations (SIZE, CLEAR) sent by a client to one member are run by
every member on the partitions it serves and summed here, so a plain client
with one address still sees the whole map.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from grid import logs
from grid.errors import InvalidArgument, Unavailable
from grid.store.store import _decode_cursor
from partitioning import partition_of
from proto import grid_pb2 as pb

if TYPE_CHECKING:
    from grid.member.executor import BatchExecutor
    from grid.member.runtime import ClusterRuntime

log = logs.get("grid.member.forwarding")
HANDOVER_WAIT_S = 2.0
FORWARD_TIMEOUT_S = 10.0
FANOUT = frozenset({pb.SIZE, pb.CLEAR})


class Forwarder:
    def __init__(self, runtime: ClusterRuntime, executor: BatchExecutor) -> None:
        self.rt = runtime
        self.executor = executor
        self.forwarded = 0
        self.not_owner = 0

    def partition(self, op: pb.Op) -> int | None:
        p_count = self.rt.store.partitions
        if op.code == pb.SCAN:
            try:
                return _decode_cursor(op.cursor, p_count, self.rt.config.max_key_bytes)[0]
            except InvalidArgument:
                return None
        if not op.key:
            return None
        return partition_of(op.key, p_count)

    async def complete(self, request: pb.BatchRequest, reply: pb.BatchReply) -> None:
        """Fill in the results this member could not give (NOT_OWNER, map-wide ops)."""
        results = reply.results
        if not results:
            return
        routing = self.rt.routing
        me = routing.me
        groups: dict[str, list[int]] = {}
        local_wait: dict[int, list[int]] = {}
        for i, r in enumerate(results):
            if r.status != pb.NOT_OWNER:
                continue
            op = request.ops[i]
            p = self.partition(op)
            if p is None:
                continue
            owner = routing.owner(p)
            if owner == me or owner is None:
                local_wait.setdefault(p, []).append(i)
            elif request.hops < self.rt.config.max_forward_hops:
                groups.setdefault(owner, []).append(i)
            else:
                r.error = f"partition {p} is served by {owner} (table version {routing.version})"
        fanout = [
            i for i, op in enumerate(request.ops)
            if op.code in FANOUT and request.hops == 0 and results[i].status == pb.OK
        ]  # fmt: skip
        jobs = [self._forward(owner, idx, request, results) for owner, idx in groups.items()]
        jobs += [self._await_takeover(p, idx, request, results) for p, idx in local_wait.items()]
        if fanout:
            jobs.append(self._fanout(fanout, request, results))
        if jobs:
            await asyncio.gather(*jobs)
        self.not_owner += sum(1 for r in results if r.status == pb.NOT_OWNER)

    async def _forward(
        self, owner: str, idx: list[int], request: pb.BatchRequest, results: list[pb.Result]
    ) -> None:
        address = self.rt.routing.address_of(owner)
        if not address:
            for i in idx:
                results[i].error = f"owner {owner} has no known address"
            return
        sub = pb.BatchRequest(ops=[request.ops[i] for i in idx], hops=request.hops + 1)
        self.forwarded += len(idx)
        try:
            answer = await self.rt.peers.execute(address, sub, FORWARD_TIMEOUT_S)
        except Unavailable as e:
            for i in idx:
                results[i].Clear()
                results[i].status = pb.UNAVAILABLE
                results[i].error = f"owner {owner} unreachable: {e.message}"
            return
        if answer.status != pb.OK or len(answer.results) != len(idx):
            for i in idx:
                results[i].Clear()
                results[i].status = answer.status or pb.UNAVAILABLE
                results[i].error = answer.error or "forwarded batch failed"
            return
        for i, r in zip(idx, answer.results, strict=True):
            results[i].CopyFrom(r)

    def _not_served(self, p: int) -> str:
        """Why this member cannot answer for a partition it would own: the table has no
        owner for it yet (no table at all while the cluster forms), or it is being handed
        to us. Both pass; the client retries."""
        routing = self.rt.routing
        if routing.owner(p) is None:
            if not routing.version:
                return f"partition {p} has no owner yet: the cluster has no partition table; retry"
            return f"partition {p} has no owner in table version {routing.version}; retry"
        return f"partition {p} is moving; retry"

    async def _await_takeover(
        self, p: int, idx: list[int], request: pb.BatchRequest, results: list[pb.Result]
    ) -> None:
        event = self.rt.followers.wait_takeover(p)
        if event is None or request.hops == 0:
            for i in idx:
                results[i].error = self._not_served(p)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), HANDOVER_WAIT_S)
        if not self.rt.routing.serves(p):
            for i in idx:
                results[i].error = self._not_served(p)
            return
        sub = pb.BatchRequest(ops=[request.ops[i] for i in idx], hops=request.hops)
        answer = self.executor.execute(sub)
        token = self.executor.last_token
        durability = self.executor.durability
        if token and durability is not None:
            await durability.wait_durable(token)
        for i, r in zip(idx, answer.results, strict=True):
            results[i].CopyFrom(r)

    async def _fanout(
        self, idx: list[int], request: pb.BatchRequest, results: list[pb.Result]
    ) -> None:
        routing = self.rt.routing
        others = [m for m in routing.members() if m != routing.me]
        sub = pb.BatchRequest(ops=[request.ops[i] for i in idx], hops=1)

        async def ask(member: str) -> pb.BatchReply | None:
            address = routing.address_of(member)
            if not address:
                return None
            try:
                return await self.rt.peers.execute(address, sub, FORWARD_TIMEOUT_S)
            except Unavailable as e:
                log.warning("map-wide operation: member unreachable", member=member,
                            error=e.message)  # fmt: skip
                return None

        answers = await asyncio.gather(*(ask(m) for m in others))
        for member, answer in zip(others, answers, strict=True):
            for j, i in enumerate(idx):
                if answer is None or answer.status != pb.OK:
                    results[i].status = pb.UNAVAILABLE
                    results[i].error = f"member {member} did not answer; the count is partial"
                    continue
                results[i].count += answer.results[j].count
