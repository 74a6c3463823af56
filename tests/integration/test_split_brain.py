"""Split brain 2|1 in network namespaces: both sides take writes, the heal merges them.

Three members (grid.harness.netns.NetnsCluster: one namespace each, a bridge between them), one
backup per partition, each member persisting to its own data dir. The cluster is cut into
{0, 1} | {2} by moving member 2's cluster link to another bridge; client links stay up,
so the test reaches every member on both sides with a plain client (no smart routing:
members forward to owners). Each side must notice the other is gone, take every
partition in its table, and go on serving writes (AP). After the heal, anti-entropy must
make every partition's replicas identical (Digests) and every key must hold its
last-writer-wins value: side B wrote the keys both sides wrote after side A did.

Every wait is bounded; the timings (split detected, heal to converged) are printed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest

import grid
from grid.harness.cluster import migration_state
from grid.harness.netns import NetnsCluster, available
from grid.member.placement.routing import table_from_proto
from partitioning import DEFAULT_PARTITION_COUNT, PartitionTable, partition_of
from proto import grid_pb2 as pb
from tests import needs
from tests.integration.support import raw_channel, short_error, timed_wait

pytestmark = pytest.mark.integration

MEMBERS = "/grid.v1.Grid/Members"
TABLE = "/grid.v1.Grid/Table"
DIGESTS = "/grid.v1.Grid/Digests"
LOCAL_KEYS = "/grid.v1.Grid/LocalKeys"
ROLES = {0: "absent", 1: "primary", 2: "backup", 3: "stale"}
MAP = "s"
BASE = 2000
SAME = 500
ONLY = 300
SIDE_A = [0, 1]
SIDE_B = [2]
SETTLE_S = 30.0
SPLIT_DETECT_S = 30.0
HEAL_CONVERGE_S = 30.0


def base_value(i: int) -> dict[str, Any]:
    return {"v": "base", "i": i}


def expected_final() -> tuple[dict[str, Any], set[str]]:
    """(key -> the LWW winner after the heal, keys that must be absent)."""
    want: dict[str, Any] = {}
    absent: set[str] = set()
    for i in range(BASE):
        if i < 200:
            absent.add(f"base-{i}")  # 0..99 deleted on side A, 100..199 on side B
        elif i < 250:
            want[f"base-{i}"] = "A2"  # re-put on side A only
        else:
            want[f"base-{i}"] = base_value(i)
    want.update({f"same-{i}": "B" for i in range(SAME)})  # side B wrote last
    want.update({f"onlyA-{i}": "A" for i in range(ONLY)})
    want.update({f"onlyB-{i}": "B" for i in range(ONLY)})
    return want, absent


# ---- raw admin RPCs ------------------------------------------------------------------------------
class Admin:
    """Members/Table/Digests over channels kept open per client address."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.Channel] = {}

    def _call(self, address: str, method: str, request: bytes, timeout: float = 2.0) -> bytes:
        ch = self._channels.get(address)
        if ch is None:
            ch = self._channels[address] = raw_channel(address)
        return ch.unary_unary(method)(request, timeout=timeout)

    def alive(self, address: str) -> set[str]:
        reply = pb.MembersReply.FromString(
            self._call(address, MEMBERS, pb.MembersRequest().SerializeToString())
        )
        return {m.name for m in reply.members if m.state == "alive"}

    def table(self, address: str) -> PartitionTable | None:
        msg = pb.PartitionTable.FromString(
            self._call(address, TABLE, pb.TableRequest().SerializeToString())
        )
        return table_from_proto(msg)[0] if msg.version else None

    def digests(self, address: str) -> dict[int, int]:
        reply = pb.DigestsReply.FromString(
            self._call(address, DIGESTS, pb.DigestsRequest().SerializeToString(), timeout=5.0)
        )
        return {d.partition: d.root for d in reply.digests}

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()


# ---- the cluster ---------------------------------------------------------------------------------
@pytest.fixture
def netns_cluster(no_grid_env: None, tmp_path: Path) -> Iterator[NetnsCluster]:
    needs.root("network namespaces")
    needs.command("ip")  # iproute2: `make test` installs it
    reason = available()  # what no package brings: `ip netns add`, veth or bridges refused
    if reason is not None:
        pytest.skip(reason)
    logs = tmp_path / "logs"
    logs.mkdir()

    def data_dir(i: int) -> Sequence[str]:
        d = tmp_path / f"data-{i + 1}"
        d.mkdir(exist_ok=True)
        return ["--data-dir", str(d)]

    cluster = NetnsCluster(3, member_args=["--backups", "1"], member_extra=data_dir, log_dir=logs)
    try:
        cluster.start(timeout=30)
        yield cluster
    finally:
        cluster.close(grace=3)


@pytest.fixture
def timings() -> Iterator[dict[str, float]]:
    """Named durations, printed at the end whether the test passed or not (pytest -s)."""
    found: dict[str, float] = {}
    try:
        yield found
    finally:
        print(
            "\nsplit brain 2|1: "
            + ", ".join(
                f"{k} {v:.2f}s" if isinstance(v, float) else f"{k} {v}" for k, v in found.items()
            )
        )


@pytest.fixture
def admin() -> Iterator[Admin]:
    a = Admin()
    try:
        yield a
    finally:
        a.close()


def side_cut_off(cluster: NetnsCluster, admin: Admin, side: list[int], other: list[int]) -> str:
    """Empty when every member of `side` sees exactly its side alive and routes by a table
    naming only its side; else what is not so yet."""
    ours = {cluster.name(i) for i in side}
    theirs = {cluster.name(i) for i in other}
    for i in side:
        address = cluster.client_address(i)
        alive = admin.alive(address)
        if alive & theirs or not ours <= alive:
            return f"{cluster.name(i)} sees alive {sorted(alive)}"
        table = admin.table(address)
        if table is None:
            return f"{cluster.name(i)} has no table"
        named = set(table.members) | {m for r in table.replica_lists for m in r}
        if not named <= ours:
            return f"{cluster.name(i)}'s table (v{table.version}) names {sorted(named - ours)}"
    return ""


def write_with_retry(action: Callable[[], object], what: str, attempts: int = 5) -> int:
    """Run a write, retrying a few times on a grid error; returns the errors seen."""
    errors = 0
    for _ in range(attempts):
        try:
            action()
            return errors
        except grid.GridError as e:
            errors += 1
            last = e
            time.sleep(0.5)
    raise AssertionError(f"{what}: failed {attempts} times during the split; last: {last!r}")


def replicas_identical(cluster: NetnsCluster, admin: Admin) -> str:
    tables = [admin.table(a) for a in cluster.addresses]
    versions = {t.version if t else 0 for t in tables}
    if len(versions) != 1 or 0 in versions:
        return f"members disagree on the table: versions {sorted(versions)}"
    table = tables[0]
    assert table is not None
    if set(table.members) != {cluster.name(i) for i in range(cluster.size)}:
        return f"the table names {sorted(table.members)}"
    by_name = {cluster.name(i): cluster.client_address(i) for i in range(cluster.size)}
    digests = {name: admin.digests(address) for name, address in by_name.items()}
    differing = []
    for p, replicas in enumerate(table.replica_lists):
        roots = [digests[m].get(p) for m in replicas]
        if None in roots or len(set(roots)) != 1:
            differing.append(p)
    if differing:
        return f"{len(differing)} partitions whose replicas differ, e.g. {differing[:5]}"
    return ""


def values_merged(client: grid.Client, bad: list[str]) -> str:
    """Empty when every key holds its expected value; else a summary (and `bad` lists
    the wrong keys)."""
    want, absent = expected_final()
    m = client.map(MAP)
    got = m.get_many(list(want) + sorted(absent), timeout=20)
    wrong: dict[str, list[str]] = {}
    for key, value in want.items():
        if got.get(key) != value:
            kind = key.split("-")[0]
            seen = "missing" if key not in got else repr(got[key])[:20]
            wrong.setdefault(kind, []).append(f"{key}={seen}")
    resurrected = sorted(k for k in absent if k in got)
    if resurrected:
        wrong["deleted but present"] = resurrected
    bad[:] = [k for k in want if got.get(k) != want[k]] + resurrected
    if not wrong:
        return ""
    return "; ".join(f"{kind}: {len(keys)} wrong, e.g. {keys[:3]}" for kind, keys in wrong.items())


def where(
    keys: Sequence[str], tables: dict[str, PartitionTable | None], cluster: NetnsCluster
) -> str:
    """For failure messages: each key's partition, its replicas in the tables recorded
    along the way, and the role each member holds it in now (LocalKeys)."""
    lines = []
    for key in keys:
        p = partition_of(key.encode(), DEFAULT_PARTITION_COUNT)
        history = ", ".join(
            f"{when} {list(t.replicas(p)) if t else '?'}" for when, t in tables.items()
        )
        roles = []
        for i, address in enumerate(cluster.addresses):
            try:
                with raw_channel(address) as ch:
                    reply = pb.LocalKeysReply.FromString(
                        ch.unary_unary(LOCAL_KEYS)(
                            pb.LocalKeysRequest(map=MAP, keys=[key.encode()]).SerializeToString(),
                            timeout=3,
                        )
                    )
                roles.append(f"{cluster.name(i)}:{ROLES.get(reply.roles[0], '?')}")
            except grpc.RpcError as e:
                roles.append(f"{cluster.name(i)}:{short_error(e)}")
        lines.append(f"  {key} p{p}: {history}; held now: {' '.join(roles)}")
    return "\n".join(lines)


# ---- the test ------------------------------------------------------------------------------------
def test_split_brain_2_1_both_sides_write_heal_merges_by_lww(
    netns_cluster: NetnsCluster, admin: Admin, timings: dict[str, float]
) -> None:
    c = netns_cluster

    # 1. settled
    timings["settle"] = timed_wait(
        lambda: "" if migration_state(c.addresses, timeout=3.0) == (0, 0) else "moving",
        SETTLE_S,
        "partitions to settle",
    )

    # 2. base data through member 0 (which serves 0.0.0.0 in its namespace with neither TLS
    # nor a token: `grid status` must say so in red, from its Stats)
    with grid.Client(c.client_address(0), timeout=10, smart_routing=False) as client:
        client.map(MAP).put_many({f"base-{i}": base_value(i) for i in range(BASE)})
        warnings = client.stats()["warnings"]
        assert any(w.startswith("OPEN TO THE NETWORK: listening on 0.0.0.0") for w in warnings)

    tables: dict[str, PartitionTable | None] = {"before": admin.table(c.client_address(0))}

    # 3. split {0, 1} | {2}: each side sees only itself, in its members and its table
    t0 = time.monotonic()
    c.split([SIDE_A, SIDE_B])
    timed_wait(
        lambda: side_cut_off(c, admin, SIDE_A, SIDE_B) or side_cut_off(c, admin, SIDE_B, SIDE_A),
        SPLIT_DETECT_S,
        "each side to see only itself",
    )
    timings["split detected"] = time.monotonic() - t0
    tables["side A"] = admin.table(c.client_address(0))
    tables["side B"] = admin.table(c.client_address(2))

    # 4. both sides write (side B last, so its writes win the keys both sides wrote)
    errors = {"A": 0, "B": 0}
    t0 = time.monotonic()
    with grid.Client(c.client_address(0), timeout=10, smart_routing=False) as a:
        ma = a.map(MAP)
        errors["A"] += write_with_retry(
            lambda: ma.put_many({f"same-{i}": "A" for i in range(SAME)}), "side A same-*"
        )
        errors["A"] += write_with_retry(
            lambda: ma.put_many({f"onlyA-{i}": "A" for i in range(ONLY)}), "side A onlyA-*"
        )
        errors["A"] += write_with_retry(
            lambda: ma.delete_many([f"base-{i}" for i in range(100)]), "side A deletes"
        )
        errors["A"] += write_with_retry(
            lambda: ma.put_many({f"base-{i}": "A2" for i in range(200, 250)}), "side A base A2"
        )
        side_a_view = ma.get_many([f"same-{i}" for i in range(SAME)])
    assert side_a_view == {f"same-{i}": "A" for i in range(SAME)}, "side A lost its own writes"
    time.sleep(0.05)  # the clocks move on: side B's writes are later than side A's
    with grid.Client(c.client_address(2), timeout=10, smart_routing=False) as b:
        mb = b.map(MAP)
        errors["B"] += write_with_retry(
            lambda: mb.put_many({f"same-{i}": "B" for i in range(SAME)}), "side B same-*"
        )
        errors["B"] += write_with_retry(
            lambda: mb.put_many({f"onlyB-{i}": "B" for i in range(ONLY)}), "side B onlyB-*"
        )
        errors["B"] += write_with_retry(
            lambda: mb.delete_many([f"base-{i}" for i in range(100, 200)]), "side B deletes"
        )
        side_b_view = mb.get_many([f"same-{i}" for i in range(SAME)])
    assert side_b_view == {f"same-{i}": "B" for i in range(SAME)}, "side B lost its own writes"
    timings["split writes"] = time.monotonic() - t0
    timings["write retries side A"] = errors["A"]
    timings["write retries side B"] = errors["B"]

    # 5. heal: one cluster, replicas identical by digest, every key its LWW winner
    t0 = time.monotonic()
    c.heal()
    everyone = {c.name(i) for i in range(c.size)}

    def converged(client: grid.Client) -> str:
        if any(admin.alive(a) != everyone for a in c.addresses):
            return "members: " + "; ".join(
                f"{c.name(i)} sees alive {sorted(admin.alive(a))}"
                for i, a in enumerate(c.addresses)
            )
        timings.setdefault("heal: all see all alive", time.monotonic() - t0)
        if migration_state(c.addresses, timeout=3.0) != (0, 0):
            return f"partitions still moving: {migration_state(c.addresses, timeout=3.0)}"
        timings.setdefault("heal: partitions settled", time.monotonic() - t0)
        wrong = replicas_identical(c, admin)
        if wrong:
            return f"digests: {wrong}"
        timings.setdefault("heal: replicas identical", time.monotonic() - t0)
        wrong = values_merged(client, bad)
        if wrong:
            return f"values: {wrong}"
        return ""

    bad: list[str] = []
    with grid.Client(c.client_address(0), timeout=20, smart_routing=False) as client:
        try:
            timed_wait(
                lambda: converged(client),
                HEAL_CONVERGE_S,
                "after the heal: one cluster, replicas identical, every key its last writer's "
                "value",
                interval=0.5,
            )
        except AssertionError as e:
            if not bad:
                raise
            tables["after heal"] = admin.table(c.client_address(0))
            raise AssertionError(
                f"{e}\nwrong keys (first 10):\n{where(bad[:10], tables, c)}"
            ) from None
    timings["heal to converged"] = time.monotonic() - t0
