"""kill -9 of a writer at random moments, for the crash tests of both layouts.

A child process (`python -c CODE DATA ROUND`) recovers DATA, prints "ready", then
appends forever, printing "partition seq" for every record it saw acknowledged. Each
round starts one, kills it with SIGKILL at a random moment and hands the test the
highest acknowledged seq per partition so far, to be found again by recovery.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).parents[2]


def kill_9_rounds(
    code: str, data: Path, rounds: int, seed: int, most_s: float
) -> Iterator[tuple[int, dict[int, int]]]:
    """(round, acknowledged seq per partition so far) after each kill; the kill comes
    0 to `most_s` seconds after the child is ready (a random moment, not a wait)."""
    rng = random.Random(seed)
    acked: dict[int, int] = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for round_ in range(rounds):
        child = subprocess.Popen(
            [sys.executable, "-c", code, str(data), str(round_)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n", child.stderr.read()  # type: ignore[union-attr]
        time.sleep(rng.uniform(0.0, most_s))
        os.kill(child.pid, signal.SIGKILL)
        out, _ = child.communicate(timeout=10)
        assert child.returncode == -signal.SIGKILL
        for line in out.decode().splitlines():
            if line.count(" ") == 1 and line.endswith(tuple("0123456789")):
                p, s = map(int, line.split())
                acked[p] = max(acked.get(p, 0), s)
        yield round_, acked
