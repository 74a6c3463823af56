import math
import os
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from uhashring import HashRing

from partitioning.config import MAX_BACKUPS, PlacementConfig
from partitioning.placement import load_caps, normalize_members, place, place_plain
from partitioning.table import build_table
from tests.partitioning.strategies import configs, member_sets, weighted_sets

THREE = ["10.0.0.1:5701", "10.0.0.2:5701", "10.0.0.3:5701"]


@given(member_sets, configs, st.randoms(use_true_random=False))
def test_same_members_any_order_same_layout(members, config, rnd):
    shuffled = list(members)
    rnd.shuffle(shuffled)
    assert place(members, config) == place(shuffled, config)
    assert place(members, config) == place(tuple(reversed(members)) + tuple(members), config)


@given(member_sets, configs)
def test_replicas_distinct_live_and_capped(members, config):
    layout = place(members, config)
    assert len(layout) == config.partition_count
    wanted = min(1 + config.backups, len(members))
    for replicas in layout:
        assert len(replicas) == wanted
        assert len(set(replicas)) == wanted
        assert set(replicas) <= set(members)


@given(weighted_sets, configs)
def test_weighted_primaries_within_caps(members, config):
    """Rank 0 has no exclusions, so the weighted cap always holds for primaries.

    (Later ranks can be left infeasible by earlier ones under skewed weights;
    see the placement module comment.)
    """
    layout = place(members, config)
    caps = load_caps(
        normalize_members(members),
        config.partition_count,
        config.load_factor,
        config.partition_count,
    )
    assert sum(caps.values()) >= config.partition_count
    load = Counter(replicas[0] for replicas in layout)
    for m in members:
        assert load[m] <= caps[m]


@given(member_sets, configs)
@example(  # found by hypothesis: the last rank could only go to members holding it already
    members=[f"10.0.0.{i}:5701" for i in (1, 16, 2, 3, 13, 4, 5, 6)],
    config=PlacementConfig(partition_count=3, backups=4, virtual_nodes=4, load_factor=1.0),
)
def test_unweighted_bound_is_the_simple_formula(members, config):
    """Every rank prefix (primaries, primaries + backup 1, ...) within the load bound."""
    layout = place(members, config)
    for k in range(min(1 + config.backups, len(members))):
        load = Counter(m for replicas in layout for m in replicas[: k + 1])
        share = (k + 1) * config.partition_count / len(members)
        bound = max(math.ceil(share), math.floor(config.load_factor * share))
        assert max(load.values()) <= bound


def test_balance_target_default_config():
    for n in (3, 5, 10, 50):
        members = [f"10.0.0.{i}:5701" for i in range(1, n + 1)]
        layout = place(members)
        for ranks in (1, 2):
            load = Counter(m for replicas in layout for m in replicas[:ranks])
            assert max(load.values()) / (ranks * 271 / n) <= 1.15


@given(member_sets, st.integers(1, 60), st.integers(0, 3), st.integers(1, 24))
def test_plain_walk_matches_uhashring(members, partitions, backups, vnodes):
    """Our walk over ring.get_points() is uhashring's own iterate_nodes."""
    config = PlacementConfig(partitions, backups, vnodes)
    ring = HashRing(nodes=sorted(members), vnodes=vnodes)
    wanted = min(1 + backups, len(members))
    expected = tuple(
        tuple(list(ring.iterate_nodes(f"partition/{p}"))[:wanted]) for p in range(partitions)
    )
    assert place_plain(members, config) == expected


@settings(max_examples=25)
@given(member_sets.filter(lambda m: len(m) >= 2), st.integers(1, 3))
def test_ample_slack_is_plain_consistent_hashing(members, backups):
    """With no load bound the correction must not touch placement at all."""
    config = PlacementConfig(61, backups, 16, load_factor=1e9)
    assert place(members, config) == place_plain(members, config)


def test_single_member_holds_everything():
    layout = place(["solo:1"], PlacementConfig(backups=3))
    assert set(layout) == {("solo:1",)}


def test_heavier_member_gets_more():
    layout = place({"a:1": 1, "b:1": 1, "c:1": 2})
    load = Counter(r[0] for r in layout)
    assert load["c:1"] > load["a:1"] and load["c:1"] > load["b:1"]


def test_pinned_layout():
    # Catches a change of uhashring's hash, of the partition label or of the
    # algorithm: any of them would split a mixed-version cluster's view.
    table = build_table(THREE, 0)
    assert table.replicas(0) == ("10.0.0.2:5701", "10.0.0.3:5701")
    assert table.replicas(270) == ("10.0.0.3:5701", "10.0.0.2:5701")
    assert table.fingerprint == 0xE2E51530
    assert build_table(THREE, 0, PlacementConfig(backups=2)).fingerprint == 0xAF818696


def test_layout_independent_of_process_hash_seed():
    code = (
        f"from partitioning.table import build_table;print(build_table({THREE!r} * 2, 0).version)"
    )
    outputs = set()
    for seed in ("1", "2", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        outputs.add(run.stdout.strip())
    assert outputs == {str(build_table(THREE, 0).version)}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"partition_count": 0},
        {"backups": -1},
        {"backups": MAX_BACKUPS + 1},
        {"virtual_nodes": 0},
        {"load_factor": 0.99},
        {"load_factor": float("nan")},
    ],
)
def test_config_rejects(kwargs):
    with pytest.raises(ValueError):
        PlacementConfig(**kwargs)


def test_config_defaults():
    config = PlacementConfig()
    assert (config.partition_count, config.backups, config.virtual_nodes) == (271, 1, 160)
    assert config.load_factor == 1.15 and config.replica_count == 2


@pytest.mark.parametrize(
    "members",
    [[], [""], [3], {"a": 0}, {"a": True}, {"a": 1.5}],
)
def test_bad_members_rejected(members):
    with pytest.raises(ValueError):
        normalize_members(members)
