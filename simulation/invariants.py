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
  unless its partition's clear marker is newer: then the key is absent (a clear
  never comes back), and each partition's final marker is the newest clear any
  store held;
- persisted mode: every acknowledged write is present or superseded by an
  LWW-newer version of its key or by a clear; a delete is its tombstone, so an
  acknowledged delete that comes back with an older value fails here.

Sync backups (the map `s`, `map_sync_backups=s=1`; simulation/member.py's
`on_sync_write` waits as grid/member/server.py's `_finish` does, on the replication
core's acknowledgements), in both modes, the memory-losing one included:

- **A confirmed write is on 1 + n stores** (checked at the step a primary answers
  it OK): at least 1 + min(sync backups, backups of its partition in the
  primary's table) of the table's replicas and the primary hold the key at the
  written version or newer (the sink's shadow, not the core's acknowledgement
  counts), or held it when they last lost their memory (a backup that applied it
  and crashed before the primary heard: one failure after the write was on two
  stores). Not checked, only claimed at the end, for the OKs grid gives without
  its backups: the primary stopped serving the partition while it waited, or
  served it with no log (`sync_moved`,
  `sync_unlogged` in the stats; docs/testing.md).
- **No confirmed write is lost** (at the end): every put, delete or incr a primary
  confirmed under sync backups is present or superseded by an LWW-newer version of
  its key -- so a confirmed delete never comes back with an older value -- unless
  every copy holding it was lost at some moment (`all_lost`: each store holding
  the version or a newer one lost it, by a crash that loses memory, while no other
  store held it). With sync backups 1 that takes two members losing their memory
  while the partition had only those two copies: more failures at once than
  `backups`, which the fault mix allows (`max_down` 3) and the claim excludes;
  a run reports how many such versions it had (`sync_all_lost`).
- **Counters under sync backups are exact**: counters are fresh keys per 30 s of
  clients (`c<generation>.<i>`), each incr adds 1. When a primary applies an incr,
  the value before it covers every incr acknowledged to the client so far; at the
  end the counter holds at least the acknowledged incrs and at most those plus the
  ones whose outcome is unknown (answered UNCONFIRMED or timed out), and no two
  acknowledged incrs returned the same value (none lost, none counted twice).
  Claimed for counters that did not fork, lost no copies and had every incr
  answered OK after its backups confirmed it. A counter is forked when the
  network has split (a split, a one-way cut, a flap) at any moment of the run
  before its end, or two members served its partition as primary at once since
  its first incr (a primary paused past failure detection). A counter is one LWW
  value: two lineages' values merge by keeping one, not by adding, and the
  tables of two lineages are merged some time after the heal, when the table
  that wins may make a stale copy primary (`--seed 3`, default size, with splits
  counted only while they lasted: 16 s after a heal, the winning lineage's table
  made m0044 primary of p56, whose copy it had handed back 9 s before; its next
  incr of c18.2 started from 0 over six confirmed ones, which came back by
  hand-back as an older version). `counters_forked` in the stats counts the
  counters out of the claim for any of these reasons: in a run with splits that
  is every counter, so `--no-splits` runs are the ones that check them
  (with `--max-down 1 --no-persist`: at most `backups` failures at once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from replication.stream import FollowerLog, Phase

Key = bytes
CLEAR_KEY = b""
"""The plain map's clear marker in a copy (simulation/member.py's `copy_of`) and in the
sink (`Store.clear` reports each partition's marker under the empty key)."""
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


class Counter:
    """A counter of the sync map, as its clients saw it."""

    __slots__ = ("acked", "born", "forked", "lost", "results", "unknown", "weak")

    def __init__(self) -> None:
        self.acked = 0  # incrs acknowledged to the client
        self.unknown = 0  # answered UNCONFIRMED or timed out: applied or not
        self.results: list[int] = []  # what each acknowledged incr returned
        self.forked = False  # incremented while two members served its partition
        self.lost = False  # every copy of an acknowledged version was lost at once
        self.weak = False  # an incr answered OK without its backups (`confirmed_unchecked`)
        self.born = -1.0  # the time of its first incr

    @property
    def claimed(self) -> bool:
        return not (self.forked or self.lost or self.weak)


class InvariantViolation(AssertionError):
    """A step broke an invariant; the message says which, where and when."""


class Invariants:
    """Shadow state and the checks above; `fail` raises at the first violation."""

    def __init__(
        self,
        now: Callable[[], float],
        strict: bool = False,
        map_of: Callable[[Key], str] = lambda key: "",
    ) -> None:
        self._now = now
        self._map_of = map_of  # a clear removes the keys of its own map only
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
        self.cleared_ever: dict[int, VersionT] = {}
        self.cleared_since: dict[int, VersionT] = {}
        """Per partition, the newest clear marker of the plain map any store held (ever,
        since `mark()`): the clear's version, which hides every older one of its keys."""
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
        self.sync_acked: dict[Key, VersionT] = {}
        """Per key of the sync map, the newest version a primary confirmed under sync
        backups."""
        self.all_lost: dict[Key, VersionT] = {}
        """Confirmed versions every copy of which was lost at once (not claimed)."""
        self.counters: dict[Key, Counter] = {}
        self.lost_copies: dict[tuple[str, int], dict[Key, VersionT]] = {}
        """(member, partition) -> what its store held when it last lost its memory: a
        backup that acknowledged a write and then crashed held it (`confirmed`)."""
        self.overlap_at: dict[int, float] = {}
        """partition -> the last time two members served it as primary at once."""
        self.split_at = -1.0
        """The last time the network was split or healed (-1: never split)."""
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
        w = (key, ts, mid)
        if w not in self.written or self.written[w] != value:
            self.fail(f"{member} p{p} {key!r}: holds {v} = {value!r} that no primary stamped")
        if key == CLEAR_KEY:  # a clear: its marker, and every older version of p goes
            cleared = self._map_of(key)
            kept = {k: h for k, h in held.items() if h > v or self._map_of(k) != cleared}
            kept[key] = v
            self.held[(member, p)] = kept
            self._newer(self.cleared_ever, p, v)
            self._newer(self.cleared_since, p, v)
            return
        held[key] = v
        self._newer(self.ever, key, v)
        self._newer(self.since_mark, key, v)

    @staticmethod
    def _newer(d: dict[Any, VersionT], k: Any, v: VersionT) -> None:
        if v > d.get(k, (0, 0)):
            d[k] = v

    def dropped(self, member: str, p: int) -> None:
        """The member's store forgot its copy of p."""
        self._losing(member, [p])
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
        mine = sorted(k for k in self.held if k[0] == member)
        self._losing(member, [p for _, p in mine])
        for k in mine:
            self.lost_copies[k] = self.held.pop(k)

    def _losing(self, member: str, parts: Iterable[int]) -> None:
        """The member's copies of `parts` go: a confirmed sync version that no other
        store holds is lost with them (`all_lost`)."""
        for p in parts:
            mine = self.held.get((member, p))
            if not mine:
                continue
            acked = self.sync_acked
            risk = [k for k, v in mine.items() if k in acked and v >= acked[k]]
            if not risk:
                continue
            others = [h for (m, q), h in self.held.items() if q == p and m != member]
            for k in sorted(risk):
                if not any(h.get(k, (0, 0)) >= acked[k] for h in others):
                    self.all_lost[k] = acked[k]
                    c = self.counters.get(k)
                    if c is not None:
                        c.lost = True

    def copy(self, member: str, p: int) -> dict[Key, VersionT]:
        """The versions the member's store holds for p, as the sink told them."""
        return dict(self.held.get((member, p), {}))

    def mark(self, copies: Iterable[tuple[int, Mapping[Key, tuple[Any, int, int]]]]) -> None:
        """Start `since_mark` and `cleared_since` from what the stores hold now (the
        faults just ended); `copies`: (partition, copy) pairs."""
        self.since_mark = {}
        self.cleared_since = {}
        for p, part in copies:
            for key, (_, ts, member) in part.items():
                if key == CLEAR_KEY:
                    self._newer(self.cleared_since, p, (ts, member))
                else:
                    self._newer(self.since_mark, key, (ts, member))

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
            if len(self.primaries[p]) > 1:  # an overlap ends or goes on (counters' forks)
                self.overlap_at[p] = self._now()
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
            if len(others) > 1:
                self.overlap_at[p] = self._now()

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
        if ts <= last and not (key == CLEAR_KEY and ts == last):  # a clear: one stamp, all p
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

    # ---- sync backups ---------------------------------------------------------------------
    def confirmed(
        self,
        member: str,
        p: int,
        key: Key,
        v: VersionT,
        replicas: tuple[str, ...],
        n: int,
        ranks: int,
        cluster: int = 1,
    ) -> None:
        """A primary answers a sync write OK: 1 + min(n, backups) stores hold it, and
        two at least while the cluster (`cluster`: its members, up or down, that did
        not leave) has another member to hold a copy: a primary whose own table names
        only itself (alone on its side of a split, it failed the others over) must not
        confirm a sync write that exists nowhere else."""
        self.checks += 1
        need = 1 + min(n, len(replicas[1 : 1 + ranks]))
        if cluster > 1 and n and ranks:
            need = max(need, 2)
        holders = [
            m
            for m in sorted({member, *replicas})
            if self.held.get((m, p), {}).get(key, (0, 0)) >= v
            or self.lost_copies.get((m, p), {}).get(key, (0, 0)) >= v
        ]
        if len(holders) < need:
            self.fail(
                f"{member} p{p} {key!r}: confirmed {v} under sync backups held by "
                f"{holders}, fewer than {need} of {replicas} ({cluster} members)"
            )
        if v > self.sync_acked.get(key, (0, 0)):
            self.sync_acked[key] = v

    def confirmed_unchecked(self, key: Key, v: VersionT) -> None:
        """A primary answers a sync write OK without its backups: it no longer serves
        the partition (`Primary.unconfirmed` leaves it to the new primary), or it served
        it with no log (nothing to wait for). Claimed at the end only; a counter so
        answered is out of the counters' claim (`Counter.weak`)."""
        if v > self.sync_acked.get(key, (0, 0)):
            self.sync_acked[key] = v
        if key[:1] == b"c":
            self.counter(key).weak = True

    def split(self) -> None:
        self.split_at = self._now()

    def healed(self) -> None:
        self.split_at = self._now()

    def forked(self, c: Counter, p: int) -> bool:
        """Whether a counter of p forked since its first incr (see the docstring)."""
        if self.split_at >= 0 or self.overlap_at.get(p, -1.0) >= c.born:
            c.forked = True
        return c.forked

    def counter(self, key: Key) -> Counter:
        c = self.counters.get(key)
        if c is None:
            c = self.counters[key] = Counter()
        return c

    def incremented(self, member: str, p: int, key: Key, result: int) -> None:
        """A primary applied an incr of 1: the value before it holds every incr
        acknowledged so far, unless the counter forked or lost its copies."""
        self.checks += 1
        c = self.counter(key)
        if c.born < 0:
            c.born = self._now()
        if any(m != member for m in self.primaries.get(p, {})):
            c.forked = True
        self.forked(c, p)
        if c.claimed and result - 1 < c.acked:
            self.fail(
                f"{member} p{p} {key!r}: incremented {result - 1} -> {result}, but "
                f"{c.acked} incrs were acknowledged: an acknowledged incr was lost"
            )

    def incr_answered(self, key: Key, result: int | None) -> None:
        """The client's word on an incr: acknowledged with its result, or unknown (None)."""
        c = self.counter(key)
        if result is None:
            c.unknown += 1
        else:
            c.acked += 1
            c.results.append(result)

    def counter_final(self, key: Key, p: int, value: int) -> None:
        """At the end: the counter is exact (see the module's docstring)."""
        c = self.counters[key]
        self.forked(c, p)
        if not c.claimed:
            return
        if not c.acked <= value <= c.acked + c.unknown:
            self.fail(
                f"counter {key!r}: final {value}, {c.acked} incrs acknowledged and "
                f"{c.unknown} unknown"
            )
        if len(set(c.results)) != len(c.results) or max(c.results, default=0) > value:
            dup = sorted({r for r in c.results if c.results.count(r) > 1})[:5]
            self.fail(
                f"counter {key!r}: acknowledged incrs returned {dup} twice or more than "
                f"the final {value}"
            )

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
        cleared = holds(p, CLEAR_KEY) or (0, 0)
        for k, v in want.items():
            if k != CLEAR_KEY and v <= cleared:
                continue  # removed by a clear this copy holds
            have = holds(p, k)
            if have is None or have < v:
                self.fail(
                    f"{member} p{p}: live at ({term}, {seq}) but holds {k!r} at {have}; "
                    f"its primary had {v} there"
                )
