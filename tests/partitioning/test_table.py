import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from partitioning.config import PlacementConfig
from partitioning.table import MAX_EPOCH, PartitionTable, build_table
from tests.partitioning.strategies import configs, member_sets

MEMBERS = ["10.0.0.1:5701", "10.0.0.2:5701", "10.0.0.3:5701", "10.0.0.4:5701"]


@given(member_sets, configs, st.integers(0, MAX_EPOCH))
def test_round_trip_through_plain_data(members, config, epoch):
    table = build_table(members, epoch, config)
    data = table.to_dict()
    assert PartitionTable.from_dict(json.loads(json.dumps(data))) == table
    assert table.epoch == epoch
    assert 0 <= table.version < 2**63


@given(member_sets, configs)
def test_lookups_agree_with_replica_lists(members, config):
    table = build_table(members, 0, config)
    primaries = []
    for m in members:
        mine = table.partitions_of(m)
        primaries.extend(mine.primary)
        for p in mine.primary:
            assert table.owner(p) == m == table.replicas(p)[0]
        for p in mine.backup:
            assert m in table.replicas(p)[1:]
    assert sorted(primaries) == list(range(config.partition_count))
    backups = sum(len(table.partitions_of(m).backup) for m in members)
    assert backups == config.partition_count * (len(table.replicas(0)) - 1)


def test_unknown_member_holds_nothing():
    table = build_table(MEMBERS, 1)
    assert table.partitions_of("10.9.9.9:1") == type(table.partitions_of(MEMBERS[0]))((), ())


def test_version_changes_with_member_set_even_at_same_epoch():
    a = build_table(MEMBERS, 7)
    b = build_table(MEMBERS[:-1], 7)
    assert a.epoch == b.epoch and a.version != b.version
    assert not a.newer_than(b) and not b.newer_than(a)
    c = build_table(MEMBERS[:-1], 8)
    assert c.newer_than(a) and c.version > a.version


def test_version_is_stable_for_same_inputs():
    assert build_table(MEMBERS, 3).version == build_table(reversed(MEMBERS), 3).version
    assert build_table(MEMBERS, 3).fingerprint == build_table(MEMBERS, 4).fingerprint


def test_config_changes_fingerprint():
    assert (
        build_table(MEMBERS, 0).fingerprint
        != build_table(MEMBERS, 0, PlacementConfig(backups=2)).fingerprint
    )


@pytest.mark.parametrize("epoch", [-1, MAX_EPOCH + 1, 1.0, True])
def test_bad_epoch(epoch):
    with pytest.raises(ValueError):
        build_table(MEMBERS, epoch)


def _tampered(mutate):
    data = build_table(MEMBERS, 5).to_dict()
    mutate(data)
    return data


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {},
        _tampered(lambda d: d.pop("replicas")),
        _tampered(lambda d: d["replicas"][0].reverse()),  # content changed: fingerprint
        _tampered(lambda d: d.__setitem__("version", d["version"] + 1)),
        _tampered(lambda d: d["replicas"][0].__setitem__(0, 99)),  # index out of range
        _tampered(lambda d: d["replicas"][0].__setitem__(1, d["replicas"][0][0])),  # duplicate
        _tampered(lambda d: d["replicas"][0].__setitem__(0, "x")),
        _tampered(lambda d: d["replicas"].pop()),  # wrong partition count
        _tampered(lambda d: d["replicas"][3].pop()),  # too few replicas
        _tampered(lambda d: d["members"].reverse()),  # not canonical
        _tampered(lambda d: d.__setitem__("members", [])),
        _tampered(lambda d: d.__setitem__("members", "abc")),
        _tampered(lambda d: d.__setitem__("backups", 7)),
        _tampered(lambda d: d.__setitem__("partition_count", "271")),
        _tampered(lambda d: d.__setitem__("version", -1)),
    ],
)
def test_from_dict_rejects_malformed(data):
    with pytest.raises(ValueError):
        PartitionTable.from_dict(data)


def test_table_is_a_frozen_value():
    table = build_table(MEMBERS, 1)
    with pytest.raises(AttributeError):
        table.version = 2  # type: ignore[misc]
    assert table == build_table(MEMBERS, 1)
    assert hash(table) == hash(build_table(MEMBERS, 1))
