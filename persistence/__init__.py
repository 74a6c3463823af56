"""Durable partitions: append-only log segments, snapshots and recovery."""
