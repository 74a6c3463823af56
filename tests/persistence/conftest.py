"""Shared helpers for the persistence tests: real files in tmp_path, small segments."""

from __future__ import annotations

from pathlib import Path

import pytest

from persistence import Config, Log, Op, Record


def put(seq: int, key: bytes, value: bytes, ts: int | None = None, **kw: int) -> Record:
    return Record(seq, Op.PUT, kw.pop("map_name", "m"), key, value, ts or seq, 1, **kw)


def state_of(log_dir: Path, now_ms: int = 0, **cfg: object):
    """Open, recover and close: the (states, report) a restarting member would see."""
    log = Log.open(Config(log_dir, **cfg))
    try:
        return log.recover(now_ms)
    finally:
        log.close()


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return Config(tmp_path / "data", segment_bytes=4096)
