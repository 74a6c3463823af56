"""The member's Prometheus endpoint (`metrics_port`): `GET /metrics` in the text format.

Why prometheus-client: the exposition format (escaping, histogram series, content
negotiation with OpenMetrics) and a small HTTP server are what it is for, kept by the
Prometheus project; writing our own would be code to keep for nothing grid-specific.

How: the library serves scrapes from a thread of its own. Everything the numbers come
from belongs to the member's event loop (the store, the replication cores, the gossip
node), so a scrape does not read them from that thread: it asks the loop for one
snapshot (`Snapshot`, made by `take_snapshot` on the loop, as the Stats RPC does) and
waits at most SCRAPE_TIMEOUT_S for it. A member too busy to answer in that time makes
the scrape fail, which Prometheus records as `up == 0`: the truth, not stale numbers.
`families` turns a snapshot into metric families; it is pure, so the names and labels
are tested without a member.

Names follow Prometheus's conventions: a `grid_` prefix, base units (seconds, bytes),
`_total` for counters. The list with what each means is in docs/operations.md.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from grid import logs
from grid.member.latency import BUCKETS_S, op_name
from grid.store.durability import FSYNC_BUCKETS_S
from proto import grid_pb2 as pb

log = logs.get("grid.member.metrics")

SCRAPE_TIMEOUT_S = 5.0
"""How long a scrape waits for the member's loop; Prometheus's own default timeout is 10 s."""


@dataclass
class Snapshot:
    """What one scrape reports, read on the member's loop."""

    stats: pb.StatsReply
    latency_counts: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    latency_sums: dict[tuple[int, str], float] = field(default_factory=dict)
    slow_batches: int = 0
    member_states: dict[str, int] = field(default_factory=dict)  # alive, suspect, dead, left
    gossip: dict[str, int | float] = field(default_factory=dict)
    disk_free_bytes: int | None = None
    fsync_counts: list[int] = field(default_factory=list)  # by FSYNC_BUCKETS_S, then +Inf
    fsync_seconds: float = 0.0


def take_snapshot(member: Any) -> Snapshot:
    """On the member's loop: copies, so the scrape thread never reads live state."""
    service = member.service
    latency = service.latency
    states: dict[str, int] = {"alive": 0, "suspect": 0, "dead": 0, "left": 0}
    gossip: dict[str, int | float] = {}
    if member.gossip is not None:
        for m in member.gossip.members():
            states[m.state] = states.get(m.state, 0) + 1
        gossip = dict(member.gossip.counters())
    disk_free = None
    if member.config.data_dir:
        try:
            disk_free = shutil.disk_usage(member.config.data_dir).free
        except OSError:
            disk_free = None
    durability = member.durability
    fsync_counts = list(durability.counters.fsync_counts) if durability is not None else []
    return Snapshot(
        fsync_counts=fsync_counts,
        fsync_seconds=durability.counters.fsync_seconds if durability is not None else 0.0,
        stats=service.stats_reply(),
        latency_counts={k: list(v) for k, v in latency.counts.items()},
        latency_sums=dict(latency.sums),
        slow_batches=latency.slow_logged,
        member_states=states,
        gossip=gossip,
        disk_free_bytes=disk_free,
    )


C = CounterMetricFamily
G = GaugeMetricFamily


def _scalars(snap: Snapshot) -> list[tuple[str, type, str, float]]:
    """(name, kind, help, value) of every metric without labels."""
    s = snap.stats
    mg, ae, ps = s.migration, s.anti_entropy, s.persistence
    rows: list[tuple[str, type, str, float]] = [
        ("grid_uptime_seconds", G, "Seconds since the member started.", s.uptime_s),
        ("grid_batches", C, "Batches served (client and forwarded).", s.requests),
        ("grid_operations", C, "Operations served.", s.operations),
        ("grid_rejected_requests", C, "Malformed or oversized requests refused.", s.rejected),
        ("grid_memory_used_bytes", G, "Store memory estimate (what max_memory counts).",
         s.total.bytes),
        ("grid_memory_max_bytes", G, "max_memory; 0: unbounded.", s.max_memory),
        ("grid_entries", G, "Live entries, every map.", s.total.entries),
        # partitions, migration, replication
        ("grid_table_version", G, "Version of the partition table in use.", mg.table_version),
        ("grid_coordinator", G, "1 if this member publishes the table.", int(mg.coordinator)),
        ("grid_migrations_pending", G, "Coordinator only: moves not yet done.", mg.pending),
        ("grid_fills", C, "Fills (migrations, new backups) completed here.", mg.fills_done),
        ("grid_handoffs", C, "Primaries handed to another member.", mg.handoffs),
        ("grid_replication_received_bytes", C, "Snapshot and change bytes from primaries.",
         mg.bytes_received),
        ("grid_replication_sent_bytes", C, "Snapshot and change bytes to followers.",
         mg.bytes_sent),
        ("grid_forwarded_operations", C, "Operations forwarded to their owner.", mg.forwarded),
        ("grid_not_owner_operations", C, "Operations answered NOT_OWNER.", mg.not_owner),
        ("grid_sync_timeouts", C, "Writes refused: sync backups did not confirm in time.",
         mg.sync_timeouts),
        ("grid_snapshots_sent", C, "Partition snapshots sent to followers.", mg.snapshots_sent),
        ("grid_replication_lag_changes", G, "Unacknowledged changes over this primary's backups.",
         mg.lag_changes_total),
        ("grid_replication_lag_changes_max", G, "The worst partition's unacknowledged changes.",
         mg.lag_changes_max),
        ("grid_replication_lag_seconds_max", G, "Age of the oldest unacknowledged change.",
         mg.lag_seconds_max),
        # anti-entropy and read repair
        ("grid_antientropy_rounds", C, "Anti-entropy rounds run here as a primary.", ae.rounds),
        ("grid_antientropy_partitions_compared", C, "Partition replicas compared.",
         ae.partitions_compared),
        ("grid_antientropy_partitions_differing", C, "Compared replicas that differed.",
         ae.partitions_differing),
        ("grid_antientropy_keys_repaired", C, "Changes applied here from a replica's records.",
         ae.keys_repaired),
        ("grid_antientropy_keys_sent", C, "Records sent to a replica for repair.", ae.keys_sent),
        ("grid_tombstones", G, "Deletes remembered for the grace period.", ae.tombstones),
        ("grid_backup_reads", C, "Reads answered from a backup copy.", ae.backup_reads),
        ("grid_read_repairs", C, "Backup reads whose copies differed and were merged.",
         ae.read_repair_fixed),
        # persistence
        ("grid_persistence_enabled", G, "1 if the member keeps a data_dir.", int(ps.enabled)),
        ("grid_log_bytes", G, "Journal bytes to replay after the snapshots.", ps.log_bytes),
        ("grid_snapshots", C, "Partition snapshots taken since start.", ps.snapshots),
        ("grid_fsyncs", C, "fsync calls of the journal.", ps.fsyncs),
        ("grid_disk_full", G, "1 while writes fail for lack of space.", int(ps.disk_full)),
        ("grid_recovery_seconds", G, "How long the start-up recovery took.", ps.recovery_s),
        ("grid_recovery_records_loaded", G, "Records replayed at start-up.", ps.records_loaded),
        ("grid_recovery_records_dropped", G, "Bad, torn or expired records at start-up.",
         ps.records_dropped),
        ("grid_slow_batches", C, "Batches logged by the slow log.", snap.slow_batches),
    ]  # fmt: skip
    if snap.disk_free_bytes is not None:
        rows.append(("grid_disk_free_bytes", G, "Free bytes on the data_dir's filesystem.",
                     snap.disk_free_bytes))  # fmt: skip
    if "health_score" in snap.gossip:
        rows.append(("grid_gossip_health_score", G,
                     "Lifeguard's local health: 0 healthy, higher when probes are late.",
                     snap.gossip["health_score"]))  # fmt: skip
    return rows


PER_MAP = {
    "entries": (G, "Live entries of the map."),
    "bytes": (G, "Memory estimate of the map's entries."),
    "hits": (C, "Reads that found a live entry."),
    "misses": (C, "Reads that found none."),
    "puts": (C, "Writes applied here as primary."),
    "deletes": (C, "Deletes applied here as primary."),
    "evictions": (C, "Entries evicted for max_memory."),
    "expirations": (C, "Entries removed because their TTL or max-idle ran out."),
}


def families(snap: Snapshot) -> Iterator[Metric]:
    """Every metric family of one snapshot (pure: tested without a member)."""
    s = snap.stats
    info = InfoMetricFamily("grid_member", "This member: name, version, address.")
    info.add_metric([], {"member": s.member, "version": s.version, "address": s.address})
    yield info
    for name, kind, doc, value in _scalars(snap):
        yield kind(name, doc, value=value)
    for f, (kind, doc) in PER_MAP.items():
        fam = kind(f"grid_map_{f}", doc, labels=["map"])
        for m in s.maps:
            fam.add_metric([m.name], getattr(m, f))
        yield fam
    mg = s.migration
    parts = G("grid_partitions", "Partitions held here, by role.", labels=["role"])
    for role, n in (("primary", mg.primaries), ("backup", mg.backups), ("filling", mg.in_flight)):
        parts.add_metric([role], n)
    yield parts
    members = G("grid_members", "Members this one knows, by state.", labels=["state"])
    for state, n in sorted(snap.member_states.items()):
        members.add_metric([state], n)
    yield members
    g = snap.gossip
    for what in ("datagrams", "streams"):
        fam = C(f"grid_gossip_{what}", f"Gossip {what}, by direction.", labels=["direction"])
        fam.add_metric(["in"], g.get(f"{what}_in", 0))
        fam.add_metric(["out"], g.get(f"{what}_out", 0))
        yield fam
    rejected = C("grid_gossip_rejected", "Gossip input rejected, by reason.", labels=["reason"])
    for k, v in sorted(g.items()):
        if k.startswith("rejected_"):
            rejected.add_metric([k.removeprefix("rejected_")], v)
    yield rejected
    hist = HistogramMetricFamily(
        "grid_batch_duration_seconds",
        "Batches from arrival to reply (fsync and sync backups included), by first op and map.",
        labels=["op", "map"],
    )
    for (code, name), counts in sorted(snap.latency_counts.items()):
        buckets = _cumulative(BUCKETS_S, counts)
        hist.add_metric([op_name(code), name], buckets, snap.latency_sums.get((code, name), 0.0))
    yield hist
    if snap.fsync_counts:
        fsync = HistogramMetricFamily(
            "grid_fsync_duration_seconds", "fsync rounds of the journal, by duration."
        )
        fsync.add_metric([], _cumulative(FSYNC_BUCKETS_S, snap.fsync_counts), snap.fsync_seconds)
        yield fsync


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    labels = [*(repr(b) for b in bounds), "+Inf"]
    running, out = 0, []
    for label, n in zip(labels, counts, strict=True):
        running += n
        out.append((label, running))
    return out


class _MemberCollector(Collector):
    def __init__(self, member: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.member = member
        self.loop = loop

    def collect(self) -> Iterator[Metric]:
        async def read() -> Snapshot:
            return take_snapshot(self.member)

        future = asyncio.run_coroutine_threadsafe(read(), self.loop)
        snap = future.result(SCRAPE_TIMEOUT_S)
        yield from families(snap)


class _Server(ThreadingMixIn, WSGIServer):
    """A thread per scrape, as prometheus-client's own server."""

    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A refused TLS handshake is an audit line, not a traceback on stderr."""
        error = sys.exc_info()[1]
        peer = f"{client_address[0]}:{client_address[1]}"
        if isinstance(error, ssl.SSLError | ConnectionError | TimeoutError):
            reason = getattr(error, "reason", None) or str(error)
            log.warning("TLS handshake refused", port="metrics", peer=peer, reason=reason)
        else:
            log.error("metrics request failed", peer=peer, error=repr(error))


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every few seconds is not news for the member's log


class MetricsServer:
    """The HTTP endpoint: started with the member, stopped with it."""

    def __init__(self, member: Any) -> None:
        self.member = member
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        """Serve /metrics from a thread (prometheus-client's WSGI server). With TLS, on the
        member's own context rather than prometheus-client's from the files, so a
        reloaded certificate and mutual TLS apply here as on every other port; the
        handshake runs in the request's thread, not the accepting one, so a client that
        stalls it holds up nobody."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_MemberCollector(self.member, asyncio.get_running_loop()))
        try:
            server = make_server(host, port, make_wsgi_app(registry), _Server, _Quiet)
        except OSError as e:
            raise OSError(
                f"cannot listen on {host}:{port} for metrics ({e.strerror or e}); "
                "set metrics_port to a free port"
            ) from e
        if tls is not None:
            server.socket = tls.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        self.port = server.server_port
        scheme = "https" if tls is not None else "http"
        log.info("metrics endpoint", address=f"{scheme}://{host}:{self.port}/metrics")
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
