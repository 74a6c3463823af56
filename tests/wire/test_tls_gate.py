"""The TLS gate (grid/wire/tls_gate.py) on asyncio and on uvloop: concurrent clients all
get through (uvloop reads the ClientHello before the gate can hand the socket to TLS;
those bytes must reach it), and every refused handshake is counted and logged."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog

from grid.harness.certs import Authority
from grid.wire.tls_gate import gated

LOOPS = ["asyncio", "uvloop"]


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


def run_on(loop_name: str, main: Callable[[], object]) -> object:
    if loop_name == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.run(main())  # type: ignore[arg-type]
    return asyncio.run(main())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, ssl.SSLContext, Path]:
    folder = tmp_path_factory.mktemp("gate")
    ca = Authority(folder / "ca", "gate CA")
    pair = ca.issue("server")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pair.cert, pair.key)
    other = Authority(folder / "other", "another CA")
    return ca, server, Path(other.ca)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_concurrent_clients_get_through_and_refusals_are_logged(
    loop_name: str, certs: tuple[Authority, ssl.SSLContext, Path]
) -> None:
    ca, server_ctx, other_ca = certs
    refused: list[int] = []

    async def main() -> tuple[list[object], list[str]]:
        loop = asyncio.get_running_loop()
        factory = gated(Echo, server_ctx, 5.0, "test", lambda: refused.append(1))
        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        good = ssl.create_default_context(cafile=ca.ca)
        good.check_hostname = False
        stranger = ssl.create_default_context(cafile=str(other_ca))
        stranger.check_hostname = False

        async def one(ctx: ssl.SSLContext | None) -> object:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, ssl=ctx), 10
                )
                writer.write(b"ping")
                if ctx is None:
                    writer.write_eof()
                got = await asyncio.wait_for(reader.read(4), 10)
                writer.close()
                return got
            except (ssl.SSLError, OSError, TimeoutError) as e:
                return type(e).__name__

        with structlog.testing.capture_logs() as logs:
            results = await asyncio.gather(*(one(good) for _ in range(30)), one(stranger),
                                           one(None))  # fmt: skip
            for _ in range(200):  # the refusals are logged when the server sees them fail
                if len(refused) >= 2:
                    break
                await asyncio.sleep(0.02)
        server.close()
        return results, [e["event"] for e in logs]

    results, events = run_on(loop_name, main)  # type: ignore[misc]
    assert results[:30] == [b"ping"] * 30
    assert results[30] != b"ping" and results[31] != b"ping"
    assert len(refused) == 2 and events.count("TLS handshake refused") == 2
