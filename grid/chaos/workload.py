"""Client threads that load the cluster through the SDK and record every operation.

Each thread owns its keys and runs a random mix, with a short pause between ops:

- put (50%): a new key of its own, written once (`t3-17` = thread 3's 17th put) with a
  value that names it. A set of write-once keys makes a lost write visible for good: no
  later write can hide it, so every key acknowledged must be there at the end, and at
  every audit after a failover (checkers.py).
- get (30%): one of its own keys written before (a random one: old keys matter as much
  as new ones after a failover). Outside the fault windows it must find an
  acknowledged write.
- incr (20%): one of a few counters shared by all threads, by 1. The final value must lie
  between the increments acknowledged and those plus the ones whose fate is unknown.

A thread stops at `max_ops`, at the deadline, or when told: bounded in count and time.
The threads share one grid.Client (smart routing, every member a seed), whose deadline
per call is `op_timeout`: a write that runs out of it is recorded as unknown. Where
members advertise addresses the clients cannot reach (netns), each thread has a plain
client of its own (`smart_routing=False`) talking to member `t mod N`, which forwards:
so during a split every side takes load.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence

import grid
from grid.chaos.history import FAIL, OK, UNKNOWN, History, Op
from grid.client.connection import StreamLost
from grid.errors import CodecError, InvalidArgument, TooLarge

MAP = "chaos"
COUNTERS = 4
REFUSED = (InvalidArgument, TooLarge, CodecError)
"""Errors that say the member applied nothing: a write failing so is `fail`, not `unknown`."""


def counter_key(i: int) -> str:
    return f"counter-{i}"


class Workload:
    def __init__(
        self,
        seeds: Sequence[str],
        history: History,
        *,
        threads: int = 4,
        max_ops: int = 20_000,
        max_seconds: float = 60.0,
        pause_s: float = 0.005,
        op_timeout: float = 5.0,
        seed: int = 0,
        clock_zero: float | None = None,
        smart_routing: bool = True,
    ) -> None:
        self.seeds = list(seeds)
        self.smart_routing = smart_routing
        self.history = history
        self.threads = threads
        self.max_ops = max_ops  # per thread
        self.max_seconds = max_seconds
        self.pause_s = pause_s
        self.op_timeout = op_timeout
        self.seed = seed
        self.zero = time.monotonic() if clock_zero is None else clock_zero
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._clients: list[grid.Client] = []
        self.errors: list[str] = []  # a thread that died (a harness bug, not the cluster's)

    def now(self) -> float:
        return time.monotonic() - self.zero

    def start(self) -> None:
        if self.smart_routing:
            shared = grid.Client(self.seeds, timeout=self.op_timeout)
            self._clients = [shared]
        else:  # a plain client talks to its first seed only: one each, members in turn
            n = len(self.seeds)
            self._clients = [
                grid.Client(
                    [self.seeds[(t + j) % n] for j in range(n)],
                    timeout=self.op_timeout,
                    smart_routing=False,
                )
                for t in range(self.threads)
            ]
        started = time.monotonic()
        for t in range(self.threads):
            client = self._clients[t % len(self._clients)]
            th = threading.Thread(
                target=self._guarded,
                args=(t, client, started),
                name=f"chaos-workload-{t}",
                daemon=True,
            )
            th.start()
            self._threads.append(th)

    def stop(self) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(self.op_timeout * 3 + 10)
        for client in self._clients:
            client.close()
        self._clients = []

    def _guarded(self, t: int, client: grid.Client, started: float) -> None:
        try:
            self._thread(t, client, started)
        except Exception as e:  # reported by the run: the history is then incomplete
            self.errors.append(f"thread {t}: {e!r}")

    def _thread(self, t: int, client: grid.Client, started: float) -> None:
        m = client.map(MAP)
        rng = random.Random(self.seed * 1000 + t)
        written: list[str] = []
        n_put = 0
        for _ in range(self.max_ops):
            if self._stop.is_set() or time.monotonic() - started > self.max_seconds:
                return
            r = rng.random()
            if r < 0.5 or not written:
                n_put += 1
                key = f"t{t}-{n_put}"
                value = f"v{t}-{n_put}"
                self._record(t, "put", key, value, lambda k=key, v=value: m.put(k, v))
                written.append(key)
            elif r < 0.8:
                key = rng.choice(written)
                self._record(t, "get", key, None, lambda k=key: m.get(k))
            else:
                key = counter_key(rng.randrange(COUNTERS))
                self._record(t, "incr", key, 1, lambda k=key: m.incr(k, 1))
            time.sleep(self.pause_s)

    def _record(self, t: int, kind: str, key: str, value: object, call: object) -> None:
        op_id = self.history.next_id()
        invoke = self.now()
        result = None
        error = ""
        try:
            got = call()  # type: ignore[operator]
        except grid.GridError as e:
            error = f"{type(e).__name__}: {str(e)[:200]}"
            if kind == "get" or isinstance(e, REFUSED):
                outcome = FAIL
            elif isinstance(e, StreamLost) and not e.sent:
                outcome = FAIL  # never left the client
            else:
                outcome = UNKNOWN
        else:
            outcome = OK
            if kind == "get":
                value = got
            elif kind == "incr":
                result = got
        self.history.add(
            Op(op_id, t, kind, MAP, key, value, invoke, self.now(), outcome, result, error)
        )
