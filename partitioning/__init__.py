"""Where keys live: key -> partition, partition -> replicas, table versions.

Pure functions and values, no IO. Members and smart clients must compute the
same answers from the same inputs, so nothing here may depend on local state.
"""

from partitioning.config import (
    DEFAULT_BACKUPS,
    DEFAULT_LOAD_FACTOR,
    DEFAULT_VIRTUAL_NODES,
    MAX_BACKUPS,
    PlacementConfig,
)
from partitioning.keys import DEFAULT_PARTITION_COUNT, partition_of, routing_key
from partitioning.migration import (
    MigrationPlan,
    MigrationStep,
    Ownership,
    StepKind,
    apply_plan,
    ownership,
    plan_migration,
)
from partitioning.placement import place
from partitioning.table import MemberPartitions, PartitionTable, build_table

__all__ = [
    "DEFAULT_BACKUPS",
    "DEFAULT_LOAD_FACTOR",
    "DEFAULT_PARTITION_COUNT",
    "DEFAULT_VIRTUAL_NODES",
    "MAX_BACKUPS",
    "MemberPartitions",
    "MigrationPlan",
    "MigrationStep",
    "Ownership",
    "PartitionTable",
    "PlacementConfig",
    "StepKind",
    "apply_plan",
    "build_table",
    "ownership",
    "partition_of",
    "place",
    "plan_migration",
    "routing_key",
]
