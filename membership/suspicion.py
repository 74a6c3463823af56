"""Lifeguard's dynamic suspicion timeout (memberlist suspicion.go).

A suspicion starts with a long timeout (max) and shrinks towards the normal
one (min) as independent members confirm it, on a log scale:

    timeout(n) = max - log(n + 1) / log(k + 1) * (max - min),  never below min

where n is the number of confirmations so far and k the number expected.  A
crash is confirmed by many probers, so it is declared quickly; a member that
only one (possibly sick) prober suspects gets the long timeout to refute.
"""

from __future__ import annotations

import math


def remaining_time(n: int, k: int, elapsed: float, min_timeout: float, max_timeout: float) -> float:
    """Time left before the suspicion fires; may be negative (fire now).

    memberlist rounds the timeout down to whole milliseconds; so do we, so
    the numbers in docs and tests match memberlist's."""
    if k < 1:
        timeout = min_timeout
    else:
        frac = math.log(n + 1.0) / math.log(k + 1.0)
        raw = max_timeout - frac * (max_timeout - min_timeout)
        timeout = max(min_timeout, math.floor(1000.0 * raw) / 1000.0)
    return timeout - elapsed


class Suspicion:
    """One suspicion of one member, by this member.  The originator (`source`)
    does not count as a confirmation: our own suspect message may be gossiped
    back to us."""

    __slots__ = ("confirmations", "deadline", "incarnation", "k", "max", "min", "n", "start")

    def __init__(
        self,
        source: str,
        incarnation: int,
        k: int,
        min_timeout: float,
        max_timeout: float,
        now: float,
    ) -> None:
        self.k = k
        self.min = min_timeout
        self.max = max_timeout
        self.n = 0
        self.start = now
        self.incarnation = incarnation
        self.confirmations = {source}
        self.deadline = now + (max_timeout if k >= 1 else min_timeout)

    def confirm(self, source: str, now: float) -> bool:
        """Count an independent confirmation; True if it was new information
        (then the deadline moved earlier and the suspect should be re-gossiped)."""
        if self.n >= self.k or source in self.confirmations:
            return False
        self.confirmations.add(source)
        self.n += 1
        left = remaining_time(self.n, self.k, now - self.start, self.min, self.max)
        self.deadline = now + left
        return True
