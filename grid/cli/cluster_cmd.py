"""`grid cluster up`: N members on loopback, a progress bar while they start."""

from __future__ import annotations

import signal
import threading
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from grid.cli.status import wide_console
from grid.harness.cluster import LocalCluster, MemberProcess, migration_state


def start_with_progress(cluster: LocalCluster, console: Console) -> None:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("starting members", total=cluster.size)

        def ready(m: MemberProcess) -> None:
            bar.update(task, advance=1, description=f"{m.name} ready at {m.address}")

        cluster.start(on_ready=ready)


def wait_for_migrations(addresses: list[str], console: Console, timeout: float = 300.0) -> bool:
    """A progress bar while the partitions settle on their members."""
    deadline = time.monotonic() + timeout
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("placing partitions", total=None)
        while time.monotonic() < deadline:
            state = migration_state(addresses)
            if state == (0, 0):
                return True
            if state is not None:
                bar.update(task, description=f"placing partitions: {state[0]} to move, "
                           f"{state[1]} filling")  # fmt: skip
            time.sleep(0.2)
    return False


def cluster_table(cluster: LocalCluster) -> Table:
    t = Table(title="local cluster", title_justify="left")
    resp = any(m.resp_address for m in cluster.members)
    mc = any(m.memcached_address for m in cluster.members)
    ports = [*(["resp"] if resp else []), *(["memcached"] if mc else [])]
    for col in ("member", "address", "gossip", *ports, "pid", "log"):
        t.add_column(col)
    for m in cluster.members:
        extra = [*([m.resp_address] if resp else []), *([m.memcached_address] if mc else [])]
        t.add_row(m.name, m.address, m.gossip_address, *extra, str(m.pid), str(m.log_path))
    return t


def cluster_up(
    n: int, base_port: int, member_args: list[str], resp: bool = False, memcached: bool = False
) -> int:
    console = wide_console()
    cluster = LocalCluster(
        n, base_port=base_port, member_args=member_args, resp=resp, memcached=memcached
    )
    try:
        start_with_progress(cluster, console)
    except (RuntimeError, TimeoutError) as e:
        console.print(f"[red]cluster failed to start:[/red] {e}")
        return 1
    try:  # a Ctrl-C while the partitions settle must stop the members too
        if n > 1 and not wait_for_migrations(cluster.addresses, console):
            console.print("[yellow]partitions did not settle in time; see grid status[/yellow]")
        console.print(cluster_table(cluster))
        if n > 1:
            console.print(
                f"members joined one cluster through {cluster.members[0].name}'s gossip address "
                f"{cluster.members[0].gossip_address}; keys are spread over them by partition, "
                "each partition with its backups on other members."
            )
        console.print(
            f"try: grid put hello world -a {cluster.addresses[0]} && "
            f"grid status -a {cluster.addresses[0]}"
        )
        if resp:
            host, port = cluster.members[0].resp_address.rsplit(":", 1)
            console.print(
                f"Redis clients: redis-cli -h {host} -p {port} (any member serves any key)"
            )
        if memcached:
            address = cluster.members[0].memcached_address
            console.print(
                f"memcached clients: memcstat --servers={address} (any member serves any key)"
            )
        console.print("Ctrl-C stops the cluster.")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        while not stop.wait(0.5):
            dead = [m for m in cluster.members if not m.alive()]
            if dead:
                console.print(f"[red]{dead[0].name} exited[/red]:\n{dead[0].log_tail()}")
                break
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping members ...")
        cluster.stop()
    return 0
