"""A history of client operations, as the checkers read it and as it is kept on disk.

Each operation is one record once it has completed: who ran it (the workload thread),
what (put, get, incr), on which map and key, the value written or read (for incr: the
delta, and the counter's new value when acknowledged), when it was invoked and when it
completed (seconds since the run started, monotonic), and its outcome:

- ok: the member acknowledged it;
- fail: it certainly did not take effect (a read that failed; a write refused before it
  was sent, or with a status that means nothing was applied);
- unknown: a write whose fate the client cannot know (a timeout, a lost connection, a
  primary that applied it and then could not confirm its sync backup). The checkers
  allow such a write to have taken effect or not.

The file is JSONL, one operation a line in completion order (Jepsen's histories, with
invocation and completion in one record since every operation here completes: each has
a deadline).
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

OK = "ok"
FAIL = "fail"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Op:
    id: int
    thread: int
    kind: str  # put | get | incr
    map: str
    key: str
    value: Any  # put: written; get: read (None: absent); incr: the delta
    invoke: float
    complete: float
    outcome: str  # ok | fail | unknown
    result: Any = None  # incr: the counter's value after it, when ok
    error: str = ""

    @property
    def latency(self) -> float:
        return self.complete - self.invoke

    @property
    def write(self) -> bool:
        return self.kind != "get"


class History:
    """Operations as they complete, kept in memory and appended to a JSONL file."""

    def __init__(self, path: Path | None = None) -> None:
        self.ops: list[Op] = []
        self._lock = threading.Lock()
        self._next = 0
        self._file: IO[str] | None = open(path, "w") if path else None  # noqa: SIM115

    def next_id(self) -> int:
        with self._lock:
            self._next += 1
            return self._next

    def add(self, op: Op) -> None:
        with self._lock:
            self.ops.append(op)
            if self._file is not None:
                self._file.write(json.dumps(asdict(op), default=repr) + "\n")

    def counts(self) -> dict[str, int]:
        """Outcomes so far: {"ok": n, "fail": n, "unknown": n}."""
        with self._lock:
            ops = list(self.ops)
        out = {OK: 0, FAIL: 0, UNKNOWN: 0}
        for op in ops:
            out[op.outcome] += 1
        return out

    def snapshot(self) -> list[Op]:
        with self._lock:
            return list(self.ops)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def load(path: Path) -> list[Op]:
    """The operations of a history file (to check a run again, or to read it by hand)."""
    with open(path) as fh:
        return [Op(**json.loads(line)) for line in fh if line.strip()]
