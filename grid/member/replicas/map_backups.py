"""Per-map backups from the member's configuration (replication/map_backups.py decides)."""

from __future__ import annotations

from grid.config import Config
from replication.map_backups import MapBackups


def map_backups(config: Config) -> MapBackups:
    """The per-map backup counts every member must be configured alike with."""
    return MapBackups(config.backups, config.backups_by_map(), config.table_backups)
