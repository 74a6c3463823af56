"""kill -9 in the middle of fsync=always appends: every acknowledged record survives."""

from __future__ import annotations

import time
from pathlib import Path

from persistence import Config, Log
from tests.persistence.kill9 import kill_9_rounds

CHILD = r"""
import random, sys
from persistence import Config, FsyncPolicy, Log, Op, Record
log = Log.open(Config(sys.argv[1], fsync=FsyncPolicy.ALWAYS, segment_bytes=64 * 1024))
states, _ = log.recover(0)
rng = random.Random(int(sys.argv[2]))
seq = {p: (states[p].seq if p in states else 0) for p in range(4)}
print("ready", flush=True)
while True:
    acked = []
    for _ in range(rng.randint(1, 4)):  # a group of batches shares one fsync
        p = rng.randrange(4)
        batch = []
        for _ in range(rng.randint(1, 64)):
            seq[p] += 1
            value = b"v" * rng.randint(0, 300)
            batch.append(Record(seq[p], Op.PUT, "m", b"k%d" % seq[p], value, seq[p], 1))
        tok = log.append(p, batch)
        acked.append((p, seq[p], tok))
    durable = log.sync()
    sys.stdout.write("".join(f"{p} {s}\n" for p, s, t in acked if t <= durable))
    sys.stdout.flush()
"""


def test_kill_9_loses_no_acknowledged_record(tmp_path: Path) -> None:
    data = tmp_path / "data"
    acked: dict[int, int] = {}
    started = time.monotonic()
    for round_, acked in kill_9_rounds(CHILD, data, 20, 20261127, 0.25):
        with Log.open(Config(data)) as log:
            states, report = log.recover(0)
        for p, s in acked.items():
            keys = states[p].maps["m"]
            # every acknowledged record, and every one before it in its partition
            assert all(b"k%d" % i in keys for i in range(1, s + 1)), (round_, p, s)
            assert states[p].seq >= s
        assert report.problems == {} or all(
            r.frames_dropped <= 1 and not r.quarantined for r in report.partitions.values()
        )
    assert sum(acked.values()) > 0
    assert time.monotonic() - started < 30
