"""Where to find the cluster: static seeds and a DNS name.

Why both: static seeds suit fixed fleets and local clusters; a DNS name that
resolves to every member (a Kubernetes headless service, a Consul DNS name,
round-robin A records) suits fleets whose addresses change.  Names are
resolved with the event loop's `getaddrinfo` (in a thread, so a slow
resolver never stalls probing), every address the name has is used, and the
result is deduplicated.  The runtime calls `resolve()` at start and again
periodically while the member has no peers (pods of a StatefulSet start
together, and the first answers often list nobody but ourselves).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence

from grid import logs
from grid.member.gossip.transport import join_addr, split_addr

log = logs.get("grid.member.gossip")


def parse_seeds(spec: str | Sequence[str]) -> list[str]:
    """host:port entries from a comma-separated string (or a list), blanks ignored."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return [s.strip() for s in items if s.strip()]


class Discovery:
    """Static seeds plus an optional DNS name, resolved to "ip:port" strings."""

    def __init__(self, seeds: Sequence[str], dns_name: str = "", default_port: int = 0) -> None:
        self.seeds = list(seeds)
        self.dns_name = dns_name.strip()
        self.default_port = default_port
        self.last: list[str] = []

    @property
    def configured(self) -> bool:
        return bool(self.seeds or self.dns_name)

    async def resolve(self) -> list[str]:
        """Every address of every seed and of the DNS name; failures are logged, not raised."""
        targets: list[tuple[str, int]] = []
        for seed in self.seeds:
            try:
                targets.append(split_addr(seed))
            except ValueError:
                log.warning("ignoring a seed that is not host:port", seed=seed)
        if self.dns_name:
            try:
                targets.append(split_addr(self.dns_name))
            except ValueError:  # no port: the members' gossip port is ours
                targets.append((self.dns_name, self.default_port))
        results = await asyncio.gather(*(self._lookup(h, p) for h, p in targets))
        out = list(dict.fromkeys(a for addrs in results for a in addrs))
        self.last = out
        return out

    async def _lookup(self, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except (OSError, UnicodeError) as e:
            log.warning("cannot resolve gossip address", host=host, error=str(e))
            return []
        return [join_addr(str(info[4][0]), int(info[4][1])) for info in infos]
