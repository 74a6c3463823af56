"""Property: whatever members join, crash and leave, with every fill and hand-off
succeeding, rounds reach the target placement, and no table on the way is broken."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from partitioning.config import PlacementConfig
from partitioning.decisions import Handoff, Publish
from partitioning.table import build_table
from tests.partitioning.cluster import Cluster

NAMES = [f"m{i}" for i in range(7)]

events = st.lists(
    st.tuples(
        st.sampled_from(["join", "crash", "leave"]),
        st.sampled_from(NAMES),
        st.booleans(),  # run rounds after it (False: the next change piles up)
    ),
    max_size=12,
)


def survives(cluster: Cluster, name: str) -> bool:
    """Whether a member with a table stays (else the crash ends the cluster: a new one
    would start from epoch 1, with no data)."""
    return any(m.table is not None for n, m in cluster.members.items() if n != name)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True),
    events,
    st.integers(0, 2),
    st.integers(1, 4),
)
def test_rounds_reach_the_target_and_every_table_on_the_way_is_sound(
    first, changes, backups, wave_size
):
    placement = PlacementConfig(partition_count=16, backups=backups, virtual_nodes=8)
    cluster = Cluster(placement, wave_size=wave_size)
    for name in first:
        cluster.start(name)
    cluster.settle()
    for kind, name, settle in changes:
        if kind == "join" and name not in cluster.members:  # a name that left comes back too
            cluster.start(name)
        elif kind == "crash" and name in cluster.members and survives(cluster, name):
            cluster.crash(name)
        elif kind == "leave" and name in cluster.members and len(cluster.members) > 1:
            assert cluster.leave(name).done
        if settle:
            cluster.settle()
    cluster.settle()

    coordinator = cluster.members[cluster.coordinator()]
    assert coordinator.acting and coordinator.pending == 0
    live = sorted(cluster.members)
    assert coordinator.table is not None
    assert coordinator.table.replica_lists == build_table(live, 1, placement).replica_lists
    assert {m.version for m in cluster.members.values()} == {coordinator.version}

    epochs = [t.epoch for t in cluster.published]
    assert all(a < b for a, b in pairwise(epochs)), epochs
    for table in cluster.published:
        for replicas in table.replica_lists:
            assert replicas and len(set(replicas)) == len(replicas)
    for i, decision in enumerate(cluster.decisions):
        if isinstance(decision, Handoff):  # all succeed: the next table shows them
            following = next(d for d in cluster.decisions[i:] if isinstance(d, Publish))
            assert following.table.epoch == decision.confirm_epoch
