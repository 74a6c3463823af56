"""A front end's connection fed by hand: the member's CPU per command, without sockets.

`run` builds a real GridService and store (one member on its own, memory only),
opens one connection of a front end on a transport that drops what it is given,
feeds it the same bytes (a pipeline of requests) `reads` times and prints the CPU
time per command. Under `valgrind --tool=callgrind`, run at two counts, the
difference of the instructions over the commands between them is the member's
own cost per command, a figure the machine's load does not move
(docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


class Transport:
    """Enough of an asyncio transport for a connection fed by hand."""

    def write(self, data: bytes) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


def run(
    make_server: Callable[[Any, Any], Any],
    tests: list[tuple[str, bytes, int]],
    reads: int,
    prime: bytes = b"",
) -> None:
    """Feed each test's bytes (holding `n` commands) `reads` times to one connection of
    `make_server(service, config)`'s listener, after `prime` once."""
    from grid.config import Config
    from grid.member.server import GridService
    from grid.store import Store

    async def main() -> None:
        config = Config()
        service = GridService(Store(config, 1), config, "bench", "")
        server = make_server(service, config)
        conn = server.listener.factory(server.listener)
        conn.connection_made(Transport())
        if prime:
            conn.data_received(prime)
        for name, data, n in tests:
            started = time.process_time()
            for _ in range(reads):
                conn.data_received(data)
            spent = time.process_time() - started
            print(f"{name}: {spent / reads / n * 1e6:.2f} us of CPU a command")

    asyncio.run(main())
