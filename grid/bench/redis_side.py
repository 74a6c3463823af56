"""The reference: a real redis-server on loopback, driven by redis-py.

The benchmark starts its own redis-server on a free port with persistence
off (`--save "" --appendonly no`), so the comparison is memory against
memory, and kills it however the run ends (normal exit, error, Ctrl-C).
Clients do what a Python service would do with Redis: msgpack the value on
the way in and out, exactly as grid's default codec does on the grid side.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgpack
import redis
import redis.asyncio

from grid.bench.sides import ConcurrentSide, SyncSide
from grid.harness.cluster import free_port

REDIS_SERVER = "/usr/bin/redis-server"


def find_redis_server() -> str | None:
    """The redis-server binary: the Debian path first, then $PATH."""
    if Path(REDIS_SERVER).exists():
        return REDIS_SERVER
    return shutil.which("redis-server")


class RedisServer:
    """A throwaway redis-server process: memory only, loopback only, its own session."""

    def __init__(
        self, binary: str, extra_args: Sequence[str] = (), directory: str | None = None
    ) -> None:
        self.binary = binary
        self.port = free_port()
        # Later options win in redis-server's command line, so extra_args override the
        # memory-only defaults (the durability bench turns the AOF on).
        self.extra_args = list(extra_args)
        self._dir = directory or tempfile.mkdtemp(prefix="grid-bench-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def directory(self) -> str:
        return self._dir

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 10.0) -> RedisServer:
        cmd = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._dir,
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            *self.extra_args,
        ]
        log = open(Path(self._dir) / "redis.log", "ab")  # noqa: SIM115 - the child owns it
        with log:
            # A new session: Ctrl-C in the terminal reaches us, and we stop it in order.
            self.process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with code {self.process.returncode}: "
                        f"{self.log_tail()}"
                    )
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        return self
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server not answering on port {self.port}")
                time.sleep(0.05)
        finally:
            client.close()

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (Path(self._dir) / "redis.log").read_text(errors="replace")[-2000:]
        return ""

    def stop(self, remove_dir: bool = True) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if remove_dir:
            shutil.rmtree(self._dir, ignore_errors=True)


@contextlib.contextmanager
def running_redis(binary: str) -> Iterator[RedisServer]:
    server = RedisServer(binary)
    try:
        yield server.start()
    finally:
        server.stop()


class RedisBench:
    """redis-py clients (sync and asyncio) and the reference sides built on them."""

    def __init__(self, server: RedisServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop
        self.client = redis.Redis(port=server.port)
        self.aclient = redis.asyncio.Redis(port=server.port)

    def load(self, keys: list[str], value: bytes) -> None:
        """Store the same msgpack blob the grid side stores, under the same keys."""
        for j in range(0, len(keys), 1000):
            self.client.mset({k: value for k in keys[j : j + 1000]})

    def close(self) -> None:
        self.client.close()
        self.loop.run_until_complete(self.aclient.aclose())

    # ---- sides --------------------------------------------------------------------------------
    def seq_get(self, keys: list[str]) -> SyncSide:
        get, n, unpack = self.client.get, len(keys), msgpack.unpackb

        def op(i: int) -> int:
            unpack(get(keys[i % n]))
            return 1

        return SyncSide("redis-py GET", op, self.server.pid)

    def seq_set(self, keys: list[str], value: object) -> SyncSide:
        set_, n, pack = self.client.set, len(keys), msgpack.packb

        def op(i: int) -> int:
            set_(keys[i % n], pack(value))
            return 1

        return SyncSide("redis-py SET", op, self.server.pid)

    def pipeline_get(self, batches: list[list[str]]) -> SyncSide:
        client, n, unpack = self.client, len(batches), msgpack.unpackb

        def op(i: int) -> int:
            with client.pipeline(transaction=False) as p:
                for k in batches[i % n]:
                    p.get(k)
                values = p.execute()
            for v in values:
                unpack(v)
            return len(values)

        return SyncSide("pipeline 64 GET", op, self.server.pid)

    def pipeline_set(self, batches: list[list[str]], value: object) -> SyncSide:
        client, n, pack = self.client, len(batches), msgpack.packb

        def op(i: int) -> int:
            batch = batches[i % n]
            with client.pipeline(transaction=False) as p:
                for k in batch:
                    p.set(k, pack(value))
                p.execute()
            return len(batch)

        return SyncSide("pipeline 64 SET", op, self.server.pid)

    def mset(self, batches: list[list[str]], value: object) -> SyncSide:
        """A bulk load as a Redis user writes one: MSET of the whole batch."""
        client, n, pack = self.client, len(batches), msgpack.packb

        def op(i: int) -> int:
            batch = batches[i % n]
            client.mset({k: pack(value) for k in batch})
            return len(batch)

        return SyncSide(f"MSET {len(batches[0])}", op, self.server.pid)

    def concurrent_get(self, keys: list[str], concurrency: int) -> ConcurrentSide:
        get, n, unpack = self.aclient.get, len(keys), msgpack.unpackb

        async def op(i: int) -> None:
            unpack(await get(keys[i % n]))

        return ConcurrentSide(
            f"redis.asyncio GET x{concurrency}", self.loop, op, concurrency, self.server.pid
        )
