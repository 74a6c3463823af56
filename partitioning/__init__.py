"""Where keys live and how partitions move: key -> partition, partition -> replicas,
table versions, and the rebalancer (the coordinator's decisions).

Pure functions, values and state machines, no IO. Members and smart clients must
compute the same placement from the same inputs, so nothing here may depend on
local state; the rebalancer takes the time and what the member saw as inputs.
"""

from partitioning.config import (
    DEFAULT_BACKUPS,
    DEFAULT_LOAD_FACTOR,
    DEFAULT_VIRTUAL_NODES,
    MAX_BACKUPS,
    PlacementConfig,
)
from partitioning.decisions import (
    AskTables,
    Decision,
    Fill,
    Filled,
    FillOrder,
    HandedOff,
    Handoff,
    HandoffOrder,
    Note,
    Publish,
    Published,
    Report,
    Resend,
    TablesAsked,
)
from partitioning.keys import DEFAULT_PARTITION_COUNT, partition_of, routing_key
from partitioning.leave import AskLeave, Departed, Departure, DepartureEnd, LeaveAnswer
from partitioning.placement import place
from partitioning.rebalancer import Rebalancer, View
from partitioning.table import MemberPartitions, PartitionTable, build_table

__all__ = [
    "DEFAULT_BACKUPS",
    "DEFAULT_LOAD_FACTOR",
    "DEFAULT_PARTITION_COUNT",
    "DEFAULT_VIRTUAL_NODES",
    "MAX_BACKUPS",
    "AskLeave",
    "AskTables",
    "Decision",
    "Departed",
    "Departure",
    "DepartureEnd",
    "Fill",
    "FillOrder",
    "Filled",
    "HandedOff",
    "Handoff",
    "HandoffOrder",
    "LeaveAnswer",
    "MemberPartitions",
    "Note",
    "PartitionTable",
    "PlacementConfig",
    "Publish",
    "Published",
    "Rebalancer",
    "Report",
    "Resend",
    "TablesAsked",
    "View",
    "build_table",
    "partition_of",
    "place",
    "routing_key",
]
