"""The memcached command table: a command's name to its handler, one module per family."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from grid.frontends.memcached.commands import admin, arith, meta, retrieval, storage
from grid.frontends.memcached.parser import Request
from grid.frontends.ops import Reply

if TYPE_CHECKING:
    from grid.frontends.memcached.server import MemcachedConnection

Handler = Callable[["MemcachedConnection", Request], Reply]
COMMANDS: dict[bytes, Handler] = {
    name: handler
    for module in (retrieval, storage, arith, admin, meta)
    for name, handler in module.COMMANDS.items()
}
