"""The member's part in the cluster's data: routing, streams, moves, forwarding.

One object owns the pieces so the member (grid/member/member.py) starts and stops
them as one, and the services reach them through one name:

* Routing: the table and what this member serves (grid/member/placement/routing.py);
* Replicator: partitions this member is primary of, and their followers
  (grid/member/replicas/replica.py);
* Followers: partitions this member copies from others (grid/member/replicas/follower.py);
* Coordinator: the table's writer, active on one member (grid/member/placement/coordinator.py);
* Forwarder: operations for other members' partitions (grid/member/forwarding.py);
* AntiEntropy: replicas compared by digests and merged (grid/member/replicas/antientropy.py);
* ReadRepair: reads answered from backup copies, and their repair
  (grid/member/replicas/read_repair.py);
* Peers: the gRPC channels to other members (grid/member/peers.py).

The store's change sink is shared: durability journals every change, the
replicator streams the changes of partitions this member is primary of.
"""

from __future__ import annotations

from collections.abc import Callable

from grid.config import Config
from grid.errors import Unavailable
from grid.member.executor import BatchExecutor
from grid.member.forwarding import Forwarder
from grid.member.peers import Peers
from grid.member.placement.coordinator import Coordinator
from grid.member.placement.routing import Routing, table_from_proto
from grid.member.pubsub import PubSubRelay
from grid.member.replicas.antientropy import AntiEntropy
from grid.member.replicas.follower import Followers
from grid.member.replicas.positions import FollowPositions
from grid.member.replicas.read_repair import ReadRepair
from grid.member.replicas.replica import Replicator
from grid.members_view import ClusterMember
from grid.store import Store
from grid.store.durability import Durability
from proto import grid_pb2 as pb

FIRST_TABLE_TIMEOUT_S = 30.0


class ClusterRuntime:
    def __init__(
        self,
        name: str,
        address: str,
        config: Config,
        store: Store,
        executor: BatchExecutor,
        durability: Durability | None,
        membership: Callable[[], list[ClusterMember]],
    ) -> None:
        self.config = config
        self.store = store
        self.durability = durability
        self.peers = Peers(config.max_message_bytes, config.cluster_name, config.peer_security())
        self.routing = Routing(name, address, store, config.data_dir)
        self.replicator = Replicator(
            name,
            store,
            self.routing,
            config.migration_max_bytes_per_s,
            config.replication_linger_ms / 1000,
            log_changes=config.replication_log_changes,
        )
        self.followers = Followers(
            name,
            store,
            self.routing,
            self.replicator,
            self.peers.follow,
            durability.flush if durability is not None else _nothing,
        )
        self.coordinator = Coordinator(
            name,
            address,
            config,
            self.routing,
            self.replicator,
            self.followers,
            self.peers,
            membership,
        )
        self.replicator.sight = self.coordinator.sight
        self.forwarder = Forwarder(self, executor)
        self.pubsub = PubSubRelay(name, self.peers._unary, membership)
        """RESP PUBLISH across members (grid/member/pubsub.py)."""
        self.anti_entropy = AntiEntropy(
            name,
            config,
            store,
            self.routing,
            self.peers,
            durability.flush if durability is not None else _nothing,
            has_role=lambda p: not self.followers.unheld(p),
        )
        self.followers.hand_back = self.anti_entropy.hand_back
        self.positions: FollowPositions | None = None
        if durability is not None:  # restarts catch up from the primaries' logs
            self.positions = FollowPositions(
                config.data_dir,
                store,
                durability,
                self.followers.state,
                # per-map backups: a copy may hold fewer maps than a new rank needs;
                # fsync never: the log is not fsynced, the file would be
                enabled=self.replicator.map_backups.uniform and config.fsync != "never",
            )
            self.positions.load(durability.report.problems if durability.report else ())
            self.followers.positions = self.positions
        self.read_repair = ReadRepair(
            name, config, store, self.routing, self.followers, self.peers, self.anti_entropy
        )
        store.backup_reads = self.read_repair
        executor.routing = self.routing
        self._wire_sink()
        self._wire_write_gate()

    def _wire_write_gate(self) -> None:
        """min_cluster_size: refuse writes while too few members are in sight (after a
        split, the smaller side). Checked before a write touches anything."""
        need = self.config.min_cluster_size
        if need <= 1:
            return
        coordinator = self.coordinator
        disk = self.store.write_gate  # durability's disk-full check, if any

        def gate() -> None:
            if coordinator.live_count < need:
                raise Unavailable(
                    f"this member sees {coordinator.live_count} live members and "
                    f"min_cluster_size is {need}: writes are refused until more are back"
                )
            if disk is not None:
                disk()

        self.store.write_gate = gate

    def _wire_sink(self) -> None:
        """The store's changes go to the journal, then to the replicator (which gives a
        primary's change its seq), then to client watches (replication/watch.py)."""
        record = self.replicator.record
        watchers = self.replicator.watchers
        watching = watchers.by_partition  # (one dict for good: its truth is "any watch")
        watch = watchers.record
        journal = self.store.sink  # durability's, when the member keeps data on disk
        store = self.store

        def sink(
            p: int, op: int, m: str, key: bytes, value: bytes | None, ts: int, member: int,
            expire_at: int, max_idle: int,
        ) -> None:  # fmt: skip
            if journal is not None:
                journal(p, op, m, key, value, ts, member, expire_at, max_idle)
            record(p, op, m, key, value, ts, member, expire_at, max_idle)
            if watching:
                watch(p, op, m, key, value, ts, member, expire_at, store.existed)

        self.store.sink = sink

    def install_proto(self, msg: pb.PartitionTable) -> None:
        """A table from the coordinator (raises ValueError if malformed)."""
        table, addresses = table_from_proto(msg)
        self.coordinator.install(table, addresses)

    async def start(self) -> None:
        self.replicator.bind_loop()
        self.coordinator.restore_saved()
        self.coordinator.start()
        await self.coordinator.first_table(FIRST_TABLE_TIMEOUT_S)
        self.anti_entropy.start()
        self.read_repair.start()
        if self.positions is not None:
            self.positions.start()

    async def leave(self) -> bool:
        return await self.coordinator.leave_cluster()

    async def stop(self) -> None:
        if self.positions is not None:
            await self.positions.stop()
        await self.read_repair.stop()
        await self.anti_entropy.stop()
        await self.coordinator.stop()
        await self.pubsub.close()
        self.followers.close()
        await self.peers.close()

    def anti_entropy_stats(self) -> pb.AntiEntropyStats:
        """Anti-entropy's figures and read repair's, which `grid status` shows together."""
        stats = self.anti_entropy.stats()
        self.read_repair.fill_stats(stats)
        return stats

    def stats(self) -> pb.MigrationStats:
        table = self.routing.table
        me = self.routing.me
        held = table.partitions_of(me) if table is not None else None
        owned = self.store.owned
        lag_max, lag_total, lag_s, lagging = self.replicator.lag()
        watchers = self.replicator.watchers
        return pb.MigrationStats(
            lag_changes_max=lag_max,
            lag_changes_total=lag_total,
            lag_seconds_max=lag_s,
            sync_timeouts=self.replicator.sync_timeouts,
            caught_up_from_log=self.replicator.caught_up,
            snapshots_sent=self.replicator.snapshots_sent,
            positions_loaded=self.positions.loaded if self.positions is not None else 0,
            resumed_from_log=self.followers.resumed,
            lagging=[
                pb.PartitionLag(partition=p, backup=b, changes=n, seconds=age)
                for p, b, n, age in lagging
            ],
            table_version=self.routing.version,
            primaries=sum(owned) if owned is not None else self.store.partitions,
            backups=len(held.backup) if held is not None else 0,
            in_flight=self.followers.in_flight(),
            fills_done=self.followers.fills_done,
            handoffs=self.replicator.handoffs,
            bytes_received=self.followers.bytes_received,
            bytes_sent=self.replicator.bytes_sent,
            forwarded=self.forwarder.forwarded,
            not_owner=self.forwarder.not_owner,
            coordinator=self.coordinator.acting,
            pending=self.coordinator.pending,
            watch_subscriptions=watchers.subscriptions(),
            watch_events=watchers.queued,
            watch_dropped=watchers.dropped,
            watch_resets=watchers.resets,
        )


def _nothing() -> int:
    return 0
