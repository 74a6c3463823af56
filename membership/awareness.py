"""Lifeguard local health awareness (memberlist awareness.go).

A member that misses acks it should have got, does not get nacks from the
members it asked to help, or has to refute suspicions about itself is
probably the slow one (CPU starved, GC pause, lossy NIC).  It then stretches
its own probe interval and timeout so it stops accusing healthy members.
"""

from __future__ import annotations


class Awareness:
    """A health score in [0, max_multiplier - 1]; 0 is healthy."""

    __slots__ = ("enabled", "max", "score")

    def __init__(self, max_multiplier: int, enabled: bool = True) -> None:
        self.max = max_multiplier
        self.score = 0
        self.enabled = enabled

    def apply_delta(self, delta: int) -> None:
        if not self.enabled:
            return
        self.score = min(self.max - 1, max(0, self.score + delta))

    def scale(self, timeout: float) -> float:
        """timeout x (score + 1)."""
        return timeout * (self.score + 1)
