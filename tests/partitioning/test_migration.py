import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from partitioning.config import PlacementConfig
from partitioning.migration import (
    MigrationPlan,
    StepKind,
    apply_plan,
    ownership,
    plan_migration,
)
from partitioning.table import build_table
from tests.partitioning.strategies import POOL, configs, member_sets

MEMBERS = [f"10.0.0.{i}:5701" for i in range(1, 7)]
PHASES = [StepKind.PROMOTE, StepKind.FILL, StepKind.HANDOFF, StepKind.DROP]


@given(member_sets, member_sets, configs)
def test_applying_plan_gives_new_ownership(before, after, config):
    old, new = build_table(before, 1, config), build_table(after, 2, config)
    plan = plan_migration(old, new)
    assert apply_plan(old, plan) == ownership(new)
    kinds = [PHASES.index(s.kind) for s in plan.steps]
    assert kinds == sorted(kinds)
    assert (plan.from_version, plan.to_version) == (old.version, new.version)


@given(member_sets, member_sets, configs)
def test_plan_steps_are_well_formed(before, after, config):
    old, new = build_table(before, 1, config), build_table(after, 2, config)
    live = set(after)
    for step in plan_migration(old, new).steps:
        if step.kind is not StepKind.DROP:
            assert step.member in live
            assert step.sources
        if step.kind is StepKind.FILL:
            assert step.member not in old.replicas(step.partition)
            assert set(step.sources) <= set(old.replicas(step.partition)) | live
        if step.kind is StepKind.DROP:
            assert step.member not in new.replicas(step.partition)


@given(member_sets, configs)
def test_same_members_no_steps(members, config):
    assert (
        plan_migration(build_table(members, 1, config), build_table(members, 2, config)).steps == ()
    )


@given(st.lists(st.sampled_from(POOL), min_size=3, max_size=12, unique=True), st.data())
def test_lost_primary_is_promoted_from_backup(members, data):
    """A departed primary's partition keeps serving: a surviving copy is promoted first."""
    config = PlacementConfig(partition_count=61, backups=data.draw(st.integers(1, 3)))
    gone = data.draw(st.sampled_from(members))
    old = build_table(members, 1, config)
    new = build_table([m for m in members if m != gone], 2, config)
    plan = plan_migration(old, new)
    for p in old.partitions_of(gone).primary:
        first = plan.for_partition(p)[0]
        assert first.kind is StepKind.PROMOTE
        assert first.sources == (gone,)
        assert first.member in old.replicas(p)


def test_join_fills_new_member_and_hands_off():
    old = build_table(MEMBERS[:5], 1)
    new = build_table(MEMBERS, 2)
    plan = plan_migration(old, new)
    joiner = MEMBERS[5]
    # Mostly the joiner; the bounded-load chains can also shift a few others.
    filled = [s.member for s in plan.of_kind(StepKind.FILL)]
    assert filled.count(joiner) > len(filled) / 2
    taken = set(new.partitions_of(joiner).primary)
    assert taken <= {s.partition for s in plan.of_kind(StepKind.HANDOFF)}
    for p in taken:
        kinds = [s.kind for s in plan.for_partition(p)]
        assert kinds.index(StepKind.FILL) < kinds.index(StepKind.HANDOFF)


def test_fills_spread_over_senders():
    old = build_table(MEMBERS[:3], 1)
    new = build_table(MEMBERS, 2)
    fills = plan_migration(old, new).of_kind(StepKind.FILL)
    senders = {s.sources[0] for s in fills}
    assert len(senders) > 1
    assert len({s.sources[0] for s in fills[: len(senders)]}) == len(senders)


def test_plan_round_trips_through_plain_data():
    plan = plan_migration(build_table(MEMBERS[:4], 1), build_table(MEMBERS[2:], 2))
    assert MigrationPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


@pytest.mark.parametrize(
    "data",
    [
        None,
        {"from_version": 1, "to_version": 2},
        {"from_version": "1", "to_version": 2, "steps": []},
        {"from_version": 1, "to_version": 2, "steps": [{"kind": "teleport"}]},
        {"from_version": 1, "to_version": 2, "steps": [None]},
        {
            "from_version": 1,
            "to_version": 2,
            "steps": [{"kind": "fill", "partition": "0", "member": "a", "sources": []}],
        },
    ],
)
def test_bad_plan_rejected(data):
    with pytest.raises(ValueError):
        MigrationPlan.from_dict(data)


def test_partition_count_must_match():
    with pytest.raises(ValueError, match="fixed for the life"):
        plan_migration(
            build_table(MEMBERS, 1), build_table(MEMBERS, 2, PlacementConfig(partition_count=7))
        )


def test_apply_rejects_plan_for_other_table():
    a, b = build_table(MEMBERS[:3], 1), build_table(MEMBERS, 2)
    with pytest.raises(ValueError):
        apply_plan(b, plan_migration(a, b))
