"""Per-partition replication: versions, merge rules, backup streams."""

from replication.hlc import HybridClock, Version, newer

__all__ = ["HybridClock", "Version", "newer"]
