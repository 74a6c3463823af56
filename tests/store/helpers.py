"""A store on a hand-driven clock, for tests that need time to pass without sleeping."""

from __future__ import annotations

from random import Random

from grid.config import Config
from grid.store import Store

T0 = 1_800_000_000_000  # an arbitrary wall-clock start, in ms


class Clock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


def make_store(clock: Clock | None = None, seed: int = 1, **options: object) -> Store:
    return Store(Config(**options), member_id=7, clock=clock or Clock(), rng=Random(seed))
