"""Graceful leave: the leaving member asks the coordinator to move everything off it.

The conversation (Peer.Leave), from the leaving member's side (`Departure`):

1. It counts itself as leaving (so it no longer coordinates) and asks the
   smallest live name that stays, its coordinator.
2. The coordinator (`Rebalancer.leave_requested`) remembers the request and
   answers at once when it cannot help: nobody stays (done: there is no one
   to move anything to), it is leaving itself ("... is leaving too"), or
   another member coordinates (a redirect naming it). Otherwise it runs
   rounds, which release the leaver (release.py) and move the rest by waves,
   until the table it published names the leaver nowhere, then answers done
   (`Rebalancer.leave_progress`; the runtime bounds the wait).
3. The leaving member follows a redirect, takes a member that does not answer
   or is leaving too as leaving and asks the next, and gives up after
   `MAX_LEAVE_REDIRECTS` questions; then it leaves the gossip and exits.
4. Once done, it installs the coordinator's table (the answer says which) and
   hands back the copies it still holds before it exits (`Departed`).

Every Leave a member receives is remembered, so when a whole cluster is told
to stop at once the members learn from each other's requests that nobody
stays, and answer at once instead of moving partitions to members about to go.
It is forgotten once the leaver is out of sight (it left; a restart with the
same name is a member like any other), or `LEAVE_GRACE_S` after its leave was
answered done if it is still in sight (it restarted quicker than the failure
detector): rebalancer.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import NamedTuple

from partitioning.table import PartitionTable

MAX_LEAVE_REDIRECTS = 6
"""Questions a leaving member asks before it leaves without a hand-off. Each redirect
names the coordinator of a member's view; views settle within a few gossip rounds,
so more than a couple of redirects means no member is answering for the cluster."""

NOBODY_STAYS = "no member stays to take the partitions"
LEAVING_TOO = "is leaving too"
TIMED_OUT = "timed out before every partition was moved"


class LeaveAnswer(NamedTuple):
    """The coordinator's answer to a Leave: `coordinator` names whom to ask instead;
    `version`, once done, the table that names the leaver nowhere (see `Departed`)."""

    done: bool
    error: str = ""
    coordinator: str = ""
    version: int = 0


def leaving_too(me: str) -> LeaveAnswer:
    return LeaveAnswer(False, f"{me} {LEAVING_TOO}")


def holds_anything(table: PartitionTable, member: str) -> bool:
    held = table.partitions_of(member)
    return bool(held.primary or held.backup)


class AskLeave(NamedTuple):
    """Send Leave to `member` at `address`."""

    member: str
    address: str


class DepartureEnd(Enum):
    NOBODY_STAYS = "nobody stays"
    """Every live member is leaving: nothing to hand off to (done)."""
    HANDED_OFF = "handed off"
    """The coordinator moved everything off this member (done)."""
    REFUSED = "refused"
    """The coordinator could not finish (timed out, or named no one new to ask)."""
    NO_COORDINATOR = "no coordinator"
    """Every question went unanswered or was redirected."""


class Departed(NamedTuple):
    """The end of a departure; `done` when the coordinator holds nothing on this member.

    `version` (HANDED_OFF): the coordinator's table that names this member nowhere.
    Before it exits, the member installs it (fetched from the coordinator if it does
    not hold it) and hands back every copy it still holds (`drained`): after a split
    heals, the coordinator's lineage may have dropped this member long ago, so no
    wave moved anything off it, and its copy may be the only one of the writes its
    side took meanwhile. The wait is bounded by what is left of the leave timeout.
    """

    done: bool
    end: DepartureEnd
    coordinator: str = ""
    error: str = ""
    asked: tuple[str, ...] = ()
    version: int = 0


class Departure:
    """This member's own graceful leave: whom to ask next, and what an answer means.

    `leaving` is the rebalancer's own set, shared on purpose: this member and the
    members that do not answer count as leaving for coordination too.
    """

    def __init__(self, me: str, live: Mapping[str, str], leaving: set[str]) -> None:
        self.live = dict(live)
        self.leaving = leaving
        self.leaving.add(me)
        self.asked: list[str] = []
        self.target: str | None = None

    def next(self) -> AskLeave | Departed:
        """The first question, and the next one after a redirect."""
        if len(self.asked) >= MAX_LEAVE_REDIRECTS:
            return Departed(False, DepartureEnd.NO_COORDINATOR, asked=tuple(self.asked))
        stays = [m for m in self.live if m not in self.leaving]
        if not stays:
            return Departed(True, DepartureEnd.NOBODY_STAYS)
        target = self.target if self.target in stays else min(stays)
        self.target = target
        self.asked.append(target)
        return AskLeave(target, self.live[target])

    def no_answer(self) -> AskLeave | Departed:
        """The member asked did not answer: take it as leaving, ask the next."""
        assert self.target is not None
        self.leaving.add(self.target)
        self.target = None
        return self.next()

    def answered(self, answer: LeaveAnswer) -> AskLeave | Departed:
        assert self.target is not None
        if answer.done:
            return Departed(
                True, DepartureEnd.HANDED_OFF, self.target, answer.error, version=answer.version
            )
        if not answer.coordinator or answer.coordinator in self.asked:
            if answer.error.endswith(LEAVING_TOO):
                return self.no_answer()
            return Departed(False, DepartureEnd.REFUSED, self.target, answer.error)
        self.target = answer.coordinator
        return self.next()
