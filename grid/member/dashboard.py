"""The web dashboard (`dashboard_port`): one page any member serves, about the whole cluster.

What it shows: the members as this one's membership sees them (state, address) with
each one's partitions (primary, backup), entries, memory and replication lag; every
map's hit ratio over the cluster; cluster throughput and batch latency (p50, p99) over
the last SAMPLES x SAMPLE_S seconds; the last events (members joining, suspected,
dead or left; table versions; partitions moving).

How: while the dashboard is on, the member samples the cluster every SAMPLE_S seconds:
its own Stats and every live peer's (gRPC Stats over the member's own peer connections,
so TLS and the token apply), concurrently, each bounded by SAMPLE_TIMEOUT_S. Rates and
latency percentiles are differences between samples (operations, and the batch latency
histograms' counts summed over members, maps and ops). The page is static HTML with its
own script (no build step, nothing fetched from the internet) that polls
`/api/cluster` every two seconds and draws with SVG.

The HTTP server is deliberately small (asyncio streams, GET only, one request per
connection, headers bounded at MAX_REQUEST_BYTES and REQUEST_TIMEOUT_S): it serves two
paths to an operator's browser, nothing more. With `auth_token` set it asks for HTTP
Basic authentication: one of the member's `users` and its password, or the token as the
password (any user name).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import ssl
import time
from collections import deque
from importlib import resources
from typing import Any

from grid import logs
from grid.wire.security import Credentials
from grid.wire.tls_gate import gated
from proto import grid_pb2 as pb

log = logs.get("grid.member.dashboard")

SAMPLE_S = 2.0
SAMPLES = 300  # ten minutes
SAMPLE_TIMEOUT_S = 1.5
EVENTS = 100
MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT_S = 5.0


class Dashboard:
    def __init__(self, member: Any) -> None:
        self.member = member
        self.samples: deque[dict[str, Any]] = deque(maxlen=SAMPLES)
        self.events: deque[tuple[float, str]] = deque(maxlen=EVENTS)
        self.latest: dict[str, pb.StatsReply] = {}
        self._server: asyncio.Server | None = None
        self._sampler: asyncio.Task[None] | None = None
        self.port = 0
        self._page = resources.files("grid.member").joinpath("dashboard.html").read_bytes()

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        try:
            loop = asyncio.get_running_loop()

            def stream() -> asyncio.Protocol:
                return asyncio.StreamReaderProtocol(asyncio.StreamReader(), self._serve)

            factory = gated(stream, tls, REQUEST_TIMEOUT_S, "dashboard")
            self._server = await loop.create_server(factory, host, port, reuse_address=True)
        except OSError as e:
            raise OSError(
                f"cannot listen on {host}:{port} for the dashboard ({e.strerror or e}); "
                "set dashboard_port to a free port"
            ) from e
        self.port = self._server.sockets[0].getsockname()[1]
        self.member.member_listeners.append(self.on_member)  # before membership starts
        self._sampler = asyncio.create_task(self._sample_loop(), name="grid-dashboard")
        log.info("dashboard", address=f"{'https' if tls else 'http'}://{host}:{self.port}/")
        return self.port

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def on_member(self, kind: str, member: Any) -> None:
        self.events.append((time.time(), f"{getattr(member, 'name', member)} {kind}"))

    # ---- sampling ----------------------------------------------------------------------------
    async def _sample_loop(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception:  # a bad round costs its sample, not the dashboard
                log.exception("dashboard sample failed")
            await asyncio.sleep(SAMPLE_S)

    async def sample(self) -> None:
        member = self.member
        own = member.service.stats_reply()
        peers = []
        if member.gossip is not None and member.cluster is not None:
            peers = [
                m
                for m in member.gossip.members()
                if m.name != member.name and m.state in ("alive", "suspect") and m.address
            ]

        async def ask(address: str) -> pb.StatsReply | None:
            try:
                return await member.cluster.peers.stats(address, SAMPLE_TIMEOUT_S)
            except Exception:
                return None

        answers = await asyncio.gather(*(ask(m.address) for m in peers))
        stats = {own.member: own} | {s.member: s for s in answers if s is not None}
        self._note_changes(stats)
        self.latest = stats
        self.samples.append(
            {
                "t": time.time(),
                "ops": sum(s.operations for s in stats.values()),
                "latency": _merged_counts(stats.values()),
                "bounds": list(own.latency_bounds_s),
            }
        )

    def _note_changes(self, stats: dict[str, pb.StatsReply]) -> None:
        now = time.time()
        before = self.latest
        for name, s in stats.items():
            old = before.get(name)
            if old is None:
                continue
            if s.migration.table_version != old.migration.table_version and s.migration.coordinator:
                self.events.append((now, f"table version {s.migration.table_version} "
                                         f"published by {name}"))  # fmt: skip
            moved = s.migration.primaries - old.migration.primaries
            if moved:
                self.events.append(
                    (now, f"{name}: {old.migration.primaries} -> {s.migration.primaries} primaries")
                )

    # ---- what the page reads -----------------------------------------------------------------
    def view(self) -> dict[str, Any]:
        member = self.member
        states = {m.name: m for m in member.gossip.members()} if member.gossip else {}
        members = []
        for name in sorted(set(states) | set(self.latest)):
            s = self.latest.get(name)
            m = states.get(name)
            members.append({
                "name": name,
                "state": m.state if m else "alive",
                "address": m.address if m else (s.address if s else ""),
                "primaries": s.migration.primaries if s else None,
                "backups": s.migration.backups if s else None,
                "entries": s.total.entries if s else None,
                "memory_bytes": s.total.bytes if s else None,
                "lag_changes": s.migration.lag_changes_total if s else None,
                "coordinator": bool(s and s.migration.coordinator),
            })  # fmt: skip
        maps: dict[str, list[int]] = {}
        for s in self.latest.values():
            for m in s.maps:
                hm = maps.setdefault(m.name, [0, 0, 0])
                hm[0] += m.hits
                hm[1] += m.misses
                hm[2] += m.entries
        return {
            "member": member.name,
            "now": time.time(),
            "members": members,
            "maps": [
                {
                    "name": n,
                    "hits": h,
                    "misses": mi,
                    "entries": e,
                    "hit_ratio": h / (h + mi) if h + mi else None,
                }
                for n, (h, mi, e) in sorted(maps.items())
            ],
            "series": _series(list(self.samples)),
            "events": [{"t": t, "text": text} for t, text in reversed(self.events)],
        }

    # ---- HTTP --------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.close()
            return
        try:
            status, ctype, body, extra = self._answer(head[:MAX_REQUEST_BYTES])
        except Exception as e:  # a bug in a view costs its request only
            log.exception("dashboard request failed")
            status, ctype, extra = "500 Internal Server Error", "text/plain", ""
            body = str(e).encode()
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"Cache-Control: no-store\r\nConnection: close\r\n{extra}\r\n".encode()
            + body
        )
        try:
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    def _answer(self, head: bytes) -> tuple[str, str, bytes, str]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET only\n", "Allow: GET\r\n"
        logins = self.member.config.credentials()
        if logins.required and not _basic_ok(lines[1:], logins):
            return ("401 Unauthorized", "text/plain",
                    b"log in as a user of the cluster, or with its auth_token as the password\n",
                    'WWW-Authenticate: Basic realm="grid"\r\n')  # fmt: skip
        path = parts[1].split("?", 1)[0]
        if path == "/":
            return "200 OK", "text/html; charset=utf-8", self._page, ""
        if path == "/api/cluster":
            return "200 OK", "application/json", json.dumps(self.view()).encode(), ""
        return "404 Not Found", "text/plain", b"not found\n", ""


def _basic_ok(headers: list[str], logins: Credentials) -> bool:
    """HTTP Basic: a user's name and password, or any name with the cluster token (a
    browser asks for both; the token alone has no name)."""
    for line in headers:
        name, _, value = line.partition(":")
        if name.strip().lower() == "authorization":
            scheme, _, encoded = value.strip().partition(" ")
            if scheme.lower() != "basic":
                return False
            try:
                user, _, password = base64.b64decode(encoded).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            secret = password.encode()
            return not logins.check(user, secret) or not logins.check("", secret)
    return False


def _merged_counts(stats: Any) -> list[int]:
    total: list[int] = []
    for s in stats:
        for series in s.latency:
            if len(total) < len(series.counts):
                total.extend([0] * (len(series.counts) - len(total)))
            for i, n in enumerate(series.counts):
                total[i] += n
    return total


def _series(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per interval between samples: ops/s and batch latency p50/p99 in ms."""
    out = []
    for a, b in itertools.pairwise(samples):
        dt = b["t"] - a["t"]
        if dt <= 0:
            continue
        ca, cb = a["latency"], b["latency"]
        delta = [cb[i] - (ca[i] if i < len(ca) else 0) for i in range(len(cb))]
        bounds = b["bounds"]
        out.append({
            "t": b["t"],
            "ops_per_s": max(0.0, (b["ops"] - a["ops"]) / dt),
            "p50_ms": _quantile(delta, bounds, 0.5),
            "p99_ms": _quantile(delta, bounds, 0.99),
        })  # fmt: skip
    return out


def _quantile(counts: list[int], bounds: list[float], q: float) -> float | None:
    """The upper bound (ms) of the bucket holding the q-quantile; None without batches."""
    total = sum(c for c in counts if c > 0)
    if total <= 0:
        return None
    running = 0
    for i, n in enumerate(counts):
        running += max(0, n)
        if running >= q * total:
            return bounds[i] * 1000 if i < len(bounds) else bounds[-1] * 1000 * 2
    return None
