"""What tests/deploy/test_compose.py asks of the cluster, run inside the compose
project's workload container: `docker exec -i CONTAINER python - COMMAND ARGS` with
this file on stdin (the network is internal, so the host cannot reach the members).
It prints one JSON line. Uses only the grid installed in the image.

    view ADDR...        each member's stats (primaries, backups, table, lag) and its
                        membership view; a member that does not answer is null
    write N ADDR        put keys deploy-0..N-1 (in batches), then wait (bounded) until no
                        primary has a change its backup has not acknowledged
    read N ADDR         read them back; how many are there with the right value
"""

from __future__ import annotations

import json
import sys
import time

import grpc

from grid.client.sync import Client
from proto import grid_pb2 as pb

BATCH = 500


def member_view(address: str) -> dict | None:
    try:
        with grpc.insecure_channel(address) as ch:
            data = ch.unary_unary("/grid.v1.Grid/Stats")(
                pb.StatsRequest().SerializeToString(), timeout=2
            )
        m = pb.StatsReply.FromString(data).migration
        with Client(address, timeout=3, smart_routing=False) as client:
            members = {v.name: v.state for v in client.members()}
    except Exception as e:  # a member down is an answer here
        return {"error": f"{type(e).__name__}: {e}"[:200]}
    return {
        "primaries": m.primaries,
        "backups": m.backups,
        "table": m.table_version,
        "pending": m.pending,
        "in_flight": m.in_flight,
        "lag": m.lag_changes_total,
        "coordinator": m.coordinator,
        "members": members,
    }


def value(i: int) -> str:
    return f"value-{i}-" + "x" * 32


def write(n: int, address: str) -> dict:
    started = time.monotonic()
    with Client(address, timeout=10) as client:
        m = client.map("deploy")
        for lo in range(0, n, BATCH):
            m.put_many({f"deploy-{i}": value(i) for i in range(lo, min(n, lo + BATCH))})
        members = [v.address for v in client.members() if v.state == "alive"]
    wrote = time.monotonic() - started
    deadline = time.monotonic() + 30
    lag = None
    while time.monotonic() < deadline:
        views = [member_view(a) for a in members]
        lag = sum(v.get("lag", 1) for v in views if v is not None)
        if lag == 0:
            break
        time.sleep(0.2)
    return {"written": n, "seconds": wrote, "lag": lag, "replicated_in": time.monotonic() - started}


def read(n: int, address: str) -> dict:
    started = time.monotonic()
    found = right = 0
    with Client(address, timeout=10) as client:
        m = client.map("deploy")
        for lo in range(0, n, BATCH):
            keys = [f"deploy-{i}" for i in range(lo, min(n, lo + BATCH))]
            got = m.get_many(keys)
            found += len(got)
            right += sum(1 for k, v in got.items() if v == value(int(k.split("-")[1])))
    return {"found": found, "right": right, "seconds": time.monotonic() - started}


def main(argv: list[str]) -> None:
    command, args = argv[0], argv[1:]
    if command == "view":
        out: object = {a: member_view(a) for a in args}
    elif command == "write":
        out = write(int(args[0]), args[1])
    elif command == "read":
        out = read(int(args[0]), args[1])
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
