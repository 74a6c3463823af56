"""The latency histogram, the slow log and the metric families, without a member."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from grid.member import latency as lat
from grid.member.metrics import Snapshot, families
from proto import grid_pb2 as pb

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "grid.json"


def batch(code: int, name: str, n: int = 1) -> pb.BatchRequest:
    return pb.BatchRequest(ops=[pb.Op(code=code, map=name, key=b"k%d" % i) for i in range(n)])


def test_a_batch_lands_in_its_bucket_and_past_the_last_in_inf() -> None:
    h = lat.Latencies(slow_log_ms=0)
    h.observe(batch(pb.GET, "m"), 0.00005)  # 50 µs: the first bucket (<= 100 µs)
    h.observe(batch(pb.GET, "m"), 0.003)  # <= 5 ms
    h.observe(batch(pb.GET, "m"), 20.0)  # past 10 s
    counts = h.counts[(pb.GET, "m")]
    assert counts[0] == 1
    assert counts[lat.BUCKETS_S.index(0.005)] == 1
    assert counts[-1] == 1 and sum(counts) == 3
    assert abs(h.sums[(pb.GET, "m")] - 20.00305) < 1e-9
    h.observe(pb.BatchRequest(), 1.0)  # an empty batch is not a batch of any op
    assert sum(sum(c) for c in h.counts.values()) == 3


def test_map_names_past_the_cap_share_one_series() -> None:
    h = lat.Latencies(slow_log_ms=0)
    for i in range(lat.MAX_SERIES + 50):
        h.observe(batch(pb.PUT, f"map-{i}"), 0.001)
    assert len(h.counts) == lat.MAX_SERIES + 1  # the last one is (PUT, OTHER_MAP)
    assert sum(h.counts[(pb.PUT, lat.OTHER_MAP)]) == 50
    assert sum(sum(c) for c in h.counts.values()) == lat.MAX_SERIES + 50


def test_the_slow_log_keeps_at_most_its_rate() -> None:
    h = lat.Latencies(slow_log_ms=1)
    h.observe(batch(pb.GET, "m"), 0.0005)  # under the threshold
    for _ in range(25):
        h.observe(batch(pb.PUT, "m", 3), 0.002)
    assert h.slow_logged == lat.SLOW_LOG_PER_S
    off = lat.Latencies(slow_log_ms=0)
    off.observe(batch(pb.GET, "m"), 99.0)
    assert off.slow_logged == 0


def snapshot() -> Snapshot:
    h = lat.Latencies(slow_log_ms=0)
    h.observe(batch(pb.GET, "users", 64), 0.0004)
    stats = pb.StatsReply(
        member="member-1",
        address="127.0.0.1:5701",
        version="0.1.0",
        total=pb.MapStats(entries=10, bytes=1000),
        maps=[pb.MapStats(name="users", entries=10, bytes=1000, hits=7, misses=3)],
        migration=pb.MigrationStats(primaries=271, coordinator=True),
    )
    return Snapshot(
        stats=stats,
        latency_counts=h.counts,
        latency_sums=h.sums,
        member_states={"alive": 3, "suspect": 0, "dead": 0, "left": 0},
        gossip={"datagrams_in": 5, "datagrams_out": 6, "rejected_bad_mac": 2, "health_score": 0},
        disk_free_bytes=123,
        fsync_counts=[0, 0, 0, 2, 1, *[0] * 9],
        fsync_seconds=0.004,
    )


class _Fixed(Collector):
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self):  # type: ignore[no-untyped-def]
        return families(self.snap)


def exposition(snap: Snapshot) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(snap))
    return generate_latest(registry).decode()


def test_the_exposition_parses_and_says_what_the_snapshot_holds() -> None:
    text = exposition(snapshot())
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples[("grid_map_hits_total", (("map", "users"),))] == 7
    assert samples[("grid_partitions", (("role", "primary"),))] == 271
    assert samples[("grid_coordinator", ())] == 1
    assert samples[("grid_gossip_rejected_total", (("reason", "bad_mac"),))] == 2
    assert samples[("grid_disk_free_bytes", ())] == 123
    assert samples[("grid_fsync_duration_seconds_count", ())] == 3
    assert samples[("grid_fsync_duration_seconds_bucket", (("le", "0.001"),))] == 2
    le = (("le", "0.0005"), ("map", "users"), ("op", "get"))
    assert samples[("grid_batch_duration_seconds_bucket", le)] == 1
    assert samples[("grid_member_info", (("address", "127.0.0.1:5701"), ("member", "member-1"),
                                        ("version", "0.1.0")))] == 1  # fmt: skip
    names = [f.name for f in families(snapshot())]
    assert len(names) == len(set(names)), "a metric family named twice"


def test_the_grafana_dashboard_asks_only_for_metrics_that_exist() -> None:
    """Every `grid_*` name in the dashboard's queries is one the member exports (with
    the suffixes Prometheus adds to counters and histograms)."""
    exported = set()
    for f in text_string_to_metric_families(exposition(snapshot())):
        exported |= {s.name for s in f.samples}
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 8
    asked = {name for e in exprs for name in re.findall(r"\bgrid_[a-z_]+", e)}
    assert asked and asked <= exported, sorted(asked - exported)
