"""The command table: each RESP command's name, arity, flags and keys, and its handler.

Arity is Redis's: N > 0 means exactly N arguments (the name counts), -N at least
N. The table is checked before a handler runs, so handlers can index their
arguments freely, and it is what COMMAND, COMMAND COUNT and COMMAND INFO answer
(redis-cli reads it at start). Commands with subcommands (CLIENT, CONFIG, COMMAND)
have a table of their own, as in Redis 7.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from grid.frontends.ops import Reply

if TYPE_CHECKING:
    from grid.frontends.resp.server import RespConnection

Handler = Callable[["RespConnection", list[bytes]], Reply]


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # lower case, as Redis names it in errors ('get', 'client|setname')
    arity: int
    flags: tuple[str, ...]
    first_key: int
    last_key: int
    step: int
    handler: Handler
    group: str = "generic"
    subcommands: dict[str, Command] = field(default_factory=dict)

    def arity_ok(self, argc: int) -> bool:
        return argc == self.arity if self.arity > 0 else argc >= -self.arity


def command(
    name: str,
    arity: int,
    flags: str,
    keys: tuple[int, int, int],
    group: str,
    handler: Handler,
    subcommands: list[Command] | None = None,
) -> Command:
    """A table entry; `flags` as Redis spells them, space-separated."""
    return Command(
        name,
        arity,
        tuple(flags.split()),
        *keys,
        handler,  # type: ignore[arg-type]
        group,
        {c.name.split("|")[1]: c for c in subcommands or ()},
    )


NO_KEYS = (0, 0, 0)
ONE_KEY = (1, 1, 1)
ALL_KEYS = (1, -1, 1)
