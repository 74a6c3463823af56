"""The partition table's one writer: who computes it, and how partitions move.

Every member runs this loop; one acts. The coordinator is the live member
with the smallest name that is not leaving, which every member computes the
same way from its membership view (Hazelcast uses its oldest member; a name
is as good and needs no extra state). When the coordinator dies, the next
name takes over with the last table it was sent.

A round (on every membership event, on a leave request, and every second):

1. No table yet: ask the live members for theirs and adopt the newest; if
   nobody has one (a new cluster), build it from the live members.
2. Members that are gone leave every replica list at once (a crashed
   primary's first backup becomes primary: failover). A member restarting
   from disk is waited for (`restart_wait_s`) if the saved table names it.
3. The target is the placement of the live, non-leaving members
   (partitioning.build_table). Partitions that differ move in waves of
   `migration_max_parallel`: every new replica is filled from the current
   primary (snapshot plus live changes, grid/follower.py), then, where the
   primary changes, the old primary hands the partition over
   (grid/replica.py), then the wave's new replica lists are published. A
   partition whose fill fails keeps its old list and is retried next round.

The coordinator publishes only between waves, never while a hand-off is in
flight, so any table a member installs after a hand-off already shows it.
Graceful leave: the leaving member asks the coordinator (`Leave`), which
moves every replica off it and answers once the published table no longer
names it; only then does the member leave the gossip and exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import grpc

from grid import logs
from grid.config import Config
from grid.follower import Followers
from grid.gossip.view import ClusterMember
from grid.map_backups import map_backups
from grid.peers import Peers
from grid.replica import Replicator
from grid.routing import Routing, table_from_proto
from partitioning import PartitionTable, PlacementConfig, build_table
from proto import grid_pb2 as pb

log = logs.get("grid.coordinator")

TICK_S = 1.0
RPC_TIMEOUT_S = 5.0
FILL_TIMEOUT_S = 30.0  # how long a member follows a partition waiting for it to be live
MAX_LEAVE_REDIRECTS = 6
LIVE_STATES = ("alive", "suspect")


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
        self.placement = PlacementConfig(
            partition_count=config.partitions,
            backups=config.table_backups,
            virtual_nodes=config.virtual_nodes,
        )
        self.map_backups = map_backups(config)
        # the highest backup rank that holds every map
        self.narrowest = min([self.map_backups.default, *self.map_backups.by_map.values()])
        self.leaving: set[str] = set()
        self.expected: set[str] = set()  # named by the saved table, not seen since start
        self.started = time.monotonic()
        self.pending = 0  # partitions still to move (coordinator only)
        self.acting = False
        self.live_count = 1  # members this member sees alive, itself included
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._published: dict[str, int] = {}
        self._sent_addresses: dict[str, str] = {}  # member -> address in our last publish
        self._epoch_floor = 0  # a member holds a table of this epoch: publish above it
        self._overtake = False  # a member holds a table of another lineage
        self._left_done = asyncio.Event()

    # ---- lifecycle ------------------------------------------------------------------------------
    def restore_saved(self) -> None:
        """Start from the table saved before a restart, waiting for the members it names."""
        saved = self.routing.load_saved()
        if saved is None:
            return
        table, addresses = saved
        self.routing.install(table, addresses)
        self.expected = set(table.members) - {self.me}
        log.info("saved partition table loaded", version=table.version,
                 waiting_for=sorted(self.expected))  # fmt: skip

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="grid-coordinator")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    def wake(self) -> None:
        self._wake.set()

    def on_member(self, kind: str, member: ClusterMember) -> None:
        self.live()  # keep live_count current for the write gate (min_cluster_size)
        if kind in ("joined", "alive", "updated"):
            self.expected.discard(member.name)
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
            saved = self.routing.version
            await self._adopt(self.live())
            if self.routing.version == saved:
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
        out = {self.me: self.address}
        for m in self.membership():
            if m.state in LIVE_STATES and m.name != self.me:
                out[m.name] = m.address
                self.expected.discard(m.name)
        self.live_count = len(out)
        return out

    def coordinator_of(self, live: dict[str, str]) -> str:
        candidates = [m for m in live if m not in self.leaving]
        return min(candidates) if candidates else self.me

    def _waiting_for(self) -> set[str]:
        if time.monotonic() - self.started > self.config.restart_wait_s:
            self.expected.clear()
        return self.expected

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
        live = self.live()
        everyone_answered = True
        if self.routing.table is None:
            everyone_answered = await self._adopt(live)
        self.acting = self.coordinator_of(live) == self.me and self.me not in self.leaving
        if not self.acting:
            self.pending = 0
            return
        if self.routing.table is None:
            if not everyone_answered:
                return  # a member that did not answer may have a table: never guess
            members = [m for m in live if m not in self.leaving]
            table = build_table(members, 1, self.placement)
            log.info("new cluster: first partition table", members=members)
            await self._publish(table, live)
            return
        await self._rebalance(live)

    async def _adopt(self, live: dict[str, str]) -> bool:
        """Take the newest table any live member has; False if some did not answer."""
        best = None
        answered = True
        for name, address in live.items():
            if name == self.me:
                continue
            try:
                msg = await self.peers.table(address) if address else None
            except grpc.aio.AioRpcError:
                msg = None
            if msg is None:
                answered = False
                continue
            if msg.version and (best is None or msg.version > best.version):
                best = msg
        if best is not None and best.version != self.routing.version:
            try:
                table, addresses = table_from_proto(best)
            except ValueError as e:
                log.warning("peer table refused", error=str(e))
                return False
            self._install(table, addresses)
        return answered

    def _install(self, table: PartitionTable, addresses: dict[str, str]) -> None:
        if self.routing.install(table, addresses):
            self._follow_table()

    def _follow_table(self) -> None:
        """Streams by the table in use: primaries get a log, backups subscribe."""
        self.replicator.on_table()
        self.followers.reconcile()

    async def _publish(self, table: PartitionTable, live: dict[str, str]) -> None:
        self._install(table, live)
        self._sent_addresses = {m: self.routing.addresses.get(m, "") for m in table.members}
        msg = self.routing.to_proto()
        targets = [(m, a) for m, a in live.items() if m != self.me and a]

        async def one(name: str, address: str) -> None:
            try:
                self._published[name] = v = await self.peers.publish(address, msg, RPC_TIMEOUT_S)
            except grpc.aio.AioRpcError as e:
                log.debug("publish failed", member=name, error=e.code().name)
                return
            self._note_epoch(v)

        await asyncio.gather(*(one(m, a) for m, a in targets))

    def _note_epoch(self, version: int) -> None:
        """A member answered with a table newer than ours (the other side of a healed
        split had its own coordinator): our next table must be newer still, or that
        member would ignore it."""
        ours = self.routing.version
        # (an equal epoch with another fingerprint is another lineage too: two clusters
        # started apart, then joined; equal epochs never replace each other)
        if version != ours and version >> 32 >= ours >> 32:
            self._epoch_floor = max(self._epoch_floor, version >> 32)
            self._overtake = True
            self._wake.set()

    def _next_epoch(self) -> int:
        return max(self.routing.version >> 32, self._epoch_floor) + 1

    def _layout_table(self, layout: list[list[str]], live: dict[str, str]) -> PartitionTable:
        current = self.routing.table
        assert current is not None
        members = {m for r in layout for m in r} | {m for m in live if m not in self.leaving}
        return PartitionTable.of_layout(
            self._next_epoch(),
            current.partition_count,
            self.config.table_backups,
            tuple(members),
            tuple(tuple(r) for r in layout),
        )

    async def _rebalance(self, live: dict[str, str]) -> None:
        table = self.routing.table
        assert table is not None
        waiting = self._waiting_for()
        # members behind on the table (a publish failed) get it again
        behind = [m for m in live if m != self.me and self._published.get(m, -1) != table.version]
        if behind:
            await self._publish_to(behind, live)
        if self._overtake:  # members ignore our table: overtake theirs
            self._overtake = False
            log.info("a member holds a table of another lineage; republishing above it",
                     theirs=self._epoch_floor, ours=table.epoch)  # fmt: skip
            await self._publish(
                self._layout_table([list(r) for r in table.replica_lists], live), live
            )
            table = self.routing.table
            assert table is not None
        moved_address = [
            m
            for m in table.members
            if m in live and live[m] and self._sent_addresses.get(m) != live[m]
        ]
        if moved_address:  # a member restarted on another address: clients must learn it
            log.info("member addresses changed; republishing the table", members=moved_address)
            layout = [list(r) for r in table.replica_lists]
            await self._publish(self._layout_table(layout, live), live)
            table = self.routing.table
            assert table is not None
        # 1. the gone leave every list now (failover)
        gone = {m for m in table.members if m not in live and m not in waiting}
        layout = [list(r) for r in table.replica_lists]
        target_members = [m for m in live if m not in self.leaving] + sorted(waiting)
        if not target_members:
            return  # everyone is leaving (a whole-cluster shutdown): nothing to place
        target = build_table(sorted(set(target_members)), table.epoch + 1, self.placement)
        todo = [p for p in range(table.partition_count) if tuple(layout[p]) != target.replicas(p)]
        self.pending = len(todo) or len(gone)
        if gone:
            lost = 0
            for p, r in enumerate(layout):
                kept = [m for m in r if m not in gone]
                if not kept:
                    kept = [target.owner(p)]  # no copy survives: start empty
                    lost += 1
                layout[p] = kept
            log.warning("members gone: replicas removed", gone=sorted(gone),
                        partitions_without_copy=lost)  # fmt: skip
            await self._publish(self._layout_table(layout, live), live)
        # 2. leaving members: their primaries go to their own backups at once
        leavers = {m for m in self.leaving if m in live}
        if leavers and await self._release(leavers, layout, live):
            await self._publish(self._layout_table(layout, live), live)
        # 3. move what differs from the target, a wave at a time
        todo = [p for p in range(table.partition_count) if tuple(layout[p]) != target.replicas(p)]
        self.pending = len(todo)
        if not todo:
            return
        started = time.monotonic()
        log.info("rebalancing", partitions=len(todo), members=sorted(target.members))
        wave_size = self.config.migration_max_parallel
        for i in range(0, len(todo), wave_size):
            if self.coordinator_of(self.live()) != self.me:
                return  # someone else took over (a smaller name joined)
            if {m for m in self.leaving if m in live} - leavers:
                return  # a member asked to leave: release it first (next round, at once)
            if set(live) - set(self.live()):
                return  # a member is gone: fail over first (next round, at once)
            wave = todo[i : i + wave_size]
            changed = await self._move(wave, layout, target, live)
            self.pending = max(0, len(todo) - i - len(wave))
            if changed:
                await self._publish(self._layout_table(layout, live), live)
        self.pending = 0
        settled = sum(1 for p in todo if tuple(layout[p]) == target.replicas(p))
        log.info("rebalance round done", settled=settled, of=len(todo),
                 seconds=round(time.monotonic() - started, 3),
                 table_version=self.routing.version)  # fmt: skip

    async def _release(
        self, leavers: set[str], layout: list[list[str]], live: dict[str, str]
    ) -> bool:
        """Free leaving members in one step: each primary they hold is handed to its
        first backup that stays (a live follower: nothing to copy), and they leave every
        backup list. Partitions with no such backup keep them until filled by the waves.
        The stayers' replica count is restored by the next waves, after they left.
        Returns whether the layout changed."""
        handoffs: dict[tuple[str, str], list[int]] = {}
        # a backup at rank k holds only the maps with k or more backups (map_backups):
        # an heir that lacks some must be filled like any new primary, by the waves
        for p, r in enumerate(layout):
            if r[0] in leavers:
                heir = next((m for m in r[1:] if m not in leavers and m in live), None)
                if heir is not None and r.index(heir) <= self.narrowest:
                    handoffs.setdefault((r[0], heir), []).append(p)
        failed = await self._hand_off(handoffs, live)
        changed = False
        for (_, heir), parts in handoffs.items():
            for p in parts:
                if p not in failed:
                    layout[p] = [heir] + [m for m in layout[p] if m != heir]
                    changed = True
        for p, r in enumerate(layout):
            if r[0] not in leavers:  # a leaver left as a backup only: it goes
                kept = [m for m in r if m not in leavers]
                if kept != r:
                    layout[p] = kept
                    changed = True
        if handoffs:
            log.info("leaving members released", leavers=sorted(leavers),
                     handed_off=sum(len(v) for v in handoffs.values()) - len(failed))  # fmt: skip
        return changed

    async def _publish_to(self, names: list[str], live: dict[str, str]) -> None:
        msg = self.routing.to_proto()
        for name in names:
            address = live.get(name)
            if not address:
                continue
            try:
                self._published[name] = v = await self.peers.publish(address, msg, RPC_TIMEOUT_S)
            except grpc.aio.AioRpcError:
                continue
            self._note_epoch(v)

    async def _move(
        self, wave: list[int], layout: list[list[str]], target: PartitionTable, live: dict[str, str]
    ) -> bool:
        """Fill, hand off and re-list one wave of partitions; True if any list changed."""
        # fills: group by (new member, current primary)
        groups: dict[tuple[str, str], list[int]] = {}
        for p in wave:
            primary = layout[p][0]
            if primary not in live:
                continue  # its primary is still starting (restart wait)
            heir = target.owner(p)
            for m in target.replicas(p):
                # a member not holding p yet is filled; so is a backup about to become
                # primary that holds only some maps (map_backups: a rank past the
                # narrowest map's backups)
                lacks = m not in layout[p] or (
                    m == heir and m != primary and layout[p].index(m) > self.narrowest
                )
                if lacks and m in live:
                    groups.setdefault((m, primary), []).append(p)
        failed: set[int] = set()

        async def fill(member: str, source: str, parts: list[int]) -> None:
            request = pb.FillRequest(partitions=parts, source=source, source_address=live[source])
            try:
                reply = await self.peers.fill(live[member], request, FILL_TIMEOUT_S + RPC_TIMEOUT_S)
                failed.update(reply.failed)
            except grpc.aio.AioRpcError as e:
                log.warning("fill failed", member=member, source=source, error=e.code().name)
                failed.update(parts)

        await asyncio.gather(*(fill(m, s, parts) for (m, s), parts in groups.items()))
        # hand-offs: group by (current primary, new primary)
        handoffs: dict[tuple[str, str], list[int]] = {}
        for p in wave:
            if p in failed:
                continue
            new, old = target.owner(p), layout[p][0]
            if new != old and old in live and new in live:
                handoffs.setdefault((old, new), []).append(p)

        failed |= await self._hand_off(handoffs, live)
        changed = False
        for p in wave:
            if p in failed or layout[p][0] not in live or target.owner(p) not in live:
                continue  # keep the old list; the next round tries again
            new = [m for m in target.replicas(p) if m in live]
            if new != layout[p]:
                layout[p] = new
                changed = True
        if failed:
            log.warning("partition moves failed; retrying next round", partitions=sorted(failed))
        return changed

    async def _hand_off(
        self, groups: dict[tuple[str, str], list[int]], live: dict[str, str]
    ) -> set[int]:
        """Run hand-offs grouped by (old primary, new primary), all at once; returns the
        partitions whose hand-off failed (they keep their old primary). The epoch is
        that of the next publish, which will show them (grid/routing.py)."""
        failed: set[int] = set()
        confirm = self._next_epoch()

        async def one(old: str, new: str, parts: list[int]) -> None:
            try:
                if old == self.me:
                    _, bad = await self.replicator.handoff(parts, new, confirm)
                    failed.update(bad)
                else:
                    request = pb.HandoffRequest(partitions=parts, to=new, confirm_epoch=confirm)
                    reply = await self.peers.handoff(live[old], request, 2 * RPC_TIMEOUT_S + 10)
                    failed.update(reply.failed)
            except grpc.aio.AioRpcError as e:
                log.warning("hand-off failed", source=old, to=new, error=e.code().name)
                failed.update(parts)

        await asyncio.gather(*(one(o, n, parts) for (o, n), parts in groups.items()))
        return failed

    # ---- graceful leave -------------------------------------------------------------------------
    async def leave(self, member: str, timeout: float) -> tuple[bool, str, str]:
        """Move every replica off `member`: (done, error, coordinator to ask instead).

        Every Leave a member receives is remembered, so when a whole cluster is told to
        stop at once the members learn from each other's requests that nobody stays,
        and answer at once instead of moving partitions to members about to go.
        """
        self.leaving.add(member)
        live = self.live()
        if all(m in self.leaving for m in live):
            return True, "no member stays to take the partitions", ""
        if self.me in self.leaving and member != self.me:
            return False, f"{self.me} is leaving too", ""
        coordinator = self.coordinator_of(live)
        if coordinator != self.me:
            return False, f"{coordinator} coordinates", coordinator
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._wake.set()
            table = self.routing.table
            if table is not None and not _holds_anything(table, member):
                return True, "", ""
            if self.me in self.leaving and member != self.me:
                return False, f"{self.me} is leaving too", ""
            await asyncio.sleep(0.05)
        return False, "timed out before every partition was moved", ""

    async def leave_cluster(self) -> bool:
        """Called by this member on a graceful stop: hand everything off first."""
        self.leaving.add(self.me)
        timeout = self.config.leave_timeout_s
        started = time.monotonic()
        asked: list[str] = []
        live = self.live()
        target = None
        for _ in range(MAX_LEAVE_REDIRECTS):
            stays = [m for m in live if m not in self.leaving]
            if not stays:
                log.info("no member stays; leaving without hand-off")
                return True
            target = target if target in stays else min(stays)
            asked.append(target)
            log.info("handing off partitions before leaving", coordinator=target)
            try:
                reply = await self.peers.leave(live[target], self.me, timeout + RPC_TIMEOUT_S)
            except grpc.aio.AioRpcError as e:
                log.warning("leave hand-off failed", coordinator=target, error=e.code().name)
                self.leaving.add(target)  # it does not answer: try the next
                target = None
                continue
            if reply.done:
                log.info("partitions handed off", seconds=round(time.monotonic() - started, 3),
                         note=reply.error or None)  # fmt: skip
                return True
            if not reply.coordinator or reply.coordinator in asked:
                if reply.error.endswith("is leaving too"):
                    self.leaving.add(target)
                    target = None
                    continue
                log.warning("leaving without full hand-off", coordinator=target, error=reply.error)
                return False
            target = reply.coordinator
        log.warning("leaving without hand-off: no coordinator found", asked=asked)
        return False


def _holds_anything(table: PartitionTable, member: str) -> bool:
    held = table.partitions_of(member)
    return bool(held.primary or held.backup)
