"""The `grid` command line against real member processes.

`grid node` runs as a subprocess (through LocalCluster, which starts
`python -m grid node`, or directly when the test expects it to fail); the
client commands run as subprocesses too and are checked by exit code and
output, and against what the SDK sees.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import grid
from grid.harness.cluster import LocalCluster, MemberProcess
from proto import grid_pb2 as pb
from tests.conftest import Spawn
from tests.integration.support import assert_member_healthy, execute, run_grid

pytestmark = pytest.mark.integration


def status_json(*addresses: str) -> list[dict[str, Any]]:
    args = [a for address in addresses for a in ("-a", address)]
    p = run_grid("status", "--json", *args)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


# ---- configuration precedence --------------------------------------------------------------------
def test_config_precedence_flag_env_file_default(spawn: Spawn, tmp_path: Path) -> None:
    """flag beats GRID_* env beats the TOML file beats the default, per option."""
    config = tmp_path / "grid.toml"
    config.write_text(
        '[member]\nmax_memory = "1MB"\neviction_policy = "lfu"\nmax_batch_ops = 500\n'
    )
    default = spawn()
    from_file = spawn("--config", str(config))
    env_over_file = spawn(env={"GRID_CONFIG": str(config), "GRID_MAX_MEMORY": "2MB"})
    flag_over_env = spawn(
        "--config",
        str(config),
        "--max-memory",
        "3MB",
        env={"GRID_MAX_MEMORY": "2MB", "GRID_EVICTION_POLICY": "random"},
    )
    clusters = (default, from_file, env_over_file, flag_over_env)
    stats = status_json(*(c.addresses[0] for c in clusters))
    got = [(s["max_memory"], s["eviction_policy"]) for s in stats]
    assert got == [
        (0, "lru"),  # defaults
        (1_000_000, "lfu"),  # file
        (2_000_000, "lfu"),  # env beats file (which came from GRID_CONFIG)
        (3_000_000, "random"),  # flag beats env; env beats file
    ]
    assert [s["address"] for s in stats] == [c.addresses[0] for c in clusters]
    # max_batch_ops from the file is in force too.
    ops = [pb.Op(code=pb.SIZE, map="m")] * 501
    assert execute(from_file.addresses[0], ops).status == pb.TOO_LARGE
    assert execute(default.addresses[0], ops).status == pb.OK


# ---- signals -------------------------------------------------------------------------------------
def _stop_with(cluster: LocalCluster, sig: signal.Signals) -> tuple[int, float, MemberProcess]:
    member = cluster.members[0]
    t0 = time.monotonic()
    cluster.kill(member, sig)
    rc = member.process.wait(15)
    return rc, time.monotonic() - t0, member


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_member_promptly(spawn: Spawn, sig: signal.Signals) -> None:
    """SIGTERM/SIGINT: exit code 0 within 3 s, and the log says "member stopped"."""
    rc, elapsed, member = _stop_with(spawn(), sig)
    assert rc == 0
    assert elapsed < 3, f"took {elapsed:.1f}s"
    events = [json.loads(line) for line in member.log_path.read_text().splitlines()]
    names = [e.get("event") for e in events]
    assert "member stopping" in names and names[-1] == "member stopped", names


def test_sigterm_with_idle_client_stops_promptly(spawn: Spawn) -> None:
    """A connected but idle SDK client (its stream open, nothing in flight) must not hold a
    member's shutdown for the whole shutdown_grace_s (5 s by default)."""
    cluster = spawn()
    with grid.Client(cluster.addresses[0]) as client:
        client.map("m").put("k", 1)
        rc, elapsed, _ = _stop_with(cluster, signal.SIGTERM)
    assert rc == 0
    assert elapsed < 3, f"idle client held shutdown for {elapsed:.1f}s"


# ---- data commands -------------------------------------------------------------------------------
def test_put_get_del_incr(address: str, map_name: str, client: grid.Client) -> None:
    """put/get/del/incr: output, exit codes, and the SDK sees the same data."""
    a = ("-a", address, "-m", map_name)

    def ok(*args: str, env: dict[str, str] | None = None) -> str:
        p = run_grid(*args, env=env)
        assert p.returncode == 0, (args, p.stdout, p.stderr)
        return p.stdout.strip()

    assert ok("put", "user", '{"name": "Ada", "n": 1}', *a) == "OK"
    assert json.loads(ok("get", "user", *a)) == {"name": "Ada", "n": 1}
    assert ok("put", "greeting", "hello world", "--ttl", "100", *a) == "OK"
    assert ok("get", "greeting", *a) == "hello world"
    m = client.map(map_name)
    assert m.get("user") == {"name": "Ada", "n": 1}
    assert 90 < (m.ttl("greeting") or 0) <= 100

    missing = run_grid("get", "nope", *a)
    assert missing.returncode == 1
    assert missing.stdout == "" and "(not found)" in missing.stderr

    assert ok("incr", "hits", *a) == "1"
    assert ok("incr", "hits", "--by", "5", *a) == "6"
    assert m.get("hits") == 6
    bad = run_grid("incr", "greeting", *a)
    assert bad.returncode == 1
    assert "INVALID_ARGUMENT" in bad.stderr and "not an integer" in bad.stderr

    assert ok("del", "user", *a) == "1"
    assert ok("del", "user", *a) == "0"
    assert run_grid("get", "user", *a).returncode == 1
    assert m.get("user") is None
    # GRID_ADDRESS stands in for --address.
    assert ok("get", "greeting", "-m", map_name, env={"GRID_ADDRESS": address}) == "hello world"


def test_client_command_against_no_member(tmp_path: Path) -> None:
    """No member at the address: exit 1 with UNAVAILABLE, within the --timeout bound."""
    from grid.harness.cluster import free_port

    t0 = time.monotonic()
    p = run_grid("get", "k", "-a", f"127.0.0.1:{free_port()}", "--timeout", "0.5")
    assert p.returncode == 1
    assert "UNAVAILABLE" in p.stderr
    assert time.monotonic() - t0 < 10


def test_status_prints_tables(address: str, client: grid.Client, map_name: str) -> None:
    """`grid status` prints the member table and the maps table."""
    client.map(map_name).put_many({"a": 1, "b": 2})
    p = run_grid("status", "-a", address)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "grid members" in out and "maps" in out
    assert "member-1" in out and address in out
    assert map_name[:20] in out
    for column in ("entries", "hit ratio", "rejected", "evictions"):
        assert column in out
    client.map(map_name).delete("a")  # a tombstone: shown in the anti-entropy table
    out = run_grid("status", "-a", address).stdout
    assert "anti-entropy" in out and "tombstones" in out and "repaired" in out
    row = next(line for line in out.split("anti-entropy", 1)[1].splitlines() if "member-1" in line)
    cells = [c.strip() for c in row.split("│") if c.strip()]
    assert int(cells[-2].replace(",", "")) >= 1, row  # tombstones (then collected)


# ---- refusing to start ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "env", "toml", "needles"),
    [
        (["--max-memory", "lots"], {}, None, ["max_memory", "not a size"]),
        (["--max-message-bytes", "1KiB"], {}, None, ["max_message_bytes must exceed"]),
        ([], {"GRID_PORT": "abc"}, None, ["port", "abc"]),
        ([], {"GRID_EVICTION_POLICY": "bogus"}, None, ["eviction_policy must be one of"]),
        ([], {}, "max_memory = 1\ncolour = 'blue'\n", ["unknown option", "colour"]),
        ([], {}, "max_memory = = 1\n", ["not valid TOML"]),
        (["--config", "/nonexistent/grid.toml"], {}, None, ["cannot read config file"]),
    ],
    ids=[
        "bad-size",
        "message-vs-value",
        "env-port",
        "env-policy",
        "toml-unknown",
        "toml-syntax",
        "no-file",
    ],
)
def test_bad_config_exits_2_with_clear_message(
    tmp_path: Path, args: list[str], env: dict[str, str], toml: str | None, needles: list[str]
) -> None:
    """A bad option value exits 2 with "configuration error" and a message naming it."""
    if toml is not None:
        path = tmp_path / "bad.toml"
        path.write_text(toml)
        args = [*args, "--config", str(path)]
    port = [] if "GRID_PORT" in env else ["--port", "0"]  # a flag would beat GRID_PORT
    p = run_grid("node", *port, *args, env=env, timeout=15)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "configuration error" in p.stderr
    for needle in needles:
        assert needle in p.stderr, p.stderr


def test_bad_choice_flag_exits_2() -> None:
    """An invalid --eviction-policy is refused by the argument parser (exit 2) listing choices."""
    p = run_grid("node", "--eviction-policy", "bogus")
    assert p.returncode == 2
    assert "invalid choice: 'bogus'" in p.stderr and "lfu" in p.stderr


def test_port_in_use_exits_nonzero(address: str) -> None:
    """A second member on a busy port exits non-zero, saying it cannot bind; the first goes on."""
    host, port = address.rsplit(":", 1)
    t0 = time.monotonic()
    p = run_grid("node", "--host", host, "--port", port, "--log-format", "json")
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]  # grid's own message comes after grpc's log line
    assert last.startswith("grid node:") and f"{host}:{port}" in last and "in use" in last, last
    assert time.monotonic() - t0 < 20
    assert_member_healthy(address)


def test_health_exit_code_is_the_probe_answer(address: str) -> None:
    """`grid health` (the image's HEALTHCHECK): 0 and SERVING from a member, for the
    member and the Grid service; 1 with the reason where nothing serves."""
    for service in ("", "grid.v1.Grid"):
        p = run_grid("health", "-a", address, "--service", service)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == f"{address}: SERVING"
    p = run_grid("health", "-a", "127.0.0.1:1", "--timeout", "1")
    assert p.returncode == 1
    assert "127.0.0.1:1: UNAVAILABLE" in p.stderr


def test_cluster_up_serves_resp_and_memcached_until_ctrl_c(no_grid_env: None) -> None:
    """`grid cluster up --resp --memcached`: redis-py and pymemcache reach the members on
    base + 3000 and base + 4000; Ctrl-C stops them all and the ports close."""
    import os
    import socket
    import subprocess
    import sys

    import redis
    from pymemcache.client.base import Client as Memcache

    from grid.harness.cluster import _ephemeral_range, free_port
    from tests.integration.support import wait_until

    low, _ = _ephemeral_range()
    base = next(p for p in (free_port() for _ in range(100)) if p + 4000 < low - 10)
    for offset in (1, 1000, 1001, 2000, 2001, 3000, 3001, 4000, 4001):
        with socket.socket() as s:  # every port the two members will bind is free now
            s.bind(("127.0.0.1", base + offset - 1))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRID_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "grid", "cluster", "up", "-n", "2", "--base-port", str(base),
         "--resp", "--memcached"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        r = redis.Redis("127.0.0.1", base + 3001, socket_timeout=5)
        mc = Memcache(("127.0.0.1", base + 4001), timeout=5)

        def up() -> bool:
            try:
                return bool(r.set("k", "v")) and mc.set("m", b"x", noreply=False)
            except (redis.ConnectionError, OSError):
                return False

        wait_until(up, 60, 0.2, "both front ends of the second member")
        assert r.get("k") == b"v" and mc.get("m") == b"x"
        r.close()
        mc.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0  # the members stopped, also mid-start (Ctrl-C any time)
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", base + 3000), 2):
            pass
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
