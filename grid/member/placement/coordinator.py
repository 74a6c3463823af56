"""The coordinator's runtime: carries out what the rebalancer decides.

The decisions (who coordinates, adopting the newest table, the first table,
failover, restart waits, epochs, the release of leaving members, migration
waves, graceful leave) are made by `partitioning.Rebalancer`, with no IO;
docs/partitioning.md has the algorithm. This shell gathers its inputs (the
live members from gossip, the answers of peers) and carries out its
decisions: table RPCs, installing tables through Routing (which starts the
partition streams), fills through the members' Followers, hand-offs through
the Replicator (this member's) or Peer.Handoff (another's), and logging.
The rebalancer also learns what members hold beyond their table (hand-offs
no table settled, places they lack): this member's from its Routing, through
the `View`; the others' from their answers to a publish
(`PublishReply.unsettled`, `.lacking`). A member that asks for the table
naming itself (`TableRequest.caller`) is published to again (`asked`).

Every member runs the loop; a round runs on every membership event, on a
leave request and every second (`TICK_S`), and only the coordinator's
rounds do anything beyond asking for a table.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping

import grpc

from grid import logs
from grid.config import Config
from grid.member.peers import Peers
from grid.member.placement.routing import Routing, table_from_proto
from grid.member.replicas.follower import Followers
from grid.member.replicas.map_backups import map_backups
from grid.member.replicas.replica import Replicator
from grid.members_view import ClusterMember
from membership.config import Config as MembershipConfig
from partitioning import PartitionTable, PlacementConfig
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
from partitioning.leave import TIMED_OUT, AskLeave, DepartureEnd, LeaveAnswer
from partitioning.rebalancer import Rebalancer, View
from partitioning.succession import newest_table
from proto import grid_pb2 as pb
from replication.primary import known_members

log = logs.get("grid.member.placement.coordinator")

TICK_S = 1.0
RPC_TIMEOUT_S = 5.0
PULSE_S = 0.1  # how often the loop notes that it runs (see `stalled`)
_gossip = MembershipConfig()
STALL_FENCE_S = _gossip.suspicion_mult * _gossip.probe_interval
"""A stall of the event loop this long (SIGSTOP, a VM paused, a swap storm) may have
been long enough for the others to declare this member dead and fail its partitions
over: the shortest suspicion timeout (2 s at the gossip defaults). After it the member
serves nothing until it has asked the live members for their tables (`fence`)."""
CONFIRM_TABLE_S = 3 * STALL_FENCE_S  # a fence asks this long at most, then serves anyway
FILL_TIMEOUT_S = 30.0  # how long a member follows a partition waiting for it to be live
LIVE_STATES = ("alive", "suspect")
DRAIN_RETRY_S = 0.5  # a leaver retries the hand-backs whose primary did not answer


class Coordinator:
    def __init__(
        self,
        me: str,
        address: str,
        config: Config,
        routing: Routing,
        replicator: Replicator,
        followers: Followers,
        peers: Peers,
        membership: Callable[[], list[ClusterMember]],
    ) -> None:
        self.me = me
        self.address = address
        self.config = config
        self.routing = routing
        self.replicator = replicator
        self.followers = followers
        self.peers = peers
        self.membership = membership
        self.rebalancer = Rebalancer(
            me,
            PlacementConfig(
                partition_count=config.partitions,
                backups=config.table_backups,
                virtual_nodes=config.virtual_nodes,
            ),
            wave_size=config.migration_max_parallel,
            narrowest=map_backups(config).narrowest,
            restart_wait_s=config.restart_wait_s,
            started=time.monotonic(),
            quorum=config.min_cluster_size,
        )
        self.live_count = 1  # members this member sees alive, itself included
        self.known_count = 1  # and those it took for dead (not left): `sight`
        self._saved_known: tuple[str, ...] = ()  # table.json's, for `known_members`
        self.seeds: Callable[[], tuple[str, ...]] = tuple  # the gossip's (member.py)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pulse_at = time.monotonic()
        self._pulse: asyncio.TimerHandle | None = None
        self._fence: asyncio.Task[None] | None = None
        self.fences = 0
        self._had_quorum = False  # min_cluster_size was reached since the start
        self._quorum_lost = False  # and then lost: regaining it fences (see `_quorum`)

    @property
    def acting(self) -> bool:
        """Whether this member coordinated in its last round (stats)."""
        return self.rebalancer.acting

    @property
    def pending(self) -> int:
        """Partitions still to move, on the coordinator (stats)."""
        return self.rebalancer.pending

    # ---- lifecycle ------------------------------------------------------------------------------
    def restore_saved(self) -> None:
        """Start from the table saved before a restart, waiting for the members it names."""
        saved = self.routing.load_saved()
        if saved is None:
            return
        table = saved.table
        self._saved_known = saved.known
        if self.routing.restarted(saved):  # see first_table for its streams
            self.rebalancer.installed(table)
        self.rebalancer.restarted(table)
        log.info("saved partition table loaded", version=table.version,
                 waiting_for=sorted(self.rebalancer.waiting),
                 handed_off=len(self.routing.moved))  # fmt: skip

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="grid-coordinator")
        self._pulse_at = time.monotonic()  # a slow start (discovery) is no stall
        self._beat()

    async def stop(self) -> None:
        if self._pulse is not None:
            self._pulse.cancel()
        if self._fence is not None:
            self._fence.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    def wake(self) -> None:
        self._wake.set()

    # ---- a stalled member fences itself ---------------------------------------------------------
    def _beat(self) -> None:
        self.stalled()
        self._pulse_at = time.monotonic()
        self._pulse = asyncio.get_running_loop().call_later(PULSE_S, self._beat)

    def stalled(self) -> bool:
        """Whether the event loop stood still for longer than `STALL_FENCE_S` since its last
        pulse; if so the member fences itself. Called by the pulse and before every client
        batch: after a SIGCONT the loop may serve queued requests before the pulse's timer
        runs, and those must not be answered from a copy the cluster has moved past."""
        if self._pulse is None and self._fence is None:
            return False  # not started: nothing pulses yet
        gap = time.monotonic() - self._pulse_at
        if gap <= STALL_FENCE_S or self._fence is not None:
            return self._fence is not None
        log.warning("the loop stood still longer than failure detection: serving nothing "
                    "until the cluster's table is confirmed", seconds=round(gap, 3))  # fmt: skip
        self._pulse_at = time.monotonic()
        self._fence_until_confirmed()
        return True

    def _fence_until_confirmed(self) -> None:
        self.fences += 1
        self.routing.fence()
        self._fence = asyncio.get_running_loop().create_task(self._confirm_table())

    def _quorum(self, count: int) -> None:
        """min_cluster_size: a member that had it, lost it (the smaller side of a split)
        and sees enough members again fences itself like a stalled one, until it has the
        live members' newest table. Its own table is stale: the larger side failed its
        partitions over meanwhile, and serving by it (reads, counters incremented from
        old values, a coordinator's round) for the seconds until a publish tells it so
        loses the larger side's writes at the heal (netns chaos run isolate-one)."""
        need = self.config.min_cluster_size
        if need <= 1:
            return
        if count < need:
            self._quorum_lost = self._had_quorum
            return
        if self._quorum_lost and self._fence is None and self._pulse is not None:
            log.warning("min_cluster_size reached again: serving nothing until the "
                        "cluster's table is confirmed", members=count)  # fmt: skip
            self._fence_until_confirmed()
        self._had_quorum = True
        self._quorum_lost = False

    async def _confirm_table(self) -> None:
        """Adopt the newest table the live members have (another coordinator may have
        failed this member's partitions over, or published tables it missed), then serve
        by it. Members that do not answer are asked again for `CONFIRM_TABLE_S` at most;
        after that the member serves by what it has (it may be the one that stayed)."""
        started = time.monotonic()
        version = self.routing.version
        try:
            while True:
                everyone = await self._adopt(self.live())
                if everyone or self.routing.version != version:
                    break
                if time.monotonic() - started > CONFIRM_TABLE_S:
                    log.warning("table not confirmed by every member; serving again")
                    break
                await asyncio.sleep(0.2)
        finally:
            self.routing.unfence()
            # a table installed while fenced ended every primary log (nothing was served):
            # start the streams by the table in use now, whichever it is
            self._follow_table()
            self._fence = None
            self._wake.set()
            log.info("serving again: table confirmed", table_version=self.routing.version,
                     seconds=round(time.monotonic() - started, 3))  # fmt: skip

    def on_member(self, kind: str, member: ClusterMember) -> None:
        self.live()  # keep live_count current for the write gate (min_cluster_size)
        if kind == "joined":
            self.rebalancer.rejoined(member.name)
        elif kind in ("alive", "updated"):
            self.rebalancer.seen(member.name)
        if member.address and kind not in ("dead", "left"):
            self.routing.set_address(member.name, member.address)
        self._wake.set()

    async def first_table(self, timeout: float) -> bool:
        """Wait until this member has a table (it serves nothing before).

        A member restarting with a saved table first asks the live members for theirs:
        if the cluster went on without it, the cluster's newer table wins before this
        member serves (or, as the smallest name, coordinates) anything by its old one.
        """
        if self.routing.table is not None:
            await self._adopt(self.live())
            if self.routing.ownership.start_saved():
                # the cluster's table is still the one saved (a restart quicker than the
                # failure detector): nothing will publish it again, so start the streams
                # by it now, as an install would (primaries get a log, backups subscribe)
                self._follow_table()
        deadline = time.monotonic() + timeout
        while self.routing.table is None and time.monotonic() < deadline:
            self._wake.set()
            await asyncio.sleep(0.02)
        return self.routing.table is not None

    # ---- who is here --------------------------------------------------------------------------
    def live(self) -> dict[str, str]:
        """The live members (alive or suspect) and their addresses, this one first."""
        out = {self.me: self.address}
        known = []
        for m in self.membership():
            if m.name == self.me:
                continue
            if m.state in LIVE_STATES:
                out[m.name] = m.address
            if m.state != "left":
                known.append(m.name)
        self.live_count = len(out)
        names = known_members(self.me, known, self._saved_known, self.seeds())
        self.known_count = len(names)
        self.routing.known = tuple(sorted(names))
        self._quorum(self.live_count)
        self.rebalancer.observe(out)
        return out

    def sight(self) -> tuple[int, int]:
        """(members seen alive, members known and never departed), itself included in
        both, as of the last membership event: whether this member sees a majority
        (`Primary.needs`)."""
        return self.live_count, self.known_count

    def _view(self) -> View:
        routing = self.routing
        return View(self.live(), time.monotonic(), routing.unsettled(), routing.lacking)

    # ---- the loop -----------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            self._wake.clear()
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let a bug stop partition management for good
                log.exception("coordinator round failed")
                await asyncio.sleep(TICK_S)

    async def _round(self) -> None:
        """One round: ask the rebalancer, carry out each decision, report back. A round
        is dropped at a stall (and none starts while fenced): what it decided before the
        stall is stale (a coordinator paused mid-round would publish its old layout above
        the failover the others made meanwhile)."""
        if self.stalled():
            return
        fences = self.fences
        decision = self.rebalancer.begin(self._view())
        while decision is not None:
            if self.stalled() or self.fences != fences:
                return  # the next round starts afresh (begin drops this one)
            report = await self._carry_out(decision)
            decision = self.rebalancer.step(report, self._view())

    async def _carry_out(self, decision: Decision) -> Report:
        match decision:
            case Note(level, event, fields):
                getattr(log, level)(event, **fields)
                return None
            case AskTables(addresses):
                return TablesAsked(await self._adopt(addresses))
            case Publish():
                return await self._publish(decision)
            case Resend(addresses, to):
                msg = self.routing.to_proto()
                for name in to:  # one after the other
                    await self._send_table(name, addresses[name], msg)
                return None
            case Fill():
                return await self._fill(decision)
            case Handoff():
                return await self._hand_off(decision)
        raise TypeError(f"unknown decision {decision!r}")

    # ---- carrying out -------------------------------------------------------------------------
    async def _adopt(self, live: Mapping[str, str]) -> bool:
        """Ask every live member for its table and install the newest; False if some
        did not answer."""
        answers: dict[str, pb.PartitionTable | None] = {}
        for name, address in live.items():
            if name == self.me:
                continue
            try:
                answers[name] = await self.peers.table(address, self.me) if address else None
            except grpc.aio.AioRpcError:
                answers[name] = None
        versions = {n: (msg.version if msg is not None else None) for n, msg in answers.items()}
        adoption = newest_table(versions, self.routing.version)
        if adoption.member is not None:
            msg = answers[adoption.member]
            assert msg is not None
            try:
                table, addresses = table_from_proto(msg)
            except ValueError as e:
                log.warning("peer table refused", error=str(e))
                return False
            self.install(table, addresses)
        return adoption.everyone_answered

    def install(self, table: PartitionTable, addresses: Mapping[str, str]) -> None:
        """Install a table if it is newer than ours, and start the streams it asks for."""
        if self.routing.install(table, dict(addresses)):
            self.rebalancer.installed(table)
            self._follow_table()

    def _follow_table(self) -> None:
        """Streams by the table in use: primaries get a log, backups subscribe."""
        self.replicator.on_table()
        self.followers.reconcile()

    async def _publish(self, decision: Publish) -> Published:
        self.routing.ownership.born()  # with no table: it makes the first one
        self.install(decision.table, decision.addresses)
        sent = {m: self.routing.addresses.get(m, "") for m in decision.table.members}
        msg = self.routing.to_proto()
        await asyncio.gather(
            *(self._send_table(m, decision.addresses[m], msg) for m in decision.to)
        )
        return Published(sent)

    async def _send_table(self, name: str, address: str, msg: pb.PartitionTable) -> None:
        try:
            reply = await self.peers.publish(address, msg, RPC_TIMEOUT_S)
        except grpc.aio.AioRpcError as e:
            log.debug("publish failed", member=name, error=e.code().name)
            return
        if self.rebalancer.answered(name, reply.version, reply.unsettled, reply.lacking):
            self._wake.set()

    def asked(self, member: str) -> None:
        """`member` asked for this member's table (it starts, or is back from a stall): it
        gets the next publish, whose answer says what copies it lacks."""
        self.routing.ownership.born()  # with no table: asked before a first table
        if self.rebalancer.asked(member):
            self._wake.set()

    async def _fill(self, decision: Fill) -> Filled:
        """Every fill order at once; the partitions that did not become live."""
        failed: set[int] = set()
        addresses = decision.addresses

        async def one(order: FillOrder) -> None:
            request = pb.FillRequest(
                partitions=order.partitions,
                source=order.source,
                source_address=addresses[order.source],
            )
            timeout = FILL_TIMEOUT_S + RPC_TIMEOUT_S
            try:
                reply = await self.peers.fill(addresses[order.member], request, timeout)
                failed.update(reply.failed)
            except grpc.aio.AioRpcError as e:
                log.warning("fill failed", member=order.member, source=order.source,
                            error=e.code().name)  # fmt: skip
                failed.update(order.partitions)

        await asyncio.gather(*(one(o) for o in decision.orders))
        return Filled(frozenset(failed))

    async def _hand_off(self, decision: Handoff) -> HandedOff:
        """Every hand-off order at once; the partitions that keep their old primary."""
        failed: set[int] = set()
        confirm = decision.confirm_epoch

        async def one(order: HandoffOrder) -> None:
            try:
                if order.source == self.me:
                    parts = list(order.partitions)
                    _, bad = await self.replicator.handoff(parts, order.to, confirm)
                    failed.update(bad)
                else:
                    request = pb.HandoffRequest(
                        partitions=order.partitions, to=order.to, confirm_epoch=confirm
                    )
                    address = decision.addresses[order.source]
                    reply = await self.peers.handoff(address, request, 2 * RPC_TIMEOUT_S + 10)
                    failed.update(reply.failed)
            except grpc.aio.AioRpcError as e:
                log.warning("hand-off failed", source=order.source, to=order.to,
                            error=e.code().name)  # fmt: skip
                failed.update(order.partitions)

        await asyncio.gather(*(one(o) for o in decision.orders))
        return HandedOff(frozenset(failed))

    # ---- graceful leave -------------------------------------------------------------------------
    async def leave(self, member: str, timeout: float) -> LeaveAnswer:
        """Peer.Leave: move every replica off `member` (partitioning/leave.py)."""
        answer = self.rebalancer.leave_requested(member, self.live())
        if answer is not None:
            return answer
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._wake.set()
            answer = self.rebalancer.leave_progress(member)
            if answer is not None:
                return answer
            await asyncio.sleep(0.05)
        return LeaveAnswer(False, TIMED_OUT)

    async def _drain(self, coordinator: str, version: int, deadline: float) -> None:
        """Install the coordinator's table and merge every copy still held into its
        primary, whatever this member's role (partitioning/leave.py's `Departed`: after
        a healed split, or a pause the cluster took for a death, this copy may be the
        only one of some writes, and a table published meanwhile may even have placed
        this member again). Bounded by the leave timeout."""
        if self.routing.version != version:
            address = self.live().get(coordinator, "")
            try:
                msg = await self.peers.table(address, self.me) if address else None
                if msg is not None:  # that table, or a newer one by now: install keeps the newest
                    self.install(*table_from_proto(msg))
            except (grpc.aio.AioRpcError, ValueError) as e:
                log.warning("cannot fetch the coordinator's table before leaving",
                            coordinator=coordinator, error=str(e))  # fmt: skip
        held = self.followers.held_copies()
        left = [p for p in held if self.routing.owner(p) not in (None, self.me)]
        while left and time.monotonic() < deadline:
            left = [p for p in left if not await self._hand_back(p)]
            if left:
                await asyncio.sleep(DRAIN_RETRY_S)
        if left:
            log.warning("leaving with copies not handed back", partitions=left)
        else:
            log.info("copies handed back before leaving", partitions=len(held))

    async def _hand_back(self, p: int) -> bool:
        hand_back = self.followers.hand_back
        try:
            return hand_back is None or await hand_back(p)
        except Exception:  # one partition must not keep the others from going
            log.exception("hand-back before leaving failed", partition=p)
            return False

    async def leave_cluster(self) -> bool:
        """Called by this member on a graceful stop: hand everything off first."""
        timeout = self.config.leave_timeout_s
        started = time.monotonic()
        departure = self.rebalancer.depart(self.live())
        step = departure.next()
        while isinstance(step, AskLeave):
            log.info("handing off partitions before leaving", coordinator=step.member)
            try:
                reply = await self.peers.leave(step.address, self.me, timeout + RPC_TIMEOUT_S)
            except grpc.aio.AioRpcError as e:
                log.warning("leave hand-off failed", coordinator=step.member, error=e.code().name)
                step = departure.no_answer()
                continue
            answer = LeaveAnswer(reply.done, reply.error, reply.coordinator, reply.table_version)
            step = departure.answered(answer)
        if step.end is DepartureEnd.NOBODY_STAYS:
            log.info("no member stays; leaving without hand-off")
        elif step.end is DepartureEnd.HANDED_OFF:
            log.info("partitions handed off", seconds=round(time.monotonic() - started, 3),
                     note=step.error or None)  # fmt: skip
        elif step.end is DepartureEnd.REFUSED:
            log.warning("leaving without full hand-off", coordinator=step.coordinator,
                        error=step.error)  # fmt: skip
        else:
            log.warning("leaving without hand-off: no coordinator found", asked=list(step.asked))
        if step.end is DepartureEnd.HANDED_OFF and step.version:
            await self._drain(step.coordinator, step.version, started + timeout)
        return step.done
