"""Placement settings shared by every member and client of a cluster.

Every field changes where partitions live, so all members must run with equal
values; the table fingerprint (see `table.py`) covers the layout they produce,
which is how a mismatch shows up instead of passing silently.
"""

from __future__ import annotations

from dataclasses import dataclass

from partitioning.keys import DEFAULT_PARTITION_COUNT

MAX_BACKUPS = 6
"""Hazelcast's limit. Each backup costs a full copy of the data and a stream of
mutations from the primary; beyond six the cost buys no availability that a
real deployment needs (seven copies survive six simultaneous failures)."""

DEFAULT_BACKUPS = 1
"""One backup survives any single member crash at 2x memory, the usual
operating point of Hazelcast and Ignite (DESIGN.md: backups 1, async)."""

DEFAULT_VIRTUAL_NODES = 160
"""uhashring's own default. More points per member shrink the spread of arc
lengths (relative std ~ 1/sqrt(vnodes)), but after the bounded-load pass
balance is set by the caps, and movement measured no consistently better at
640 (docs/partitioning.md) for 4x the ring build time (14 -> 54 ms at N=50),
which grows with the cluster (members x vnodes md5 points). Fewer (40) made
the worst-case movement at N=50 worse."""

DEFAULT_LOAD_FACTOR = 1.15
"""Bounded-load slack: no member holds more than
max(ceil(share), floor(load_factor * share)) replicas, share being its
weighted fair share. 1.15 is the balance target itself; less slack forces
more partitions off their ring-preferred member and so more movement on
every membership change (measured: 1.05 and 1.10 move more at N = 10 and 50,
docs/partitioning.md)."""


@dataclass(frozen=True)
class PlacementConfig:
    """Inputs to placement besides the member set; equal on all members."""

    partition_count: int = DEFAULT_PARTITION_COUNT
    backups: int = DEFAULT_BACKUPS
    virtual_nodes: int = DEFAULT_VIRTUAL_NODES
    load_factor: float = DEFAULT_LOAD_FACTOR

    def __post_init__(self) -> None:
        if self.partition_count < 1:
            raise ValueError(f"partition_count must be >= 1, got {self.partition_count}")
        if not 0 <= self.backups <= MAX_BACKUPS:
            raise ValueError(f"backups must be in [0, {MAX_BACKUPS}], got {self.backups}")
        if self.virtual_nodes < 1:
            raise ValueError(f"virtual_nodes must be >= 1, got {self.virtual_nodes}")
        if not self.load_factor >= 1.0:
            raise ValueError(f"load_factor must be >= 1.0, got {self.load_factor}")

    @property
    def replica_count(self) -> int:
        """Replicas wanted per partition, before capping by live members."""
        return 1 + self.backups
