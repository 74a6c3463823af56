"""Rebalancers of a whole cluster run in memory: the tests' runtime.

It does what grid/member/placement/coordinator.py does with RPCs, at once and without failures
unless told: a publish installs the table on every member it is sent to (if
newer, as Routing does), fills and hand-offs succeed except for the partitions
in `fail_fills` / `fail_handoffs`. Membership is perfect: every member sees
exactly the members started and not crashed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from partitioning.config import PlacementConfig
from partitioning.decisions import (
    AskTables,
    Decision,
    Fill,
    Filled,
    HandedOff,
    Handoff,
    Note,
    Publish,
    Published,
    Report,
    Resend,
    TablesAsked,
)
from partitioning.leave import AskLeave, Departed, LeaveAnswer
from partitioning.rebalancer import Rebalancer, View
from partitioning.succession import newest_table
from partitioning.table import PartitionTable


def address(name: str) -> str:
    return f"{name}.local:5701"


@dataclass
class Cluster:
    placement: PlacementConfig
    wave_size: int = 2
    narrowest: int | None = None
    restart_wait_s: float = 30.0
    quorum: int = 0
    now: float = 100.0
    members: dict[str, Rebalancer] = field(default_factory=dict)
    published: list[PartitionTable] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)  # every member's, in order
    fail_fills: set[int] = field(default_factory=set)
    fail_handoffs: set[int] = field(default_factory=set)

    def start(self, name: str) -> Rebalancer:
        narrowest = self.placement.backups if self.narrowest is None else self.narrowest
        core = Rebalancer(
            name,
            self.placement,
            wave_size=self.wave_size,
            narrowest=narrowest,
            restart_wait_s=self.restart_wait_s,
            started=self.now,
            quorum=self.quorum,
        )
        self.members[name] = core
        return core

    def crash(self, name: str) -> None:
        del self.members[name]

    def view(self) -> View:
        return View({m: address(m) for m in sorted(self.members)}, self.now)

    def coordinator(self) -> str:
        any_member = next(iter(self.members.values()))
        return any_member.coordinator(self.view().live)

    # ---- rounds ---------------------------------------------------------------------------------
    def round(self, name: str) -> list[Decision]:
        """One round on `name`, carried out to its end; the decisions, in order."""
        core = self.members[name]
        decisions: list[Decision] = []
        decision = core.begin(self.view())
        while decision is not None:
            decisions.append(decision)
            self.decisions.append(decision)
            report = self.carry_out(core, decision)
            self.now += 0.01
            decision = core.step(report, self.view())
        return decisions

    def settle(self, rounds: int = 10) -> int:
        """Rounds on every member until a whole pass publishes nothing; the passes run."""
        for n in range(1, rounds + 1):
            before = len(self.published)
            for name in sorted(self.members):
                if name in self.members:
                    self.round(name)
            if len(self.published) == before:
                return n
        raise AssertionError(f"not settled after {rounds} passes")

    def carry_out(self, core: Rebalancer, decision: Decision) -> Report:
        match decision:
            case Note():
                self.notes.append(decision)
                return None
            case AskTables(addresses):
                versions = {m: self.members[m].version for m in addresses if m != core.me}
                adoption = newest_table(versions, core.version)
                if adoption.member is not None:
                    table = self.members[adoption.member].table
                    assert table is not None
                    install(core, table)
                return TablesAsked(adoption.everyone_answered)
            case Publish(table, addresses, to):
                install(core, table)
                self.published.append(table)
                self.send(core, to)
                return Published({m: addresses.get(m, "") for m in table.members})
            case Resend(_, to):
                self.send(core, to)
                return None
            case Fill(_, orders):
                asked = {p for o in orders for p in o.partitions}
                return Filled(frozenset(asked & self.fail_fills))
            case Handoff(_, orders, _):
                asked = {p for o in orders for p in o.partitions}
                return HandedOff(frozenset(asked & self.fail_handoffs))
        raise AssertionError(f"unknown decision {decision!r}")

    def send(self, core: Rebalancer, to: tuple[str, ...]) -> None:
        assert core.table is not None
        for name in to:
            other = self.members.get(name)
            if other is not None:
                install(other, core.table)
                core.answered(name, other.version)

    # ---- graceful leave -------------------------------------------------------------------------
    def leave(self, name: str) -> Departed:
        """`name` leaves gracefully: asks, the coordinator runs rounds until it is free."""
        departure = self.members[name].depart(self.view().live)
        step = departure.next()
        while isinstance(step, AskLeave):
            asked = self.members.get(step.member)
            if asked is None:
                step = departure.no_answer()
                continue
            answer = asked.leave_requested(name, self.view().live)
            for _ in range(10):
                if answer is not None:
                    break
                self.round(step.member)
                answer = asked.leave_progress(name)
            step = departure.answered(answer or LeaveAnswer(False, "timed out"))
        self.crash(name)
        live = self.view().live
        for core in self.members.values():  # the gossip spreads its leave to everyone
            core.observe(live)
        return step


def install(core: Rebalancer, table: PartitionTable) -> None:
    """What Routing.install does with a table: adopt it if newer (or the first)."""
    if core.table is None or table.newer_than(core.table):
        core.installed(table)
