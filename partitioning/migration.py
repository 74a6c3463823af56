"""Diff two partition tables into an ordered migration plan.

Per partition, with old list O and new list N (primary first):

* PROMOTE  member already holds a copy and becomes primary at once, no data
  moves. Used when N[0] held a backup in O, and also as an *interim* step when
  O's primary is gone from the new member set and N[0] has no copy: the first
  surviving old backup is promoted so the partition keeps serving while N[0]
  is filled (then HANDOFF moves the role on). This is the design's "a crashed
  primary's first live backup is promoted".
* FILL     member had no copy and must receive snapshot + mutation tail
  (new backups, and new primaries without a copy, which catch up as backups
  first, like Hazelcast: the old owner serves until the new one is current).
* HANDOFF  a member filled by this plan becomes primary once caught up.
* DROP     member held a copy and is not in N; it discards it after the
  partition's fills and hand-offs are done. Drops for members that left the
  cluster are kept: a gracefully leaving member still holds data to discard,
  and the runtime ignores drops addressed to the dead.

Steps are ordered in four phases: all PROMOTEs (cheap, and they restore
availability first; graceful leave hands off primaries first), then FILLs,
then HANDOFFs, then DROPs. Within FILL, steps are interleaved round-robin by
their first source so the snapshot streams spread over senders instead of
queueing on one member. `sources` names the members to copy from or take over
from, best first; the runtime uses the first one alive.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from enum import StrEnum
from itertools import zip_longest

from partitioning.table import PartitionTable


class StepKind(StrEnum):
    PROMOTE = "promote"
    FILL = "fill"
    HANDOFF = "handoff"
    DROP = "drop"


_PHASE = {StepKind.PROMOTE: 0, StepKind.FILL: 1, StepKind.HANDOFF: 2, StepKind.DROP: 3}


@dataclass(frozen=True)
class MigrationStep:
    kind: StepKind
    partition: int
    member: str
    sources: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind.value,
            "partition": self.partition,
            "member": self.member,
            "sources": list(self.sources),
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> MigrationStep:
        if not isinstance(data, dict):
            raise ValueError(f"migration step must be a dict, got {type(data).__name__}")
        try:
            kind = StepKind(data["kind"])
            partition, member, sources = data["partition"], data["member"], data["sources"]
        except (KeyError, ValueError, TypeError) as error:
            raise ValueError(f"bad migration step {data!r}: {error}") from None
        if type(partition) is not int or not isinstance(member, str):
            raise ValueError(f"bad migration step {data!r}")
        if not isinstance(sources, list | tuple) or not all(isinstance(s, str) for s in sources):
            raise ValueError(f"bad migration step sources {sources!r}")
        return cls(kind, partition, member, tuple(sources))


@dataclass(frozen=True)
class MigrationPlan:
    """Everything that must happen to go from table `from_version` to `to_version`."""

    from_version: int
    to_version: int
    steps: tuple[MigrationStep, ...]

    def of_kind(self, kind: StepKind) -> tuple[MigrationStep, ...]:
        return tuple(s for s in self.steps if s.kind is kind)

    def for_partition(self, partition: int) -> tuple[MigrationStep, ...]:
        """The partition's steps in the order they must run."""
        return tuple(s for s in self.steps if s.partition == partition)

    def to_dict(self) -> dict[str, object]:
        return {
            "from_version": self.from_version,
            "to_version": self.to_version,
            "steps": [s.to_dict() for s in self.steps],
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> MigrationPlan:
        if not isinstance(data, dict):
            raise ValueError("migration plan must be a dict")
        steps = data.get("steps")
        if not isinstance(steps, list | tuple):
            raise ValueError("migration plan steps must be a list")
        frm, to = data.get("from_version"), data.get("to_version")
        if type(frm) is not int or type(to) is not int:
            raise ValueError("migration plan versions must be ints")
        return cls(frm, to, tuple(MigrationStep.from_dict(s) for s in steps))


@dataclass(frozen=True)
class Ownership:
    """Who serves a partition and who holds a copy: what a plan changes."""

    primary: str
    holders: frozenset[str]


def ownership(table: PartitionTable) -> tuple[Ownership, ...]:
    return tuple(Ownership(r[0], frozenset(r)) for r in table.replica_lists)


def _partition_steps(
    partition: int, old: tuple[str, ...], new: tuple[str, ...], live: frozenset[str]
) -> list[MigrationStep]:
    steps: list[MigrationStep] = []
    serving = old[0]
    holders = list(old)
    if new[0] != old[0]:
        if new[0] in old:
            steps.append(MigrationStep(StepKind.PROMOTE, partition, new[0], (old[0],)))
            serving = new[0]
        else:
            if old[0] not in live:
                acting = next((m for m in old[1:] if m in live), None)
                if acting is not None:
                    steps.append(MigrationStep(StepKind.PROMOTE, partition, acting, (old[0],)))
                    serving = acting
            sources = (serving, *(m for m in holders if m != serving))
            steps.append(MigrationStep(StepKind.FILL, partition, new[0], sources))
            steps.append(MigrationStep(StepKind.HANDOFF, partition, new[0], (serving,)))
    sources = (serving, *(m for m in holders if m != serving))
    for member in new[1:]:
        if member not in old:
            steps.append(MigrationStep(StepKind.FILL, partition, member, sources))
    for member in old:
        if member not in new:
            steps.append(MigrationStep(StepKind.DROP, partition, member))
    return steps


def _round_robin_by_source(steps: list[MigrationStep]) -> list[MigrationStep]:
    queues: dict[str, list[MigrationStep]] = defaultdict(list)
    for step in steps:
        queues[step.sources[0]].append(step)
    rounds = zip_longest(*(queues[m] for m in sorted(queues)))
    return [step for batch in rounds for step in batch if step is not None]


def plan_migration(old: PartitionTable, new: PartitionTable) -> MigrationPlan:
    """The ordered steps that turn old's ownership into new's (see module docstring)."""
    if old.partition_count != new.partition_count:
        raise ValueError(
            f"partition count differs ({old.partition_count} vs {new.partition_count}); "
            "it is fixed for the life of a cluster"
        )
    live = frozenset(new.members)
    all_steps: list[MigrationStep] = []
    for p in range(new.partition_count):
        all_steps.extend(_partition_steps(p, old.replicas(p), new.replicas(p), live))
    phases: list[list[MigrationStep]] = [[], [], [], []]
    for step in all_steps:  # stable: partition order inside each phase
        phases[_PHASE[step.kind]].append(step)
    phases[1] = _round_robin_by_source(phases[1])
    ordered = tuple(step for phase in phases for step in phase)
    return MigrationPlan(old.version, new.version, ordered)


def apply_plan(old: PartitionTable, plan: MigrationPlan) -> tuple[Ownership, ...]:
    """Replay a plan on old's ownership, checking each step is legal where it runs.

    A reference for the runtime and the oracle of the property tests.
    """
    if plan.from_version != old.version:
        raise ValueError(f"plan starts at version {plan.from_version}, table is {old.version}")
    primary = [r[0] for r in old.replica_lists]
    holders = [set(r) for r in old.replica_lists]
    for step in plan.steps:
        p, m = step.partition, step.member
        if step.kind is StepKind.PROMOTE or step.kind is StepKind.HANDOFF:
            if m not in holders[p]:
                raise ValueError(f"{step}: {m} has no copy to serve from")
            primary[p] = m
        elif step.kind is StepKind.FILL:
            if m in holders[p]:
                raise ValueError(f"{step}: {m} already holds a copy")
            if not holders[p].intersection(step.sources):
                raise ValueError(f"{step}: no source holds a copy")
            holders[p].add(m)
        else:
            if m not in holders[p] or m == primary[p]:
                raise ValueError(f"{step}: cannot drop (not held, or still primary)")
            holders[p].discard(m)
    return tuple(Ownership(pr, frozenset(h)) for pr, h in zip(primary, holders, strict=True))
