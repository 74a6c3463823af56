"""The Prometheus endpoint of real members (`--metrics-port`), scraped with curl.

Three members on loopback, each exporting; a workload through the SDK; every scrape
parsed by prometheus-client's own text parser (what Prometheus accepts), and the
numbers must move with the workload and agree across members (every partition has one
primary; every member sees the others alive).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

import grid
from grid.harness.cluster import LocalCluster, free_port
from tests import needs
from tests.integration.support import assert_taken_port_refused, wait_partitions_settled, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def exporting(
    no_grid_env: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalCluster, list[int]]]:
    ports = [free_port() for _ in range(3)]
    c = LocalCluster(3, log_dir=tmp_path_factory.mktemp("metrics"))
    try:
        for i, port in enumerate(ports):
            c.start_member(i, ["--metrics-port", str(port)])
        for m in c.members:
            c.wait_ready(m)
        wait_partitions_settled(c.addresses)
        yield c, ports
    finally:
        c.stop(grace=5)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape, by (name, sorted labels), fetched with curl."""
    curl = needs.command("curl")
    text = subprocess.run(
        [curl, "-sf", "--max-time", "10", f"http://127.0.0.1:{port}/metrics"],
        capture_output=True, text=True, check=True, timeout=20,
    ).stdout  # fmt: skip
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum over every sample of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def test_every_member_exports_and_the_numbers_move(
    exporting: tuple[LocalCluster, list[int]],
) -> None:
    cluster, ports = exporting
    before = [scrape(p) for p in ports]
    assert all(total(s, "grid_members", state="alive") == 3 for s in before)
    assert sum(total(s, "grid_partitions", role="primary") for s in before) == 271
    assert sum(total(s, "grid_coordinator") for s in before) == 1

    with grid.Client(cluster.members[0].address, timeout=10) as client:
        m = client.map("metered")
        m.put_many({f"k{i}": i for i in range(500)})
        for i in range(100):
            m.get(f"k{i}")
            m.get(f"absent-{i}")

    def seen() -> tuple[float, float, float, float]:
        after = [scrape(p) for p in ports]
        return (
            sum(total(s, "grid_map_puts_total", map="metered") for s in after),
            sum(total(s, "grid_map_hits_total", map="metered") for s in after),
            sum(total(s, "grid_map_misses_total", map="metered") for s in after),
            sum(total(s, "grid_map_entries", map="metered") for s in after),
        )

    # summed over the members: puts, hits and misses where the primaries served them;
    # entries are every copy, so 500 keys with the default one backup are 1,000
    wait_until(lambda: seen() == (500, 100, 100, 1000), 10, 0.2, "the workload in the counters")
    after = [scrape(p) for p in ports]
    gets = sum(total(s, "grid_batch_duration_seconds_count", op="get", map="metered")
               for s in after)  # fmt: skip
    assert gets >= 200  # every get is its own batch here (sequential calls)
    for s in after:  # a histogram's +Inf bucket is its count
        for (name, labels), value in s.items():
            if name == "grid_batch_duration_seconds_count":
                inf = dict(labels) | {"le": "+Inf"}
                key = ("grid_batch_duration_seconds_bucket", tuple(sorted(inf.items())))
                assert s[key] == value
    ops_before = sum(total(s, "grid_operations_total") for s in before)
    assert sum(total(s, "grid_operations_total") for s in after) >= ops_before + 700
    assert all(total(s, "grid_memory_used_bytes") > 0 for s in after)


def test_a_busy_port_is_a_clear_error(
    no_grid_env: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert_taken_port_refused("--metrics-port", "metrics", tmp_path_factory.mktemp("busy"))


def test_a_durable_member_exports_its_fsync_times(
    no_grid_env: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    port = free_port()
    data = tmp_path_factory.mktemp("fsync-data")
    c = LocalCluster(1, log_dir=tmp_path_factory.mktemp("fsync-logs"))
    try:
        c.start_member(0, ["--metrics-port", str(port), "--data-dir", str(data),
                           "--fsync", "always"])  # fmt: skip
        c.wait_ready(c.members[0])
        with grid.Client(c.addresses[0], timeout=10) as client:
            for i in range(20):  # each answered after its fsync
                client.map("durable").put(f"k{i}", i)
        s = scrape(port)
        assert total(s, "grid_fsyncs_total") >= 1
        assert total(s, "grid_fsync_duration_seconds_count") == total(s, "grid_fsyncs_total")
        assert total(s, "grid_persistence_enabled") == 1
        assert total(s, "grid_disk_free_bytes") > 0
    finally:
        c.stop()
