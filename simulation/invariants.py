"""What a run checks, while it runs and at the end.

During the run every check is made at the moment the event it is about happens
(a change a store applied, a message a follower took in, a term started, a
write stamped), so a violation stops the run at the first bad step with the
virtual time, and the seed replays up to it. The checks watch the production
code from outside (the store's sink, the follower core's state before and
after a message) and keep their own shadow state; none of them asks the code
under test whether it is right:

- **LWW never regresses**: every change a store applies has a version newer
  than the one the store held for that key (a shadow of every store's versions,
  fed by the sink, not read back from the store).
- **No invented versions**: every version any store ever holds was stamped by
  some primary for that key with that value (a record is never corrupted or
  mixed up on the way).
- **A follower's position is the protocol's**: an independent walk of each
  message's chunks by the rules of replication/stream.py must end at the same
  `(term, seq)` and phase as the follower core's `FollowerLog`s.
- **A live follower holds its primary's state**: a follower live at `(term, seq)`
  holds, for every key, at least the version its primary held at that point of
  that lineage: the primary's copy when the term began, plus every change it
  appended up to `seq` (a shadow of each lineage kept from the primaries'
  sinks). Anti-entropy could repair a divergence later; this catches it at the
  message that causes it.
- **Terms are fresh**: a member that becomes primary starts a term nobody used,
  except by a hand-off, which continues the old primary's term exactly where it
  stopped (the last seq it appended).
- **One primary per partition per table version**: no two members serve the
  same partition as primary (their `store.owned`, hand-offs included) while
  holding the same table version. Two sides of a split publish different
  versions (each lineage its own), so this is what the design promises: a
  table names one primary, and a hand-off moves it without a moment of two.
- **One term per primary**: while a member is primary of a partition, every
  change it appends is in that partition's one current term, at the next seq.
- **HLC**: a member's stamps strictly increase.

At the end (after heal, once quiet; see `World.final_checks`):

- membership converged, every running member installed the coordinator's last
  publish, and that table is the placement of the running members (the
  rebalancer finished);
- for every partition, every replica the table names holds an identical copy
  (same records; equal digest roots);
- no member holds a copy of a partition it has no role for (hand-backs drained);
- every key's value is the LWW winner of every version any store ever held
  (persisted mode: nothing a store held is lost, so nothing may be missing), or,
  with crashes that lose memory, of every version held when the faults ended;
- persisted mode: every acknowledged write is present or superseded by an
  LWW-newer version of its key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from replication.stream import FollowerLog, Phase

Key = bytes
VersionT = tuple[int, int]
MUTATIONS, SNAPSHOT_BEGIN, SNAPSHOT, SNAPSHOT_END, HANDOFF, REFUSED = range(6)


class Lineage(NamedTuple):
    """One term of one partition, as its primary wrote it."""

    partition: int
    start: int  # the seq the term began at
    base: dict[Key, VersionT]  # the primary's copy then
    changes: list[tuple[Key, VersionT]]  # change start+1, start+2, ...


class Claim(NamedTuple):
    """Why a member serves a partition: the table `version` it holds, and `early`, the
    confirm epoch of a hand-off to it that no table has settled yet (0: by the table),
    made by `source`."""

    version: int
    early: int
    source: str = ""

    def conflicts(self, other: Claim, strict: bool) -> bool:
        """Two members serving one partition: a conflict if the same table names both
        (the same version), or if one hand-off made both primaries (the same source and
        confirm epoch; two coordinators of two lineages, one of them restarted without
        its memory, can order hand-offs of one epoch from two sources, each settled by
        its lineage's table of that epoch, like two tables of one epoch). A hand-off
        claim beside a table claim is the hand-off in flight: the table of its epoch
        settles it (see `Invariants.serving`); `strict` counts it too when both hold the
        same table."""
        if self.early and other.early:
            return self.early == other.early and self.source == other.source
        if self.early or other.early:
            return strict and self.version == other.version
        return self.version == other.version


class InvariantViolation(AssertionError):
    """A step broke an invariant; the message says which, where and when."""


class Invariants:
    """Shadow state and the checks above; `fail` raises at the first violation."""

    def __init__(self, now: Callable[[], float], strict: bool = False) -> None:
        self._now = now
        self.strict = strict  # count hand-offs in flight as overlaps too (`serving`)
        self.written: dict[tuple[Key, int, int], bytes | None] = {}
        """(key, ts, member) -> value of every version a primary stamped."""
        self.held: dict[tuple[str, int], dict[Key, VersionT]] = {}
        """(member, partition) -> key -> the version the member's store holds."""
        self.ever: dict[Key, VersionT] = {}
        """Per key, the LWW-newest version any store ever held."""
        self.acked: dict[Key, VersionT] = {}
        """Per key, the newest acknowledged write."""
        self.acked_count = 0
        self.since_mark: dict[Key, VersionT] = {}
        """Per key, the newest version held by any store since `mark()` (end of faults)."""
        self.terms: set[int] = set()
        self.primary_term: dict[tuple[str, int], tuple[int, int]] = {}
        """(member, p) -> (term, last seq) while the member is primary."""
        self.shadow: dict[tuple[str, int], tuple[int, int, Phase]] = {}
        """(member, p) -> (term, seq, phase) of the copy, walked by the protocol's rules."""
        self.lineages: dict[int, Lineage] = {}
        """term -> what its primary held when it began, and every change it appended."""
        self.checked: dict[tuple[str, int], tuple[int, int]] = {}
        """(member, p) -> the (term, seq) up to which its copy was checked against the lineage."""
        self.last_stamp: dict[str, int] = {}
        self.serves: dict[str, tuple[int, frozenset[int]]] = {}
        """member -> (table version, partitions it serves as primary under it)."""
        self.primaries: dict[int, dict[str, Claim]] = {}
        """partition -> member -> the table version under which it serves it, and why."""
        self.checks = 0

    def fail(self, what: str) -> None:
        raise InvariantViolation(f"t={self._now():.6f}s: {what}")

    # ---- stores ---------------------------------------------------------------------------
    def stored(self, member: str, p: int, key: Key, value: bytes | None, ts: int, mid: int) -> None:
        """The member's store applied (key, version) with this value (None: a delete)."""
        self.checks += 1
        v = (ts, mid)
        held = self.held.setdefault((member, p), {})
        old = held.get(key)
        if old is not None and v <= old:
            self.fail(f"{member} p{p} {key!r}: version regressed {old} -> {v}")
        held[key] = v
        w = (key, ts, mid)
        if w not in self.written or self.written[w] != value:
            self.fail(f"{member} p{p} {key!r}: holds {v} = {value!r} that no primary stamped")
        if v > self.ever.get(key, (0, 0)):
            self.ever[key] = v
        if v > self.since_mark.get(key, (0, 0)):
            self.since_mark[key] = v

    def dropped(self, member: str, p: int) -> None:
        """The member's store forgot its copy of p."""
        self.held.pop((member, p), None)
        self.checked.pop((member, p), None)

    def recovered(
        self, member: str, copies: Mapping[int, Mapping[Key, tuple[Any, int, int]]]
    ) -> None:
        """A member restarted from its data dir: its store holds exactly what it held
        when it crashed (every change was flushed to the log at the end of the event that
        made it, and a crash of the process keeps the files), no more, no less."""
        self.checks += 1
        for p in sorted(set(copies) | {q for m, q in self.held if m == member}):
            want = self.held.get((member, p), {})
            got = {k: (ts, mid) for k, (_, ts, mid) in copies.get(p, {}).items()}
            if got != want:
                extra = sorted(k for k in got if got[k] != want.get(k))[:3]
                lost = sorted(k for k in want if k not in got)[:3]
                self.fail(
                    f"{member} p{p}: recovered {len(got)} keys, held {len(want)} before "
                    f"the crash (differing {extra}, lost {lost})"
                )

    def store_lost(self, member: str) -> None:
        """A crash that loses memory: the member restarts with an empty store."""
        for k in [k for k in self.held if k[0] == member]:
            del self.held[k]

    def copy(self, member: str, p: int) -> dict[Key, VersionT]:
        """The versions the member's store holds for p, as the sink told them."""
        return dict(self.held.get((member, p), {}))

    def mark(self, copies: Iterable[Mapping[Key, tuple[Any, int, int]]]) -> None:
        """Start `since_mark` from what the stores hold now (the faults just ended)."""
        self.since_mark = {}
        for part in copies:
            for key, (_, ts, member) in part.items():
                if (ts, member) > self.since_mark.get(key, (0, 0)):
                    self.since_mark[key] = (ts, member)

    # ---- primaries ------------------------------------------------------------------------
    def became_primary(
        self, member: str, p: int, term: int, seq: int, base: Mapping[Key, VersionT]
    ) -> None:
        """A new lineage: `base` is the primary's copy of p as the term begins."""
        self.checks += 1
        if term in self.terms:
            self.fail(f"{member} p{p}: term {term} was used before")
        self.terms.add(term)
        self.primary_term[(member, p)] = (term, seq)
        self.lineages[term] = Lineage(p, seq, dict(base), [])

    def took_over(self, member: str, p: int, term: int, seq: int) -> None:
        """A hand-off: the member continues the lineage `term` from `seq`, which must be
        exactly where its old primary stopped."""
        self.checks += 1
        lin = self.lineages.get(term)
        if lin is None or lin.partition != p:
            self.fail(f"{member} p{p}: took over term {term}, which no primary of p began")
            return
        end = lin.start + len(lin.changes)
        if seq != end:
            self.fail(f"{member} p{p}: took over at seq {seq}; its primary appended up to {end}")
        self.primary_term[(member, p)] = (term, seq)

    def stopped_primary(self, member: str, p: int) -> None:
        self.primary_term.pop((member, p), None)

    def serving(
        self,
        member: str,
        version: int,
        owned: bytes | None,
        early: Mapping[int, int] | None = None,
        sources: Mapping[int, str] | None = None,
    ) -> None:
        """`member` now serves as primary the partitions set in `owned` (None: none, its
        process ended) while holding table `version`; `early`: those it serves by a
        hand-off no table has settled yet (-> the hand-off's confirm epoch), and
        `sources`, who handed each of those over.

        One primary per partition per table version: no two members serve a partition
        by the same table version, nor by the same hand-off, and a member never serves
        by a hand-off that the table it holds has settled (its epoch reached). A
        hand-off claim beside another member's table claim is allowed: it is settled
        by the table of its epoch, which the rebalancer publishes at once and the
        quiet check waits for. Under `strict` it counts when both hold the same table,
        which showed two overlaps grid had (fixed since; docs/testing.md): a lost
        `taken_over` (the source took the partition back while the new owner served
        it) and a hand-off forgotten by a crash (the source restarted with its saved
        table, which could not show it)."""
        self.checks += 1
        now = frozenset(p for p, on in enumerate(owned) if on) if owned is not None else frozenset()
        _, old = self.serves.get(member, (0, frozenset()))
        for p in old:
            self.primaries[p].pop(member, None)
        if not now:
            self.serves.pop(member, None)
            return
        self.serves[member] = (version, now)
        early = early or {}
        sources = sources or {}
        epoch = version >> 32
        for p in sorted(now):
            claim = Claim(version, early.get(p, 0), sources.get(p, ""))
            if claim.early and claim.early <= epoch:
                self.fail(
                    f"{member} serves p{p} by a hand-off of epoch {claim.early}, which its "
                    f"table of epoch {epoch} has settled"
                )
            others = self.primaries.setdefault(p, {})
            for other, theirs in sorted(others.items()):
                if other != member and claim.conflicts(theirs, self.strict):
                    why = "".join(
                        f", {m} by a hand-off of epoch {c.early}"
                        for m, c in ((member, claim), (other, theirs))
                        if c.early
                    )
                    self.fail(
                        f"p{p}: {member} and {other} both serve it as primary under table "
                        f"{version:#x} (epoch {epoch}){why}"
                    )
            others[member] = claim

    def member_gone(self, member: str) -> None:
        """A crash: its logs, terms and follower positions are gone with the process."""
        for d in (self.primary_term, self.shadow, self.checked):
            for k in [k for k in d if k[0] == member]:
                del d[k]
        self.last_stamp.pop(member, None)
        self.serving(member, 0, None)

    def stamped(
        self, member: str, p: int, key: Key, value: bytes | None, ts: int, mid: int
    ) -> None:
        self.checks += 1
        last = self.last_stamp.get(member, 0)
        if ts <= last:
            self.fail(f"{member}: HLC stamp {ts} not above its previous {last}")
        self.last_stamp[member] = ts
        self.written[(key, ts, mid)] = value

    def appended(self, member: str, p: int, term: int, seq: int, key: Key, v: VersionT) -> None:
        self.checks += 1
        cur = self.primary_term.get((member, p))
        if cur is None:
            self.fail(f"{member} p{p}: appended seq {seq} while not primary")
        elif cur[0] != term or seq != cur[1] + 1:
            self.fail(f"{member} p{p}: appended ({term}, {seq}) after {cur}")
        self.primary_term[(member, p)] = (term, seq)
        self.lineages[term].changes.append((key, v))

    def acknowledged(self, key: Key, ts: int, member: int) -> None:
        self.acked_count += 1
        if (ts, member) > self.acked.get(key, (0, 0)):
            self.acked[key] = (ts, member)

    # ---- followers ------------------------------------------------------------------------
    def position(self, member: str, p: int, term: int, seq: int) -> None:
        """The copy subscribes from (term, seq): its next answer decides the phase."""
        self.shadow[(member, p)] = (term, seq, Phase.IDLE)

    def received(
        self,
        member: str,
        subscribed: set[int],
        chunks: Iterable[Any],
        state: Mapping[int, FollowerLog],
        holds: Callable[[int, bytes], VersionT | None],
        resync: Iterable[int] = (),
    ) -> None:
        """A follower took in a message: walk its chunks by the protocol's rules on the
        shadow, then compare with the core's positions and the store's contents."""
        touched: set[int] = set()
        subscribed = set(subscribed)  # a refusal or hand-off ends the rest of the message
        for c in chunks:
            p = c.partition
            if p not in subscribed:
                continue
            touched.add(p)
            key = (member, p)
            term, seq, phase = self.shadow.get(key, (0, 0, Phase.IDLE))
            kind = c.kind
            if kind == MUTATIONS:
                last = c.seq + c.count - 1
                if phase is not Phase.LIVE or c.seq > seq + 1:
                    self.shadow[key] = (0, 0, Phase.IDLE)  # resync: a snapshot follows
                    continue
                if last <= seq:
                    continue
                self.shadow[key] = (term, last, phase)
            elif kind == SNAPSHOT_BEGIN:
                self.shadow[key] = (term, seq, Phase.SNAPSHOT)
            elif kind == SNAPSHOT:
                if phase is not Phase.SNAPSHOT:
                    self.shadow[key] = (0, 0, Phase.IDLE)
            elif kind == SNAPSHOT_END:
                if phase is Phase.SNAPSHOT or (
                    phase is Phase.IDLE and (c.term, c.seq) == (term, seq)
                ):
                    self.shadow[key] = (c.term, c.seq, Phase.LIVE)
                else:
                    self.shadow[key] = (0, 0, Phase.IDLE)
            elif kind in (HANDOFF, REFUSED):
                self.shadow.pop(key, None)
                touched.discard(p)
                subscribed.discard(p)  # the core takes nothing more of p from this message
        for p in sorted(touched - set(resync)):
            self.checks += 1
            want = self.shadow.get((member, p))
            st = state.get(p)
            got = (st.term, st.seq, st.phase) if st is not None else None
            if want is None or got is None:
                continue
            if want[2] is Phase.IDLE and got[2] is Phase.IDLE:
                continue  # both ask again (the core asks from its own (term, seq): resync)
            if want != got:
                self.fail(
                    f"{member} p{p}: the follower is at {got[:2]} {got[2].value}, "
                    f"the protocol's rules say {want[:2]} {want[2].value}"
                )
            if got[2] is Phase.LIVE:
                self._holds_lineage(member, p, got[0], got[1], holds)

    def _holds_lineage(
        self, member: str, p: int, term: int, seq: int, holds: Callable[[int, bytes], Any]
    ) -> None:
        """The copy of a follower live at (term, seq) against what its primary held then;
        only what changed since the last check of the same lineage is looked at again."""
        lin = self.lineages.get(term)
        if lin is None or lin.partition != p:
            self.fail(f"{member} p{p}: live in term {term}, which no primary of p began")
            return
        if seq - lin.start > len(lin.changes):
            self.fail(f"{member} p{p}: live at seq {seq}, its primary appended up to "
                      f"{lin.start + len(lin.changes)}")  # fmt: skip
        done = self.checked.get((member, p))
        if done is not None and done[0] == term and done[1] <= seq:
            want = dict(lin.changes[done[1] - lin.start : seq - lin.start])
        else:
            want = dict(lin.base)
            for k, v in lin.changes[: seq - lin.start]:
                if v > want.get(k, (0, 0)):
                    want[k] = v
        self.checked[(member, p)] = (term, seq)
        for k, v in want.items():
            have = holds(p, k)
            if have is None or have < v:
                self.fail(
                    f"{member} p{p}: live at ({term}, {seq}) but holds {k!r} at {have}; "
                    f"its primary had {v} there"
                )
