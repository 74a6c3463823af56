"""The memory estimate that max_memory is enforced against matches real process growth.

Runs in a fresh interpreter so nothing else allocates meanwhile, fills a store
with 200k entries and compares the store's accounted bytes with the growth of
the process's resident set. The bound is 20% either way.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = r"""
import gc, json, os, sys
from random import Random
from grid.config import Config
from grid.store import Store

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

value_size, ttl = int(sys.argv[1]), int(sys.argv[2])
store = Store(Config(), member_id=1, clock=lambda: 1_800_000_000_000, rng=Random(1))
m = store.map("m")
rand = Random(2).randbytes
gc.collect()
before = rss()
for i in range(200_000):
    store.put(m, b"user:%08d" % i, rand(value_size), 1_800_000_000_000, ttl_ms=ttl)
gc.collect()
print(json.dumps({"estimate": store.used, "growth": rss() - before}))
"""


@pytest.mark.parametrize(("value_size", "ttl"), [(10, 0), (100, 0), (100, 60_000), (1000, 0)])
def test_estimate_within_20_percent_of_rss_growth(value_size: int, ttl: int) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(value_size), str(ttl)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout)
    ratio = result["estimate"] / result["growth"]
    assert 0.8 <= ratio <= 1.2, f"estimate/growth = {ratio:.3f} ({result})"
