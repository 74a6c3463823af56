"""Users with their own passwords, on every port of a real member: the SDK (sync and
asyncio), gRPC through the CLI, RESP against a redis-server with the same ACL user, and
memcached's login against a real `memcached -Y` with the same pairs, byte for byte.

The member has the cluster token (members log in to each other with it) and one user,
alice; the token is the `default` user's password on the RESP and memcached ports.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import grid
from grid.harness.cluster import LocalCluster, free_port
from grid.wire.security import hash_password
from tests import needs
from tests.integration.memcached_support import MEMCACHED
from tests.integration.resp_support import RawResp, redis_server
from tests.integration.support import reference_server

TOKEN = "cluster-token"
USER, PASSWORD = "alice", "alice-password-1"


@pytest.fixture(scope="module")
def member(no_grid_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    cluster = LocalCluster(
        1, resp=True, memcached=True, log_dir=tmp_path_factory.mktemp("logins"),
        member_args=["--auth-token", TOKEN, "--users", f"{USER}={hash_password(PASSWORD)}"],
    )  # fmt: skip
    cluster.start()
    try:
        yield cluster.members[0]
    finally:
        cluster.stop(grace=5)


def test_a_user_logs_in_with_the_sdk_and_a_wrong_password_is_refused(member: object) -> None:
    address = member.address  # type: ignore[attr-defined]
    with grid.Client(address, user=USER, password=PASSWORD) as client:
        client.map("m").put("k", 1)
        assert client.map("m").get("k") == 1
    for user, password in ((USER, "guess"), ("mallory", PASSWORD)):
        refused = grid.Client(address, user=user, password=password, timeout=5)
        with refused, pytest.raises(grid.AuthenticationFailed, match="wrong user or password"):
            refused.map("m").get("k")

    async def run() -> None:
        async with grid.AsyncClient(address, user=USER, password=PASSWORD) as client:
            assert await client.map("m").get("k") == 1

    asyncio.run(run())


def test_the_cli_logs_in_from_grid_user_and_grid_password(member: object) -> None:
    """`grid get` is a data-plane client, `grid status` calls gRPC (HTTP Basic)."""
    address = member.address  # type: ignore[attr-defined]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRID_")}
    cli = [sys.executable, "-m", "grid"]
    env_ok = {**env, "GRID_USER": USER, "GRID_PASSWORD": PASSWORD}
    for args in (["put", "cli-key", "7", "-a", address], ["get", "cli-key", "-a", address],
                 ["status", "-a", address]):  # fmt: skip
        done = subprocess.run(cli + args, env=env_ok, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    bad = {**env, "GRID_USER": USER, "GRID_PASSWORD": "guess"}
    done = subprocess.run([*cli, "status", "-a", address], env=bad, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode != 0 and "wrong user or password" in done.stderr


RESP_CASES = [
    ("GET", "k"),
    ("AUTH", USER, "guess"),
    ("AUTH", "mallory", PASSWORD),
    ("GET", "k"),
    ("AUTH", USER, PASSWORD),
    ("SET", "k", "v"),
    ("GET", "k"),
    ("AUTH", "default", TOKEN),
    ("HELLO", "2", "AUTH", USER, "guess"),
    ("AUTH", TOKEN),
]


def test_resp_users_log_in_as_redis_acl_users(member: object) -> None:
    needs.command("redis-server")
    acl = ["--requirepass", TOKEN, "--user", USER, "on", f">{PASSWORD}", "~*", "+@all"]
    with redis_server("--databases", "1", *acl) as redis:
        sides = [RawResp(member.resp_address), RawResp(redis)]  # type: ignore[attr-defined]
        try:
            for cmd in RESP_CASES:
                ours, theirs = (side.call(*cmd) for side in sides)
                assert ours == theirs, f"{cmd}: grid {ours!r}, redis {theirs!r}"
        finally:
            for side in sides:
                side.close()


LOGIN = f"{USER} {PASSWORD}".encode()
MEMCACHED_STEPS = [
    b"get foo\r\n",
    b"version\r\n",
    b"quit\r\n",
    b"add x 0 0 13\r\n",
    b"set x 0 0 %d\r\n%s guess\r\n" % (len(USER) + 6, USER.encode()),
    b"set x 0 0 5\r\nalice\r\n",
    b"set x 0 0 13\r\ndefault guess\r\n",
    b"set x 0 0 2\r\nabcd",
    b"\r\n",
    b"set x 0 0 %d noreply\r\n%s\r\n" % (len(LOGIN), LOGIN),
    b"set foo 0 0 1\r\na\r\n",
    b"get foo\r\n",
]


def _transcript(address: str, steps: list[bytes]) -> bytes:
    """Each step sent after the answer to the one before: memcached reads one command per
    read while a connection is not logged in, so a pipelined login would stall it."""
    host, port = address.rsplit(":", 1)
    out = b""
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        for step in steps:
            sock.sendall(step)
            out += _reply(sock)
    return out


def _reply(sock: socket.socket) -> bytes:
    """One step's answer: lines until a quiet moment (every answer here is whole lines)."""
    data = b""
    sock.settimeout(5)
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            return data + b"<closed>"
        data += chunk
        sock.settimeout(0.2)
        try:
            while chunk := sock.recv(4096):
                data += chunk
        except TimeoutError:
            pass
    return data


def test_memcached_login_as_memcached_dash_y(member: object) -> None:
    """Before a login every command is `CLIENT_ERROR unauthenticated`; the login is a `set`
    of `user password`, checked against alice's password or the token for `default`."""
    needs.command("memcached")
    # memcached drops to `nobody` before it reads the file: outside pytest's 0700 tmp
    folder = tempfile.TemporaryDirectory(prefix="grid-memcached-auth-")
    Path(folder.name).chmod(0o755)
    auth_file = Path(folder.name) / "auth"
    auth_file.write_text(f"{USER}:{PASSWORD}\ndefault:{TOKEN}\n")
    auth_file.chmod(0o644)
    port = free_port()
    argv = [MEMCACHED, "-p", str(port), "-l", "127.0.0.1", "-U", "0", "-u", "nobody",
            "-Y", str(auth_file)]  # fmt: skip
    with folder, reference_server("memcached", argv, port) as real:
        ours = _transcript(member.memcached_address, MEMCACHED_STEPS)  # type: ignore[attr-defined]
        theirs = _transcript(real, MEMCACHED_STEPS)
        assert ours == theirs
        assert ours.count(b"STORED\r\n") == 2 and b"VALUE foo 0 1\r\na\r\n" in ours
        token_login = [b"set t 0 0 %d\r\ndefault %s\r\n" % (len(TOKEN) + 8, TOKEN.encode()),
                       b"get foo\r\n"]  # fmt: skip
        ours = _transcript(member.memcached_address, token_login)  # type: ignore[attr-defined]
        assert ours == _transcript(real, token_login)
        assert ours.startswith(b"STORED\r\n")


def test_pymemcache_logs_in_with_its_first_set(member: object) -> None:
    """As with `memcached -Y`, a client's first `set` of `user password` is the login."""
    from pymemcache.client.base import Client as Memcache

    host, port = member.memcached_address.rsplit(":", 1)  # type: ignore[attr-defined]
    client = Memcache((host, int(port)), timeout=5)
    try:
        assert client.set("login", f"{USER} {PASSWORD}".encode(), noreply=False)
        assert client.set("k", b"v", noreply=False)
        assert client.get("k") == b"v"
    finally:
        client.close()
