"""`grid`: run members, poke at data, look at a cluster.

    grid node [--config FILE] [--port 5701] [--max-memory 1GiB] ...   run a member
    grid get KEY | put KEY VALUE [--ttl S] | del KEY | incr KEY [--by N]
    grid status [--address HOST:PORT ...]                              stats tables
    grid health [--address HOST:PORT]                                  exit 0 if SERVING
    grid cluster up -n 3                                               local cluster
    grid demo                                                          cluster + workload
    grid bench                                                         vs Redis
    grid chaos list | run --scenario NAME [--duration S] [--seed N]   chaos tests

Client commands talk to --address (or GRID_ADDRESS, default 127.0.0.1:5701).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import asdict, fields
from typing import Any

from grid.config import Config, ConfigError

DEFAULT_ADDRESS = "127.0.0.1:5701"


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML config file (or GRID_CONFIG)")
    for f in fields(Config):
        choices = f.metadata.get("choices")
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            choices=choices,
            metavar=None if choices else f.name.upper(),
            # argparse %-formats help texts: a literal % must be doubled
            help=(" ".join(str(f.metadata["help"]).split()) + f" [{f.default!r}]").replace(
                "%", "%%"
            ),
        )


def _client_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--address",
        "-a",
        default=os.environ.get("GRID_ADDRESS", DEFAULT_ADDRESS),
        help="member to talk to [GRID_ADDRESS or %(default)s]",
    )
    p.add_argument("--map", "-m", default="default", help="map name [%(default)s]")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds [%(default)s]")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grid", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    client = _client_parent()

    node = sub.add_parser("node", help="run a member until SIGTERM/SIGINT")
    _add_config_flags(node)

    conf = sub.add_parser("config", help="print the effective member configuration (TOML)")
    _add_config_flags(conf)
    conf.add_argument(
        "--reference",
        action="store_true",
        help="print the option reference (docs/configuration.md) instead",
    )

    get = sub.add_parser("get", parents=[client], help="print a key's value")
    get.add_argument("key")
    put = sub.add_parser("put", parents=[client], help="store a value (JSON or text)")
    put.add_argument("key")
    put.add_argument("value", help="parsed as JSON if it is JSON (42, [1], {...}), else text")
    put.add_argument("--ttl", type=float, help="seconds to live")
    put.add_argument("--max-idle", type=float, help="seconds without access before expiry")
    dele = sub.add_parser("del", parents=[client], help="delete a key")
    dele.add_argument("key")
    incr = sub.add_parser("incr", parents=[client], help="add to a counter")
    incr.add_argument("key")
    incr.add_argument("--by", type=int, default=1)
    incr.add_argument(
        "--ttl", type=float, help="window in seconds, set when the counter is created"
    )

    status = sub.add_parser("status", help="member and map statistics")
    status.add_argument(
        "--address", "-a", action="append", help="member(s) to ask [GRID_ADDRESS or 127.0.0.1:5701]"
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")

    passwd = sub.add_parser(
        "passwd",
        help="make a user's password and the `users` entry that lets it in",
        description="Prints a new random password (256 bits) and the name=hash entry for the "
        "members' `users` option. With --stdin, hashes the password read from standard input "
        "instead (one line).",
    )
    passwd.add_argument("name", help="the user's name")
    passwd.add_argument("--stdin", action="store_true", help="read the password from stdin")

    health = sub.add_parser(
        "health",
        help="ask a member's gRPC health service; exit 0 if SERVING, 1 otherwise (probes)",
    )
    health.add_argument(
        "--address",
        "-a",
        # in a member's container: the member there, on the port its GRID_PORT says
        default=os.environ.get(
            "GRID_HEALTH_ADDRESS", f"127.0.0.1:{os.environ.get('GRID_PORT', '5701')}"
        ),
        help="member to ask [GRID_HEALTH_ADDRESS, else 127.0.0.1:GRID_PORT: %(default)s]",
    )
    health.add_argument(
        "--service", default="", help="'' (the member) or grid.v1.Grid [%(default)r]"
    )
    health.add_argument("--timeout", type=float, default=2.0, help="seconds [%(default)s]")

    backup = sub.add_parser(
        "backup", help="online, consistent backup of running members into DIR (one folder each)"
    )
    backup.add_argument("dir", help="an empty or new directory on the members' host")
    backup.add_argument(
        "--address", "-a", action="append", help="member(s) [GRID_ADDRESS or 127.0.0.1:5701]"
    )
    snap = sub.add_parser("snapshot", help="snapshot every partition of running members now")
    snap.add_argument(
        "--address", "-a", action="append", help="member(s) [GRID_ADDRESS or 127.0.0.1:5701]"
    )
    restore = sub.add_parser("restore", help="restore a member's backup into a new data_dir")
    restore.add_argument("dir", help="a backup folder (with manifest.json)")
    restore.add_argument("--data-dir", required=True, help="the member's data_dir (must be empty)")

    cluster = sub.add_parser("cluster", help="local clusters on loopback")
    csub = cluster.add_subparsers(dest="cluster_command", required=True)
    up = csub.add_parser("up", help="start N members and keep them running until Ctrl-C")
    up.add_argument("-n", type=int, default=3, help="members [%(default)s]")
    up.add_argument("--base-port", type=int, default=5701, help="first port [%(default)s]")
    up.add_argument(
        "--resp",
        action="store_true",
        help="members also speak RESP to Redis clients, on port + 3000 (8701, ...)",
    )
    up.add_argument(
        "--memcached",
        action="store_true",
        help="members also speak memcached's protocols, on port + 4000 (9701, ...)",
    )
    up.add_argument(
        "member_args",
        nargs=argparse.REMAINDER,
        help="after --: flags for every member, e.g. -- --max-memory 256MiB",
    )

    demo = sub.add_parser(
        "demo", help="start a local cluster, run the cache workloads, show the stats, stop"
    )
    demo.add_argument("-n", type=int, default=1, help="members [%(default)s]")
    demo.add_argument("--keep", action="store_true", help="keep the cluster running after")

    bench = sub.add_parser("bench", help="benchmark a member against Redis on loopback")
    bench.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    bench.add_argument("--no-redis", action="store_true", help="skip the Redis side")
    bench.add_argument("--only", action="append", help="run only these workloads")
    _add_chaos(sub)
    return parser


def _add_chaos(sub: Any) -> None:
    chaos = sub.add_parser(
        "chaos", help="chaos tests: a cluster, a recorded workload, faults, checkers"
    )
    xsub = chaos.add_subparsers(dest="chaos_command", required=True)
    xsub.add_parser("list", help="the scenarios, the backends they run on, and the plants")
    run = xsub.add_parser(
        "run", help="one run; exit 0 if every checker holds, 1 if one fails, 2 if it cannot run"
    )
    run.add_argument("--scenario", required=True, help="a name from `grid chaos list`")
    run.add_argument("--backend", default="process", help="process, netns or compose [%(default)s]")
    run.add_argument("--duration", type=float, default=20.0, help="seconds of load [%(default)s]")
    run.add_argument("--seed", type=int, default=1, help="chooses victims and ops [%(default)s]")
    run.add_argument("--members", type=int, default=3, help="cluster size [%(default)s]")
    run.add_argument("--out", default="", help="folder for the history, report and logs [a temp]")
    run.add_argument(
        "--sync-backups",
        type=int,
        default=1,
        help="1: writes acknowledged after a backup applied them (none may be lost); 0: "
        "async (losses are reported) [%(default)s]",
    )
    run.add_argument(
        "--min-cluster-size",
        type=int,
        default=0,
        help="members refuse writes while they see fewer (a majority: only the larger side "
        "of a split writes); 0 = every side writes [%(default)s]",
    )
    run.add_argument("--threads", type=int, default=4, help="workload threads [%(default)s]")
    run.add_argument(
        "--plant", default="", help="start members with a planted bug (a harness self-test)"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as e:
        print(f"grid: configuration error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `grid config | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _dispatch(args: argparse.Namespace) -> int:
    from grid import logs

    if args.command == "node":
        flags = {f.name: getattr(args, f.name) for f in fields(Config)}
        config = Config.load(file=args.config, flags=flags)
        logs.configure(config.log_level, config.log_format)
        from grid.member.member import loop_factory, run_member

        try:
            with asyncio.Runner(loop_factory=loop_factory(config.event_loop)) as runner:
                runner.run(run_member(config))
        except OSError as e:
            print(f"grid node: {e}", file=sys.stderr)
            return 1
        return 0
    if args.command == "config":
        return _config(args)
    if args.command == "passwd":
        return _passwd(args.name, args.stdin)
    if args.command == "health":
        return _health(args.address, args.service, args.timeout)
    logs.configure("warning")
    if args.command in ("get", "put", "del", "incr"):
        return _data_command(args)
    if args.command == "status":
        return _status(args)
    if args.command == "snapshot":
        from grid.cli.backup_cmd import run_snapshot

        return run_snapshot(args.address or [os.environ.get("GRID_ADDRESS", DEFAULT_ADDRESS)])
    if args.command in ("backup", "restore"):
        from grid.cli.backup_cmd import run_backup, run_restore

        if args.command == "backup":
            return run_backup(
                args.dir, args.address or [os.environ.get("GRID_ADDRESS", DEFAULT_ADDRESS)]
            )
        return run_restore(args.dir, args.data_dir)
    if args.command == "cluster":
        from grid.cli.cluster_cmd import cluster_up

        member_args = [a for a in args.member_args if a != "--"]
        return cluster_up(
            args.n, args.base_port, member_args, resp=args.resp, memcached=args.memcached
        )
    if args.command == "demo":
        from grid.cli.demo import run_demo

        return run_demo(args.n, keep=args.keep)
    if args.command == "bench":
        from grid.bench.main import run_bench

        return run_bench(quick=args.quick, redis=not args.no_redis, only=args.only)
    if args.command == "chaos":
        return _chaos(args)
    raise AssertionError(args.command)


def _chaos(args: argparse.Namespace) -> int:
    if args.chaos_command == "list":
        from grid.chaos.scenarios import listing
        from simulation.plants import listing as plants

        print("scenarios (name, backends, what it does):")
        print(listing())
        print("\nplants for --plant (simulation/plants.py):")
        print(plants())
        return 0
    from grid.chaos.run import Options, run

    opts = Options(
        scenario=args.scenario,
        backend=args.backend,
        duration=args.duration,
        seed=args.seed,
        members=args.members,
        out=args.out,
        plant=args.plant,
        sync_backups=args.sync_backups,
        min_cluster_size=args.min_cluster_size,
        threads=args.threads,
    )
    return run(opts)


def _config(args: argparse.Namespace) -> int:
    from grid.config import reference_markdown

    if args.reference:
        print(reference_markdown(), end="")
        return 0
    flags = {f.name: getattr(args, f.name) for f in fields(Config)}
    config = Config.load(file=args.config, flags=flags)
    print("[member]")
    for f in fields(Config):
        print(f"{f.name} = {json.dumps(getattr(config, f.name))}")
    return 0


def _health(address: str, service: str, timeout: float) -> int:
    """The check a container's HEALTHCHECK or an exec probe runs: one Check call, no
    client SDK (a probe every few seconds should cost little)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from grid.wire.security import Security

    kw = _credentials()
    security = Security(
        cert=kw.get("tls_cert", ""), key=kw.get("tls_key", ""), ca=kw.get("tls_ca", "")
    )
    try:
        channel = (
            grpc.secure_channel(address, security.grpc_channel_credentials())
            if security.client_tls
            else grpc.insecure_channel(address)
        )
        with channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
    except grpc.RpcError as e:
        print(f"grid health: {address}: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{address}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def _passwd(name: str, from_stdin: bool) -> int:
    from grid.config import ConfigError, parse_users
    from grid.wire.security import generate_password, hash_password

    password = sys.stdin.readline().rstrip("\r\n") if from_stdin else generate_password()
    if not password:
        print("grid passwd: an empty password", file=sys.stderr)
        return 2
    entry = f"{name}={hash_password(password)}"
    try:
        parse_users(entry)
    except ConfigError as e:
        print(f"grid passwd: {e}", file=sys.stderr)
        return 2
    if not from_stdin:
        print(f"password: {password}")
    print(f"users entry: {entry}")
    print(f'in TOML, under [users]: {name} = "{entry.split("=", 1)[1]}"')
    return 0


def _credentials() -> dict[str, str]:
    """The client commands' TLS files and token, from the same variables a member reads
    (GRID_TLS_CA, GRID_TLS_CERT, GRID_TLS_KEY, GRID_AUTH_TOKEN): in a member's container or
    shell, `grid status` and `grid get` speak to it as its peers do. GRID_USER and
    GRID_PASSWORD log in as one of the members' users instead."""
    env = os.environ
    return {
        k: v
        for k, v in (
            ("tls_ca", env.get("GRID_TLS_CA", "")),
            ("tls_cert", env.get("GRID_TLS_CERT", "")),
            ("tls_key", env.get("GRID_TLS_KEY", "")),
            ("token", env.get("GRID_AUTH_TOKEN", "")),
            ("user", env.get("GRID_USER", "")),
            ("password", env.get("GRID_PASSWORD", "")),
        )
        if v
    }


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _data_command(args: argparse.Namespace) -> int:
    from grid.client.sync import Client
    from grid.errors import GridError

    try:
        with Client(args.address, timeout=args.timeout, **_credentials()) as client:
            m = client.map(args.map)
            if args.command == "get":
                value = m.get(args.key)
                if value is None:
                    print("(not found)", file=sys.stderr)
                    return 1
                print(value if isinstance(value, str) else json.dumps(value, default=repr))
            elif args.command == "put":
                m.put(args.key, _parse_value(args.value), ttl=args.ttl, max_idle=args.max_idle)
                print("OK")
            elif args.command == "del":
                print(1 if m.delete(args.key) else 0)
            else:
                print(m.incr(args.key, args.by, ttl=args.ttl))
    except GridError as e:
        print(f"grid {args.command}: {e.status.name}: {e.message or e}", file=sys.stderr)
        return 1
    return 0


def _status(args: argparse.Namespace) -> int:
    from grid.cli.status import print_status
    from grid.client.sync import Client
    from grid.errors import GridError

    addresses = args.address or [os.environ.get("GRID_ADDRESS", DEFAULT_ADDRESS)]
    stats = []
    i = 0
    while i < len(addresses):  # the members the first one knows are added as they are seen
        address = addresses[i]
        i += 1
        try:
            with Client(address, timeout=3, **_credentials()) as client:
                stats.append(client.stats())
                view = client.members()
                stats[-1]["cluster"] = [asdict(m) for m in view]  # its view
        except GridError as e:
            print(f"grid status: {address}: {e}", file=sys.stderr)
            return 1
        if i == 1 and len(args.address or ()) <= 1:  # one address: show its whole cluster
            addresses += [
                m.address for m in view
                if m.state in ("alive", "suspect") and m.address and m.address not in addresses
            ]  # fmt: skip
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print_status(stats)
    return 0
