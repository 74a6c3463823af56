"""What a run checks, while it runs and at the end.

During the run every check is made at the moment the event it is about happens
(a record stored, a chunk applied, a term started, a write stamped), so a
violation stops the run at the first bad step with the virtual time, and the seed
replays up to it:

- **LWW never regresses**: every change a store accepts has a version newer than
  the one it replaces (`Store.apply` is the one path; this checks its result).
- **No invented versions**: every version any store ever holds was stamped by some
  primary for that key (a record is never corrupted or mixed up on the way).
- **A follower applies each change once and in order within its lineage**: a
  shadow of what the copy has applied, kept apart from `FollowerLog`, must agree
  with its verdicts: mutations start right after the last applied seq, in the term
  the copy is at (the model's MUT chunks carry the primary's term for this check
  only); a catch-up without a snapshot continues exactly where the copy stands.
- **Terms are fresh**: a member that becomes primary starts a term nobody used.
- **One term per primary**: while a member is primary of a partition, every
  change it appends is in that partition's one current term, at the next seq.
- **HLC**: a member's stamps strictly increase, and a primary's new stamp beats the
  version it overwrites (the clock observed every version it stored).

At the end (after heal, once quiet; see `World.final_checks`):

- membership converged and every running member computes the same table;
- for every partition, every replica the table names holds an identical copy
  (same records; equal `replication.digest` roots);
- no member holds a copy of a partition it has no role for (hand-offs drained);
- every key's value is the LWW winner of every version any store ever held
  (persisted mode: nothing a store held is lost, so nothing may be missing), or,
  with crashes that lose memory, of every version held when the faults ended;
- persisted mode: every acknowledged write is present or superseded by an
  LWW-newer version of its key.
"""

from __future__ import annotations

from collections.abc import Callable

from replication.hlc import Version

Key = bytes
VersionT = tuple[int, int]


class InvariantViolation(AssertionError):
    """A step broke an invariant; the message says which, where and when."""


class Invariants:
    """Shadow state and the checks above; `fail` raises at the first violation."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self.written: dict[tuple[Key, int, int], bytes | None] = {}
        """(key, ts, member) -> value of every version a primary stamped."""
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
        self.shadow: dict[tuple[str, int], tuple[int, int] | None] = {}
        """(member, p) -> (term, seq) applied by the follower copy; None mid-snapshot."""
        self.last_stamp: dict[str, int] = {}
        self.checks = 0

    def fail(self, what: str) -> None:
        raise InvariantViolation(f"t={self._now():.6f}s: {what}")

    # ---- stores ---------------------------------------------------------------------------
    def stored(self, member: str, p: int, key: Key, old: tuple | None, new: tuple) -> None:
        self.checks += 1
        v = (new[1], new[2])
        if old is not None and v <= (old[1], old[2]):
            self.fail(f"{member} p{p} {key!r}: version regressed {old[1:]} -> {v}")
        w = (key, v[0], v[1])
        if w not in self.written or self.written[w] != new[0]:
            self.fail(f"{member} p{p} {key!r}: holds {new} that no primary stamped")
        if v > self.ever.get(key, (0, 0)):
            self.ever[key] = v
        if v > self.since_mark.get(key, (0, 0)):
            self.since_mark[key] = v

    def mark(self, stores: list) -> None:
        """Start `since_mark` from what the stores hold now (the faults just ended)."""
        self.since_mark = {}
        for store in stores:
            for part in store.parts.values():
                for key, (_, ts, member) in part.items():
                    if (ts, member) > self.since_mark.get(key, (0, 0)):
                        self.since_mark[key] = (ts, member)

    # ---- primaries ------------------------------------------------------------------------
    def became_primary(self, member: str, p: int, term: int, seq: int) -> None:
        self.checks += 1
        if term in self.terms:
            self.fail(f"{member} p{p}: term {term} was used before")
        self.terms.add(term)
        self.primary_term[(member, p)] = (term, seq)

    def stopped_primary(self, member: str, p: int) -> None:
        self.primary_term.pop((member, p), None)

    def member_gone(self, member: str) -> None:
        """A crash: its logs, terms and follower positions are gone with the process."""
        for d in (self.primary_term, self.shadow):
            for k in [k for k in d if k[0] == member]:
                del d[k]
        self.last_stamp.pop(member, None)

    def stamped(
        self, member: str, p: int, key: Key, value: bytes | None, v: Version, old: tuple | None
    ) -> None:
        self.checks += 1
        last = self.last_stamp.get(member, 0)
        if v.ts <= last:
            self.fail(f"{member}: HLC stamp {v.ts} not above its previous {last}")
        self.last_stamp[member] = v.ts
        if old is not None and (v.ts, v.member) <= (old[1], old[2]):
            self.fail(f"{member} p{p} {key!r}: new stamp {tuple(v)} loses to stored {old[1:]}")
        self.written[(key, v.ts, v.member)] = value

    def appended(self, member: str, p: int, term: int, seq: int) -> None:
        self.checks += 1
        cur = self.primary_term.get((member, p))
        if cur is None:
            self.fail(f"{member} p{p}: appended seq {seq} while not primary")
        elif cur[0] != term or seq != cur[1] + 1:
            self.fail(f"{member} p{p}: appended ({term}, {seq}) after {cur}")
        self.primary_term[(member, p)] = (term, seq)

    def acknowledged(self, key: Key, ts: int, member: int) -> None:
        self.acked_count += 1
        if (ts, member) > self.acked.get(key, (0, 0)):
            self.acked[key] = (ts, member)

    # ---- followers ------------------------------------------------------------------------
    def position(self, member: str, p: int, term: int, seq: int) -> None:
        """The copy's (term, seq) was set outright (new, reset for a snapshot, demoted)."""
        self.shadow[(member, p)] = (term, seq)

    def snapshot_begin(self, member: str, p: int) -> None:
        self.shadow[(member, p)] = None

    def live(self, member: str, p: int, term: int, seq: int, after_snapshot: bool) -> None:
        self.checks += 1
        cur = self.shadow.get((member, p), (0, 0))
        if after_snapshot:
            if cur is not None:
                self.fail(f"{member} p{p}: snapshot end ({term}, {seq}) without its begin")
        elif cur != (term, seq):
            self.fail(f"{member} p{p}: caught up at ({term}, {seq}) but holds {cur}")
        self.shadow[(member, p)] = (term, seq)

    def mutations(self, member: str, p: int, term: int, first: int, last: int) -> None:
        """Changes first..last (after the skip) of the primary's `term` are being applied."""
        self.checks += 1
        cur = self.shadow.get((member, p))
        if cur is None:
            self.fail(f"{member} p{p}: mutations {first}..{last} applied mid-snapshot")
        elif cur[0] != term:
            self.fail(f"{member} p{p}: mutations of term {term} applied on lineage {cur[0]}")
        elif first != cur[1] + 1 or last < first:
            self.fail(f"{member} p{p}: applied {first}..{last} after seq {cur[1]}")
        else:
            self.shadow[(member, p)] = (term, last)
