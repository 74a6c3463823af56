"""Per-partition replication: versions, merge rules, backup streams."""

from replication.hlc import HybridClock, Version
from replication.lww import newer

__all__ = ["HybridClock", "Version", "newer"]
