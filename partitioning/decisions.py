"""What the rebalancer asks of its runtime, and what the runtime reports back.

A round of the rebalancer (rebalancer.py) is a conversation: every call to
`Rebalancer.begin` or `Rebalancer.step` returns one `Decision`, the runtime
carries it out (RPCs, installing a table) and passes the matching report to
the next `step`. The runtime never looks at protocol state; it only moves
tables and partitions where a decision says.

| decision   | the runtime                                               | reports          |
|------------|-----------------------------------------------------------|------------------|
| AskTables  | asks every member for its table, installs `newest_table`  | TablesAsked      |
| Publish    | installs the table, sends it to `to`                      | Published        |
| Resend     | sends the installed table again to `to`, one by one       | None             |
| Fill       | has each member follow its partitions from the source     | Filled           |
| Handoff    | has each source hand its partitions to the new primary    | HandedOff        |
| Note       | logs it                                                   | None             |

Every answer to a publish or a resend (the version the member holds after it)
goes to `Rebalancer.answered` as it comes in, whatever the decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NamedTuple

from partitioning.table import PartitionTable


class FillOrder(NamedTuple):
    """`member` copies `partitions` from `source`, their primary (snapshot plus live
    changes), and answers once it is live on each or has given up on some."""

    member: str
    source: str
    partitions: tuple[int, ...]


class HandoffOrder(NamedTuple):
    """`source`, primary of `partitions`, hands them to `to`, which holds a live copy."""

    source: str
    to: str
    partitions: tuple[int, ...]


class AskTables(NamedTuple):
    """This member has no table: ask the others for theirs and install the newest.
    Report whether every member answered (one that did not may hold a table)."""

    addresses: Mapping[str, str]


class Publish(NamedTuple):
    """Install `table` (with `addresses`), then send it to the members in `to`."""

    table: PartitionTable
    addresses: Mapping[str, str]
    to: tuple[str, ...]


class Resend(NamedTuple):
    """Send the installed table again to members whose last answer showed another
    version (a publish they missed)."""

    addresses: Mapping[str, str]
    to: tuple[str, ...]


class Fill(NamedTuple):
    """Run every order at once; report the partitions that did not become live."""

    addresses: Mapping[str, str]
    orders: tuple[FillOrder, ...]


class Handoff(NamedTuple):
    """Run every order at once; report the partitions that were not handed off.
    `confirm_epoch` is the epoch of the table that will show the new primaries
    (the next publish): a table older than it cannot undo a hand-off."""

    addresses: Mapping[str, str]
    orders: tuple[HandoffOrder, ...]
    confirm_epoch: int


class Note(NamedTuple):
    """Something an operator (or a bench reading the log) wants to know."""

    level: Literal["info", "warning"]
    event: str
    fields: Mapping[str, object]


Decision = AskTables | Publish | Resend | Fill | Handoff | Note


class TablesAsked(NamedTuple):
    everyone_answered: bool


class Published(NamedTuple):
    """The addresses the table went out with (member -> address, "" if unknown): a
    member seen later at another address needs the table again."""

    addresses: Mapping[str, str]


class Filled(NamedTuple):
    failed: frozenset[int]


class HandedOff(NamedTuple):
    failed: frozenset[int]


Report = TablesAsked | Published | Filled | HandedOff | None
