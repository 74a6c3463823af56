"""Shared hypothesis strategies: small configs keep the suite fast while still
reaching the edge cases (one member, more replicas than members, weights)."""

from __future__ import annotations

from hypothesis import strategies as st

from partitioning.config import MAX_BACKUPS, PlacementConfig

POOL = [f"10.0.0.{i}:5701" for i in range(1, 17)]

member_sets = st.lists(st.sampled_from(POOL), min_size=1, max_size=12, unique=True)

configs = st.builds(
    PlacementConfig,
    partition_count=st.integers(1, 97),
    backups=st.integers(0, MAX_BACKUPS),
    virtual_nodes=st.integers(1, 24),
    load_factor=st.sampled_from([1.0, 1.05, 1.15, 1.5]),
)

weighted_sets = st.dictionaries(st.sampled_from(POOL), st.integers(1, 4), min_size=1, max_size=10)
