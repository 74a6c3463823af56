"""The rebalancer: the coordinator's decisions about the partition table, with no IO.

Every member runs one; the one whose member coordinates (succession.py: the
smallest live name not leaving) acts. The runtime (grid/member/placement/coordinator.py) feeds
it what it learns and carries out what it decides:

* inputs outside a round: the table the member installed (`installed`), the
  saved table after a restart (`restarted`), members seen alive (`observe`,
  `seen`), the version a member answered to a publish (`answered`), leave
  requests (`leave_requested`, `leave_progress`, `depart`);
* a round: `begin(view)` returns the first decision, and every
  `step(report, view)` the next one, until None (decisions.py has the
  decisions and their reports). `view` is the live members with their
  addresses and the time, gathered by the runtime before each call.

A round (the runtime runs one on every membership event, on a leave request,
and every second):

1. No table yet: ask the live members for theirs and adopt the newest
   (`AskTables`). Then, if this member does not coordinate, the round ends.
   A coordinator that still has no table builds the first one from the live
   members, unless some member did not answer (it may hold one).
2. Members that missed a publish, or whose last answer is older than
   `TABLE_CHECK_S`, get the table again (`Resend`). A member that answered
   with a table of another lineage makes the coordinator republish above it
   (epochs.py); a member seen at another address than the
   one the table was sent with makes it republish, so clients learn it.
   A member (this one included: `View.unsettled`) that holds a hand-off no
   table has settled makes it publish a table of that hand-off's epoch: the
   coordinator that ordered it crashed before publishing it, and until then
   the hand-off's old primary serves nothing of the partition
   (ownership.py).
3. Failover (failover.py): members that are gone leave every list at once,
   and members that lack their copies (restarted without their data:
   ownership.py; they say so when they answer a publish, and a member asking
   for our table is sent it again at once so that it can) leave the lists
   that name them there; the result is published. A member named by the saved table of a
   restart is not gone while waited for (`restart_wait_s` from the start).
4. Release (release.py): the primaries of live leaving members are handed to
   their first staying backup, and leavers leave every backup list; published.
5. Waves (wave.py): the target is the placement of the live members that stay
   plus those waited for; partitions whose list differs move
   `wave_size` at a time: fill, hand off, publish. Before each wave the round
   stops if this member no longer coordinates, a member asked to leave, a
   member is gone or joined, a member answered with another lineage's table
   (our publishes are ignored), or a member's last answer is older than
   `TABLE_CHECK_S` (at most once per that), so the next round handles that first.

Tables are published only between steps, never while a hand-off is in
flight, so a table installed after a hand-off already shows it. Each
published table is one epoch above the installed one (or above another
lineage seen), and a hand-off carries the epoch of the table that will show it.
That table is published even when the hand-off failed and no list changed:
a source that gave up waiting serves the partition again, while the new owner
may have taken it over and only its word was lost; until a table of that
epoch reaches the new owner, both serve it (partitioning/ownership.py).

The round is written as a generator (each `yield` is a decision, its value
the report), so it reads in the order it runs; `begin` and `step` are the only
way in, and nothing in here reads a clock or waits.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping
from typing import NamedTuple, TypeVar

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
from partitioning.epochs import another_lineage, epoch_of, next_epoch
from partitioning.failover import drop_gone
from partitioning.leave import (
    NOBODY_STAYS,
    Departure,
    LeaveAnswer,
    holds_anything,
    leaving_too,
)
from partitioning.placement import Layout
from partitioning.release import Release
from partitioning.succession import coordinator_of
from partitioning.table import PartitionTable, build_table
from partitioning.wave import Wave

LEAVE_GRACE_S = 30.0
"""A member whose leave was answered done leaves the gossip at once (seconds to be seen
gone). One still live this long after is not leaving any more: it restarted quicker
than the failure detector, or stayed; it takes partitions again."""

TABLE_CHECK_S = 10.0
"""How old a member's last answer to a publish may be before the coordinator sends it
the table again. A member may install another coordinator's table after answering
ours (views disagreed for a moment: a flapping link, a heal), and nothing else tells
us: without a fresh answer the cluster would keep two tables until the next change.
A resend is one small RPC per member per 10 s."""

Round = Generator[Decision, Report, None]
R = TypeVar("R", TablesAsked, Published, Filled, HandedOff)


class View(NamedTuple):
    """What the runtime sees when it calls: the live (alive or suspect) members with
    their addresses ("" if unknown), this member included, and the time in seconds
    (any monotonic clock; only differences are used)."""

    live: Mapping[str, str]
    now: float
    unsettled: int = 0
    """The highest epoch of a hand-off this member took part in that no table it holds
    has settled (`Ownership.unsettled`)."""
    lacking: frozenset[int] = frozenset()
    """Partitions the table names this member for whose copy it lacks
    (`Ownership.lacking`)."""


class Rebalancer:
    """The coordinator's state machine; see the module docstring."""

    def __init__(
        self,
        me: str,
        placement: PlacementConfig,
        *,
        wave_size: int,
        narrowest: int,
        restart_wait_s: float,
        started: float,
        quorum: int = 0,
    ) -> None:
        """`wave_size`: partitions moved at once (`migration_max_parallel`).
        `narrowest`: the highest backup rank that holds every map (per-map backups;
        `placement.backups` when every map has them all). `started`: the time this
        member started, from which restart waits are counted. `quorum`:
        `min_cluster_size` (see `_run`)."""
        self.me = me
        self.quorum = quorum
        self.placement = placement
        self.wave_size = wave_size
        self.narrowest = narrowest
        self.restart_wait_s = restart_wait_s
        self.started = started
        self.table: PartitionTable | None = None  # the table installed on this member
        self.leaving: set[str] = set()  # members that asked to leave (or went silent then)
        self._released: dict[str, float] = {}  # leavers answered done -> when
        self.waiting: set[str] = set()  # named by the saved table, not seen since start
        self.acting = False  # whether this member coordinated in its last round
        self.pending = 0  # partitions still to move (coordinator only)
        self._published: dict[str, int] = {}  # member -> version it answered with
        self._answered_at: dict[str, float] = {}  # member -> when
        self._sent_addresses: dict[str, str] = {}  # member -> address in our last publish
        self._epoch_floor = 0  # a member holds a table of this epoch: publish above it
        self._adopt = False  # that table's epoch is above ours: take its lists first
        self._confirm = False  # restarted with a saved table: ask the others' first
        self._stale_at = float("-inf")  # the last time `_stale` ended a round
        self._overtake = False  # a member holds a table of another lineage
        self._unsettled = 0  # a member holds a hand-off only a table of this epoch settles
        self._lacking: dict[str, frozenset[int]] = {}  # member -> copies it says it lacks
        self._round: Round | None = None
        self._view = View({}, started)

    # ---- inputs ---------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self.table.version if self.table is not None else 0

    def installed(self, table: PartitionTable) -> None:
        """The runtime installed `table` (a publish, an adoption, another coordinator's)."""
        self.table = table

    def restarted(self, saved: PartitionTable) -> None:
        """This member restarted with `saved`: wait for the members it names before
        giving their partitions to others (a whole-cluster restart), and ask the live
        members for their tables before acting on it (`_run`): the cluster may have
        failed this member over while it was down, and a coordinator that republished
        its saved lists (new addresses, a failover) made its stale copies primaries
        again (grid chaos run --scenario kill-coordinator: counters fell 118 -> 65)."""
        self.waiting = set(saved.members) - {self.me}
        self._confirm = True

    def observe(self, live: Mapping[str, str]) -> None:
        """Members in sight are not waited for any more. A leaving member out of sight
        is gone: if it comes back (a restart keeps its name with its data dir), it is
        a member like any other, not leaving."""
        self.waiting.difference_update(live)
        if self.leaving:
            for m in [m for m in self.leaving if m not in live and m != self.me]:
                self.leaving.discard(m)
                self._released.pop(m, None)

    def seen(self, member: str) -> None:
        """Membership says `member` joined or is alive."""
        self.waiting.discard(member)

    def rejoined(self, member: str) -> None:
        """`member` joined again (a new incarnation, after it left or died): a leave it
        asked for before is over, or it would be kept out of every list for good (and,
        with the smallest name, coordinate beside the member that took over). What it
        answered before is forgotten: it may hold another lineage's table now (the other
        side of a healed split), and the next round sends it ours first (`Resend`), so
        that its answer is known before this round fails over or moves anything."""
        self.leaving.discard(member)
        self.waiting.discard(member)
        self._published.pop(member, None)

    def answered(
        self, member: str, version: int, unsettled: int = 0, lacking: Iterable[int] = ()
    ) -> bool:
        """`member` answered a publish holding `version`, a hand-off that only a table of
        epoch `unsettled` settles (0: none), and the partitions the table names it for
        whose copy it lacks. True if that is another lineage's table (epochs.py), a
        hand-off our tables have not settled, or copies it lacks: the runtime should run
        a round soon."""
        self._published[member] = version
        self._answered_at[member] = self._view.now
        wake = False
        lost = frozenset(lacking)
        if lost:
            self._lacking[member] = lost
            wake = True
        else:
            self._lacking.pop(member, None)
        if unsettled > epoch_of(self.version):
            self._unsettled = max(self._unsettled, unsettled)
            wake = True
        if another_lineage(self.version, version):
            self._epoch_floor = max(self._epoch_floor, epoch_of(version))
            self._overtake = True
            self._adopt = self._adopt or epoch_of(version) > epoch_of(self.version)
            wake = True
        return wake

    def asked(self, member: str) -> bool:
        """`member` asked this member for its table (it starts, or is back from a stall):
        it is sent the table again at the next round, and its answer says what it
        lacks. True if that is news: the runtime should run a round soon."""
        return self._published.pop(member, None) is not None

    def coordinator(self, live: Mapping[str, str]) -> str:
        return coordinator_of(live, self.leaving, self.me)

    # ---- a round --------------------------------------------------------------------------------
    def begin(self, view: View) -> Decision | None:
        """Start a round (dropping any unfinished one); its first decision."""
        if self._round is not None:
            self._round.close()
        self._view = view
        self.observe(view.live)
        for m, at in list(self._released.items()):
            if view.now - at > LEAVE_GRACE_S:  # still here: it stays after all
                self.leaving.discard(m)
                del self._released[m]
        self._round = self._run(view)
        return self._advance(None)

    def step(self, report: Report, view: View) -> Decision | None:
        """The report of the last decision; the next decision, None when the round is over."""
        if self._round is None:
            raise RuntimeError("no round in progress")
        self._view = view
        self.observe(view.live)
        return self._advance(report)

    def _advance(self, report: Report) -> Decision | None:
        assert self._round is not None
        try:
            return self._round.send(report)
        except StopIteration:
            self._round = None
            return None

    def _run(self, view: View) -> Round:
        live = dict(view.live)
        everyone_answered = True
        if self.table is None or self._confirm:
            everyone_answered = _expect((yield AskTables(live)), TablesAsked).everyone_answered
            if self._confirm:
                if not everyone_answered:
                    return  # a member that did not answer may hold a newer table: ask again
                self._confirm = False
        self.acting = self.coordinator(live) == self.me and self.me not in self.leaving
        if not self.acting:
            self.pending = 0
            return
        if len(live) < self.quorum:
            # min_cluster_size: the smaller side of a split takes no writes, and its
            # coordinator publishes nothing either (no failover, no overtake): its
            # lineage stays behind the larger side's, which it adopts after the heal
            # (`_rebalance`), instead of making its stale copies primaries again
            self.pending = 0
            return
        if self.table is None:
            if not everyone_answered:
                return  # a member that did not answer may have a table: never guess
            members = [m for m in live if m not in self.leaving]
            yield Note("info", "new cluster: first partition table", {"members": members})
            yield from self._publish(build_table(members, 1, self.placement), live)
            return
        yield from self._rebalance(live, view.now)

    def _rebalance(self, live: dict[str, str], now: float) -> Round:
        table = self.table
        assert table is not None
        if now - self.started > self.restart_wait_s:
            self.waiting.clear()  # waited long enough: their partitions go to others
        # members behind on the table (a publish failed) get it again, and so does every
        # member whose last answer is old (it may hold another coordinator's table since)
        behind = [
            m
            for m in live
            if m != self.me
            and (
                self._published.get(m, -1) != table.version
                or now - self._answered_at.get(m, now) > TABLE_CHECK_S
            )
        ]
        if any(live[m] for m in behind):
            yield Resend(live, tuple(m for m in behind if live[m]))
        if self._overtake and self._adopt:  # a lineage ahead of ours: take its lists
            self._adopt = False
            _expect((yield AskTables(live)), TablesAsked)
            adopted = self._installed()
            yield Note(
                "info",
                "a member holds a table of a lineage ahead of ours; adopting it",
                {"theirs": adopted.epoch, "ours": table.epoch},
            )
            table = adopted
        if self._overtake:  # members ignore our table: overtake theirs
            self._overtake = False
            yield Note(
                "info",
                "a member holds a table of another lineage; republishing above it",
                {"theirs": self._epoch_floor, "ours": table.epoch},
            )
            yield from self._publish(self._layout_table(table.replica_lists, live), live)
            table = self._installed()
        self._unsettled = max(self._unsettled, self._view.unsettled)
        unsettled = self._unsettled
        if unsettled > table.epoch:  # its coordinator never published it: we do
            yield Note(
                "info",
                "a hand-off no table settled; publishing a table of its epoch",
                {"epoch": unsettled, "ours": table.epoch},
            )
            yield from self._publish(self._layout_table(table.replica_lists, live), live)
            table = self._installed()
        if self._unsettled <= table.epoch:
            self._unsettled = 0
        moved_address = [
            m
            for m in table.members
            if m in live and live[m] and self._sent_addresses.get(m) != live[m]
        ]
        if moved_address:  # a member restarted on another address: clients must learn it
            yield Note(
                "info",
                "member addresses changed; republishing the table",
                {"members": moved_address},
            )
            yield from self._publish(self._layout_table(table.replica_lists, live), live)
            table = self._installed()
        # 1. the gone leave every list now (failover), and so do copies their member lacks
        gone = {m for m in table.members if m not in live and m not in self.waiting}
        layout = table.replica_lists
        lacking = self._lacks(layout, live)
        target_members = [m for m in live if m not in self.leaving] + sorted(self.waiting)
        if not target_members:
            return  # everyone is leaving (a whole-cluster shutdown): nothing to place
        target = build_table(sorted(set(target_members)), table.epoch + 1, self.placement)
        self.pending = len(_differing(layout, target)) or len(gone) or len(lacking)
        if gone or lacking:
            failover = drop_gone(layout, gone, target, lacking)
            layout = failover.layout
            if gone:
                yield Note(
                    "warning",
                    "members gone: replicas removed",
                    {"gone": sorted(gone), "partitions_without_copy": len(failover.lost)},
                )
            if lacking:
                yield Note(
                    "warning",
                    "members lack their copies (restarted without data): replicas removed",
                    {"members": sorted(lacking), "partitions_without_copy": len(failover.lost)},
                )
            yield from self._publish(self._layout_table(layout, live), live)
        # 2. leaving members: their primaries go to their own backups at once
        leavers = {m for m in self.leaving if m in live}
        if leavers:
            release = Release(layout, leavers, live, self.narrowest)
            failed: frozenset[int] = frozenset()
            if release.orders:
                report = yield Handoff(live, release.orders, self._next_epoch())
                failed = _expect(report, HandedOff).failed
                handed = sum(len(o.partitions) for o in release.orders) - len(failed)
                yield Note(
                    "info",
                    "leaving members released",
                    {"leavers": sorted(leavers), "handed_off": handed},
                )
            released = release.handed_off(failed)
            if released != layout or failed:  # a failed hand-off's epoch must come too
                layout = released
                yield from self._publish(self._layout_table(layout, live), live)
        # 3. move what differs from the target, a wave at a time
        yield from self._waves(layout, target, live, leavers)

    def _waves(
        self, layout: Layout, target: PartitionTable, live: dict[str, str], leavers: set[str]
    ) -> Round:
        todo = _differing(layout, target)
        self.pending = len(todo)
        if not todo:
            return
        yield Note(
            "info", "rebalancing", {"partitions": len(todo), "members": sorted(target.members)}
        )
        started = self._view.now
        for i in range(0, len(todo), self.wave_size):
            latest = self._view.live
            if self.coordinator(latest) != self.me:
                return  # someone else took over (a smaller name joined)
            if {m for m in self.leaving if m in live} - leavers:
                return  # a member asked to leave: release it first (next round, at once)
            if set(live) - set(latest):
                return  # a member is gone: fail over first (next round, at once)
            if set(latest) - set(live):
                return  # a member joined (came back): the target changed (next round)
            if self._overtake:
                return  # members ignore our tables: overtake theirs first (next round)
            if self._stale(latest):
                # a member's last word on our table is old: the next round sends it again
                # (`Resend`) and hears which table it holds. One that refuses our fills
                # may hold another lineage's, made while it saw itself alone, and waves
                # that fail one after the other (30 s a fill) never publish, so nothing
                # asked: the cluster kept two tables for good (the simulator, 2 members,
                # seed 3: 20 waves failed in one round)
                return
            if self._lacking and self._lacks(layout, latest):
                return  # a member lacks copies the lists name it for: fail it over first
            wave = Wave(todo[i : i + self.wave_size], layout, target, live, self.narrowest)
            fills = wave.fills()
            failed: frozenset[int] = frozenset()
            if fills:
                failed = _expect((yield Fill(live, fills)), Filled).failed
            handoffs = wave.filled(failed)
            failed = frozenset()
            if handoffs:
                report = yield Handoff(live, handoffs, self._next_epoch())
                failed = _expect(report, HandedOff).failed
            moved = wave.handed_off(failed)
            if wave.failed:
                yield Note(
                    "warning",
                    "partition moves failed; retrying next round",
                    {"partitions": sorted(wave.failed)},
                )
            self.pending = max(0, len(todo) - i - len(wave.partitions))
            if moved != layout or failed:  # a failed hand-off's epoch must come too
                layout = moved
                yield from self._publish(self._layout_table(layout, live), live)
        self.pending = 0
        settled = sum(1 for p in todo if layout[p] == target.replicas(p))
        yield Note(
            "info",
            "rebalance round done",
            {
                "settled": settled,
                "of": len(todo),
                "seconds": round(self._view.now - started, 3),
                "table_version": self.version,
            },
        )

    def _lacks(self, layout: Layout, live: Mapping[str, str]) -> dict[str, frozenset[int]]:
        """Live members -> the partitions whose lists still name them although they lack
        the copy (this member's own from the view, the others' from their answers)."""
        said = dict(self._lacking)
        if self._view.lacking:
            said[self.me] = self._view.lacking
        out = {}
        for m, parts in sorted(said.items()):
            named = frozenset(p for p in parts if p < len(layout) and m in layout[p])
            if named and m in live:
                out[m] = named
        return out

    # ---- tables ---------------------------------------------------------------------------------
    def _publish(self, table: PartitionTable, live: dict[str, str]) -> Round:
        to = tuple(m for m, address in live.items() if m != self.me and address)
        report = yield Publish(table, live, to)
        self._sent_addresses = dict(_expect(report, Published).addresses)

    def _stale(self, live: Mapping[str, str]) -> bool:
        """Whether a live member's last answer to a publish is older than TABLE_CHECK_S;
        true at most once per TABLE_CHECK_S, so a member that does not answer at all (a
        link cut one way) stops the waves among the others only that often."""
        now = self._view.now
        if now - self._stale_at <= TABLE_CHECK_S:
            return False
        at = self._answered_at
        if any(now - at.get(m, now) > TABLE_CHECK_S for m in live if m != self.me):
            self._stale_at = now
            return True
        return False

    def _installed(self) -> PartitionTable:
        assert self.table is not None
        return self.table

    def _next_epoch(self) -> int:
        """Above our table, another lineage's, and every hand-off no table settled."""
        return next_epoch(self.version, max(self._epoch_floor, self._unsettled - 1))

    def _layout_table(self, layout: Layout, live: dict[str, str]) -> PartitionTable:
        """The table for `layout`, one epoch up; it names every member that holds a
        replica and every live member that stays (so they all install it)."""
        current = self._installed()
        members = {m for r in layout for m in r} | {m for m in live if m not in self.leaving}
        return PartitionTable.of_layout(
            self._next_epoch(),
            current.partition_count,
            self.placement.backups,
            tuple(members),
            layout,
        )

    # ---- graceful leave (leave.py) ---------------------------------------------------------------
    def leave_requested(self, member: str, live: Mapping[str, str]) -> LeaveAnswer | None:
        """A Leave from `member`: the answer now, or None to run rounds and wait
        (`leave_progress`) because this member coordinates."""
        self.leaving.add(member)
        if all(m in self.leaving for m in live):
            return LeaveAnswer(True, NOBODY_STAYS)
        if self.me in self.leaving and member != self.me:
            return leaving_too(self.me)
        coordinator = self.coordinator(live)
        if coordinator != self.me:
            return LeaveAnswer(False, f"{coordinator} coordinates", coordinator)
        return None

    def leave_progress(self, member: str) -> LeaveAnswer | None:
        """The answer to `member`'s Leave once there is one (None: keep waiting)."""
        if self.table is not None and not holds_anything(self.table, member):
            self._released.setdefault(member, self._view.now)
            return LeaveAnswer(True, version=self.table.version)
        if self.me in self.leaving and member != self.me:
            return leaving_too(self.me)
        return None

    def depart(self, live: Mapping[str, str]) -> Departure:
        """This member leaves gracefully: the conversation with the coordinator."""
        return Departure(self.me, live, self.leaving)


def _differing(layout: Layout, target: PartitionTable) -> list[int]:
    return [p for p in range(target.partition_count) if layout[p] != target.replicas(p)]


def _expect(report: Report, kind: type[R]) -> R:
    """The report a decision asked for; anything else is a bug in the runtime."""
    if not isinstance(report, kind):
        raise TypeError(f"expected a {kind.__name__} report, got {report!r}")
    return report
