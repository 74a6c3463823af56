"""The coordinator's runtime in the simulated world: what grid/member/placement/coordinator.py is
on gRPC.

Every simulated member runs a `partitioning.Rebalancer` and this shell around
it, step for step as grid/member/placement/coordinator.py does: a round on every membership
event, on a leave request and every second (`TICK_S`); each decision carried
out and its report passed to the next `step`:

| decision  | carried out                                                         |
|-----------|---------------------------------------------------------------------|
| AskTables | TABLE to every live member, one after the other; install the newest |
| Publish   | install, then PUBLISH to every member of `to` at once               |
| Resend    | PUBLISH of the installed table, one member after the other          |
| Fill      | FILL to each member at once (it follows from the source until live) |
| Handoff   | HANDOFF to each source at once (this member's own: in process)      |
| Note      | the world's log (so it is in the trace and in `--log`)              |

Every PUBLISH answer goes to `Rebalancer.answered`. The member's side of
these calls (installing, filling, handing off) is simulation/member.py, as
grid's is grid/member/peer.py with grid/member/replicas/follower.py and
grid/member/replicas/replica.py. The timeouts are grid's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from membership.config import Config as MembershipConfig
from partitioning.decisions import (
    AskTables,
    Decision,
    Fill,
    Filled,
    FillOrder,
    HandedOff,
    Handoff,
    HandoffOrder,
    Note,
    Publish,
    Published,
    Report,
    Resend,
    TablesAsked,
)
from partitioning.leave import TIMED_OUT, AskLeave, Departed, DepartureEnd, LeaveAnswer
from partitioning.rebalancer import Rebalancer, View
from partitioning.succession import newest_table
from simulation import wire
from simulation.tasks import Future, Task, gather, spawn

if TYPE_CHECKING:
    from simulation.member import SimMember

TICK_S = 1.0
RPC_TIMEOUT_S = 5.0
TABLE_TIMEOUT_S = 2.0  # grid/member/peers.py's Table deadline
FILL_TIMEOUT_S = 30.0
HANDOFF_RPC_TIMEOUT_S = 2 * RPC_TIMEOUT_S + 10
LEAVE_TIMEOUT_S = 120.0  # grid's leave_timeout_s default
LEAVE_POLL_S = 0.05
DRAIN_RETRY_S = 0.5  # grid/member/placement/coordinator.py's
_gossip = MembershipConfig()
STALL_FENCE_S = _gossip.suspicion_mult * _gossip.probe_interval  # grid's: see `stalled`
CONFIRM_TABLE_S = 3 * STALL_FENCE_S
PULSE_S = 0.5  # grid pulses every 0.1 s; either way a stall of STALL_FENCE_S is seen


class SimCoordinator:
    """One member's coordinator loop (it acts only while its member coordinates)."""

    def __init__(self, member: SimMember, rebalancer: Rebalancer) -> None:
        self.m = member
        self.rebalancer = rebalancer
        self.due = False  # a round is wanted
        self.started = False  # the loop runs (grid: Coordinator.start, after the gossip)
        self.running = False  # a round is in progress (or about to start)
        self.idle_since = 0  # bumped at every round's end: a tick of an older one is void
        self.decisions = 0

    # ---- the loop ---------------------------------------------------------------------------
    def start(self) -> None:
        self.started = True
        if self.due:
            self.wake()
        else:
            self.m.later(TICK_S, self._tick, self.idle_since)

    def wake(self) -> None:
        """A round now, or right after the one in progress (once the loop runs)."""
        self.due = True
        if self.started and not self.running:
            self.running = True
            self.m.later(0.0, self._start)

    def on_member(self, kind: str, member: str) -> None:
        """grid/member/placement/coordinator.py's on_member."""
        if kind == "joined":
            self.rebalancer.rejoined(member)
        elif kind in ("alive", "updated"):
            self.rebalancer.seen(member)
        self.wake()

    def _tick(self, idle_since: int) -> None:
        if idle_since == self.idle_since and not self.running:
            self.wake()

    def _start(self) -> None:
        spawn(self._rounds(), self.m.is_alive)

    def _rounds(self) -> Task[None]:
        while self.due:
            self.due = False
            yield from self._round()
        self.running = False
        self.idle_since += 1
        self.m.later(TICK_S, self._tick, self.idle_since)

    def view(self) -> View:
        o = self.m.ownership
        return View(self.m.live(), self.m.w.loop.now, o.unsettled(), frozenset(o.lacking))

    def _round(self) -> Task[None]:
        """One round: ask the rebalancer, carry out each decision, report back. Dropped
        at a stall, and none starts while fenced (grid's `_round`): a coordinator paused
        mid-round would go on with a layout older than the failover the others made."""
        rebalancer = self.rebalancer
        if self.m.stalled():
            return
        fences = self.m.fences
        decision = rebalancer.begin(self.view())
        while decision is not None:
            if self.m.stalled() or self.m.fences != fences:
                return  # the next round starts afresh (begin drops this one)
            self.decisions += 1
            self.m.w.decided(self.m, decision)
            report = yield from self._carry_out(decision)
            decision = rebalancer.step(report, self.view())

    def _carry_out(self, decision: Decision) -> Task[Report]:
        match decision:
            case Note(level, event, fields):
                shown = {k: _short(v) for k, v in sorted(fields.items())}
                self.m.w.note(f"{self.m.name} {level}: {event} {shown}")
                return None
            case AskTables(addresses):
                return TablesAsked((yield from self.adopt(addresses)))
            case Publish():
                return (yield from self._publish(decision))
            case Resend(_, to):
                version = self.m.ownership.version
                for name in to:  # one after the other
                    yield from self._send_table(name, version)
                return None
            case Fill():
                return (yield from self._fill(decision))
            case Handoff():
                return (yield from self._hand_off(decision))
        raise TypeError(f"unknown decision {decision!r}")

    # ---- carrying out -----------------------------------------------------------------------
    def adopt(self, live: Mapping[str, str]) -> Task[bool]:
        """Ask every live member for its table and install the newest; False if some
        did not answer."""
        versions: dict[str, int | None] = {}
        for name in live:
            if name == self.m.name:
                continue
            answer = yield self.m.rpc.call(name, wire.TABLE, [], TABLE_TIMEOUT_S)
            versions[name] = answer[0] if answer is not None else None
        adoption = newest_table(versions, self.m.ownership.version)
        if adoption.member is not None:
            version = versions[adoption.member]
            assert version is not None
            self.m.install(self.m.w.tables[version])
        return adoption.everyone_answered

    def _publish(self, decision: Publish) -> Task[Published]:
        table = decision.table
        self.m.w.published(self.m.name, table)
        self.m.ownership.born()  # with no table: it makes the first one (grid's `_publish`)
        self.m.install(table)
        sent = {m: self.m.w.raddr(m) for m in table.members}
        yield gather(
            spawn(self._send_table(m, table.version), self.m.is_alive) for m in decision.to
        )
        return Published(sent)

    def _send_table(self, name: str, version: int) -> Task[None]:
        answer = yield self.m.rpc.call(name, wire.PUBLISH, [version], RPC_TIMEOUT_S)
        if answer is not None and self.rebalancer.answered(name, *answer):
            self.wake()

    def _fill(self, decision: Fill) -> Task[Filled]:
        """Every fill order at once; the partitions that did not become live."""
        failed: set[int] = set()

        def one(order: FillOrder) -> Task[None]:
            args = [list(order.partitions), order.source]
            timeout = FILL_TIMEOUT_S + RPC_TIMEOUT_S
            answer = yield self.m.rpc.call(order.member, wire.FILL, args, timeout)
            failed.update(order.partitions if answer is None else answer[0])

        yield gather(spawn(one(o), self.m.is_alive) for o in decision.orders)
        return Filled(frozenset(failed))

    def _hand_off(self, decision: Handoff) -> Task[HandedOff]:
        """Every hand-off order at once; the partitions that keep their old primary."""
        failed: set[int] = set()
        confirm = decision.confirm_epoch

        def one(order: HandoffOrder) -> Task[None]:
            parts = list(order.partitions)
            if order.source == self.m.name:
                bad = yield self.m.handoff(parts, order.to, confirm)
                failed.update(bad)
                return
            args = [parts, order.to, confirm]
            answer = yield self.m.rpc.call(order.source, wire.HANDOFF, args, HANDOFF_RPC_TIMEOUT_S)
            failed.update(order.partitions if answer is None else answer[0])

        yield gather(spawn(one(o), self.m.is_alive) for o in decision.orders)
        return HandedOff(frozenset(failed))

    # ---- graceful leave ---------------------------------------------------------------------
    def leave(self, member: str) -> Future[list[Any]]:
        """The LEAVE call: move every replica off `member` (partitioning/leave.py)."""
        return spawn(self._leave(member), self.m.is_alive)

    def _leave(self, member: str) -> Task[list[Any]]:
        answer = self.rebalancer.leave_requested(member, self.m.live())
        if answer is None:
            deadline = self.m.w.loop.now + LEAVE_TIMEOUT_S
            answer = LeaveAnswer(False, TIMED_OUT)
            while self.m.w.loop.now < deadline:
                self.wake()
                progress = self.rebalancer.leave_progress(member)
                if progress is not None:
                    answer = progress
                    break
                yield self.m.sleep(LEAVE_POLL_S)
        return list(answer)

    def leave_cluster(self) -> Task[Departed]:
        """This member leaves gracefully: hand everything off first."""
        deadline = self.m.w.loop.now + LEAVE_TIMEOUT_S
        departure = self.rebalancer.depart(self.m.live())
        step = departure.next()
        while isinstance(step, AskLeave):
            timeout = LEAVE_TIMEOUT_S + RPC_TIMEOUT_S
            answer = yield self.m.rpc.call(step.member, wire.LEAVE, [self.m.name], timeout)
            if answer is None:
                step = departure.no_answer()
                continue
            step = departure.answered(LeaveAnswer(*answer))
        if step.end is DepartureEnd.HANDED_OFF and step.version:
            yield from self._drain(step.version, deadline)
        return step

    def _drain(self, version: int, deadline: float) -> Task[None]:
        """Install the coordinator's table and push every copy held to its primary
        (grid/member/placement/coordinator.py's `_drain`; the world's tables stand for
        the Table call)."""
        m = self.m
        table = m.w.tables.get(version)
        if table is not None and version != m.ownership.version:
            m.install(table)
        left = m.hand_back_all()
        while left and m.w.loop.now < deadline:
            yield m.sleep(DRAIN_RETRY_S)
            left = m.hand_back_all(sorted(m.draining))


def _short(value: object) -> object:
    """A note's field for the log: long lists of names as their count."""
    if isinstance(value, list | tuple) and len(value) > 6:
        return f"<{len(value)}>"
    return value
