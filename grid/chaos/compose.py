"""The compose backend: members as containers of the grid image on an internal compose
network, the workload and checkers in that network's namespace, everything removed at
the end.

The members' network is `internal: true` with no address on the host's side of its
bridge (as deploy/docker-compose.yml's): nothing a container sends can leave the
machine, and the host cannot reach the members either. So a run is two processes:

1. The host side, `run_from_host()` (what `grid chaos run --backend compose` runs):
   starts or finds a Docker engine, builds the grid image offline (the local base
   image, a wheelhouse made on the host, `docker build --network none`:
   grid/harness/docker.py), writes the run's compose file, and brings up its network
   and a `runner` container that only sleeps: it holds a network namespace on the
   members' network. Then it starts the run itself, `python -m grid.chaos.compose
   RUN.json`, under `nsenter --net=/proc/<runner pid>/ns/net`: the host's filesystem
   and Python, the runner's network. When that process ends (or fails, or Ctrl-C), the
   host side saves every member's log and removes the project (containers, network,
   volumes), the image it built, and the dockerd it started; the base image stays as
   the cache.
2. The run, `grid.chaos.run.run()` with a ComposeBackend: the same code as on every
   other backend (workload, nemesis, audits, checkers, history, report and plot,
   written to the run's folder on the host). The backend starts the members with
   docker-compose, and does to them what the nemesis asks through the Docker CLI (its
   socket is a file, reachable from any network namespace): `docker kill -s KILL`,
   `docker start` (the same container, its volume and its data kept), `docker stop`
   (SIGTERM: a graceful leave), `docker pause`/`unpause` (the cgroup freezer); and,
   with nftables rules and tc run inside a member's namespace (`nsenter -t PID -n`,
   grid/harness/nft.py, the rules the netns backend uses): splits, loss, one-way cuts
   and slow links.

Members have fixed addresses on the run's subnet (10.215.S.0/24, S free on this
engine), advertise them, and seed each other by them: the run's process reaches them
without the containers' DNS, and a smart client follows the advertised addresses.

Where this differs from the netns backend: a member has one link, for the cluster and
the clients alike. A split is rules that drop the other side's addresses (the runner's
traffic passes, as the netns backend's client links do); loss and one-way cuts match
the peers' addresses only; but a slow link slows the clients' traffic to that member
too. The disk-full scenario gives each member a small tmpfs as its data dir instead of
a volume (the scenario restarts nobody).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from grid.chaos.backends import PLANT_ENV, Exit, LinkFaults, ProcessBackend, Unavailable
from grid.harness import docker, nft
from grid.harness.cluster import is_serving

if TYPE_CHECKING:
    from grid.chaos.run import Options

SUBNET = "10.215"
"""The runs' subnets: 10.215.S.0/24 (the netns backend uses 10.213 and 10.214)."""
MEMBER_HOST = 10  # member i (from 1) is .(10 + i)
RUNNER_HOST = 250
RUNNER = "runner"
GRPC_PORT = 5701
GOSSIP_PORT = 6701
DATA_DIR = "/var/lib/grid"
DEVICE = "eth0"  # a container's one link on the members' network
STOP_S = 60
"""How long `docker stop` waits for a graceful leave before SIGKILL: the process
backend waits 30 s; containers on two loaded cores get more."""
START_S = 120.0  # a container started until its member serves, on two loaded cores
EXIT_INTERRUPTED = 130


@dataclass
class Prepared:
    """An engine and a grid image someone else made and will remove (the tests share
    them with tests/deploy); the run then neither starts nor stops them."""

    engine: docker.Engine
    image: str


@dataclass
class ComposeRun:
    """What the run's process needs to drive the project the host side made."""

    docker: str
    compose: str
    project: str
    file: str
    members: dict[str, str]  # name -> address on the members' network
    options: dict[str, Any] = field(default_factory=dict)  # the run's Options

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> ComposeRun:
        return cls(**json.loads(path.read_text()))

    def container(self, service: str) -> str:
        """The container name compose v1 gives a service's first replica."""
        return f"{self.project}_{service}_1"


# ---- the compose file ------------------------------------------------------------------------
def member_ips(size: int, slot: int) -> dict[str, str]:
    return {f"member-{i}": f"{SUBNET}.{slot}.{MEMBER_HOST + i}" for i in range(1, size + 1)}


def compose_file(
    image: str,
    members: dict[str, str],
    slot: int,
    member_args: Sequence[str],
    plant: str = "",
    disk_mb: int = 0,
) -> dict[str, Any]:
    """The run's project: the members as deploy/docker-compose.yml has them (read-only
    image, a volume each, the same internal network), at fixed addresses, plus the
    runner. JSON, which compose reads as YAML."""
    gossip = {name: f"{ip}:{GOSSIP_PORT}" for name, ip in members.items()}
    services: dict[str, Any] = {}
    for name, ip in members.items():
        env = {
            "GRID_NAME": name,
            "GRID_ADVERTISE": f"{ip}:{GRPC_PORT}",
            "GRID_GOSSIP_HOST": ip,
            # every other member: a restarted member rejoins whoever is up
            "GRID_SEEDS": ",".join(a for n, a in gossip.items() if n != name),
            "GRID_BACKUPS": "1",
            # a graceful leave ends before `docker stop` turns it into a SIGKILL
            "GRID_LEAVE_TIMEOUT_S": str(STOP_S - 15),
            "GRID_SHUTDOWN_GRACE_S": "5",
        }
        service: dict[str, Any] = {
            "image": image,
            "hostname": name,
            "networks": {"grid": {"ipv4_address": ip}},
            "restart": "no",
            "read_only": True,
            "tmpfs": ["/tmp"],
            "environment": env,
            "command": list(member_args),
            "stop_grace_period": f"{STOP_S}s",
            # `grid health` every 10 s is a Python start per member: CPU the run needs
            "healthcheck": {"disable": True},
        }
        if plant:
            env[PLANT_ENV] = plant
            service["entrypoint"] = ["python", "-m", "grid.chaos.planted_member", "node"]
        if disk_mb:  # a small disk of its own to fill: a tmpfs instead of the volume
            service["tmpfs"].append(f"{DATA_DIR}:size={disk_mb}m,uid=10001,gid=10001,mode=0700")
        else:
            service["volumes"] = [f"{name}-data:{DATA_DIR}"]
        services[name] = service
    services[RUNNER] = {
        "image": image,
        "networks": {"grid": {"ipv4_address": f"{SUBNET}.{slot}.{RUNNER_HOST}"}},
        "init": True,
        "entrypoint": ["sleep", "infinity"],
        "healthcheck": {"disable": True},
    }
    return {
        "version": "2.4",
        "services": services,
        "networks": {
            "grid": {
                "internal": True,
                "driver_opts": {"com.docker.network.bridge.inhibit_ipv4": "true"},
                "ipam": {"config": [{"subnet": f"{SUBNET}.{slot}.0/24"}]},
            }
        },
        "volumes": {} if disk_mb else {f"{name}-data": {} for name in members},
    }


def free_slot(engine: docker.Engine) -> int:
    """A 10.215.S.0/24 no network of this engine and no address of this host uses."""
    used: set[int] = set()
    ids = engine.run("network", "ls", "--quiet", check=False).stdout.split()
    if ids:
        fmt = "{{range .IPAM.Config}}{{.Subnet}} {{end}}"
        out = engine.run("network", "inspect", "--format", fmt, *ids, check=False).stdout
        used |= {int(s) for s in re.findall(rf"{re.escape(SUBNET)}\.(\d+)\.", out)}
    host = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    host += subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    used |= {int(s) for s in re.findall(rf"{re.escape(SUBNET)}\.(\d+)\.", host)}
    start = os.getpid() % 250
    for k in range(250):
        if (slot := (start + k) % 250) not in used:
            return slot
    raise Unavailable(f"no free {SUBNET}.S.0/24 subnet on this engine")


# ---- the host side ------------------------------------------------------------------------------
def host_unavailable() -> str:
    """Why the compose backend cannot run here, or ""."""
    if not sys.platform.startswith("linux"):
        return "it needs Linux"
    if os.geteuid() != 0:
        return "it needs root (nsenter into the members' network, nftables in containers)"
    for command, package in (("nsenter", "util-linux"), ("nft", "nftables"), ("ip", "iproute2")):
        if docker.which(command) is None:
            return f"no {command} (Debian package {package})"
    return ""


def run_from_host(opts: Options, console: Console, prepared: Prepared | None = None) -> int:
    """Build and bring up the project, run the chaos run inside its network, remove it
    all (also on failure and Ctrl-C); the run's exit code (2: compose cannot run here)."""

    def say(message: str) -> None:
        console.print(f"grid chaos: compose: {message}", markup=False, highlight=False)

    if why := host_unavailable():
        say(f"the compose backend cannot run here: {why}; use --backend process")
        return 2
    out = Path(opts.out) if opts.out else Path(tempfile.mkdtemp(prefix="grid-chaos-"))
    files = out / "compose"
    files.mkdir(parents=True, exist_ok=True)
    opts = replace(opts, out=str(out))
    with contextlib.ExitStack() as cleanup:  # undone last first, however the run ends
        try:
            return _make_and_run(opts, console, prepared, cleanup, say)
        except (docker.DockerUnavailable, Unavailable) as e:
            say(f"the compose backend cannot run here: {e}")
            return 2
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            say(f"the compose project could not be made: {str(e)[-2000:]}")
            return 1
    raise AssertionError("unreachable")  # the with block returns


def _make_and_run(
    opts: Options,
    console: Console,
    prepared: Prepared | None,
    cleanup: contextlib.ExitStack,
    say: Callable[[str], None],
) -> int:
    """Engine, image, project, the run inside it; what to undo goes on `cleanup`."""
    out = Path(opts.out)
    files = out / "compose"
    if prepared is not None:
        engine, image = prepared.engine, prepared.image
    else:
        started = time.monotonic()
        engine = docker.Engine.start(files)
        cleanup.callback(engine.close)
        how = "started" if engine.process else "found"
        say(f"engine {how} ({time.monotonic() - started:.1f} s)")
        docker.sweep_stale(engine)
        image = f"grid:{docker.run_tag()}"
        cleanup.callback(engine.run, "rmi", "--force", image, check=False)
        _build(engine, image, say)
    if engine.compose is None:
        raise docker.DockerUnavailable("no docker-compose (Debian package docker-compose)")
    from grid.chaos.run import SCENARIOS, member_flags

    slot = free_slot(engine)
    members = member_ips(opts.members, slot)
    disk_mb = SCENARIOS[opts.scenario].disk_mb
    spec = compose_file(image, members, slot, member_flags(opts), opts.plant, disk_mb)
    file = files / "compose.yml"
    file.write_text(json.dumps(spec, indent=2))
    project = docker.ComposeProject(engine, file, docker.run_tag())
    cleanup.callback(project.close)
    cleanup.callback(_save_logs, engine, project, list(members), out / "logs")
    project.up(RUNNER)
    pid = int(engine.run("inspect", "--format", "{{.State.Pid}}", project.container(RUNNER))
              .stdout.strip())  # fmt: skip
    say(f"project {project.name}: network {SUBNET}.{slot}.0/24, runner pid {pid}")
    run_file = files / "run.json"
    ComposeRun(engine.docker, engine.compose, project.name, str(file), members, asdict(opts)).save(
        run_file
    )
    return _run_inside(pid, run_file, console)


def _build(engine: docker.Engine, image: str, say: Callable[[str], None]) -> None:
    started = time.monotonic()
    base, built = docker.base_image(engine)
    say(f"base image {base}: " + (f"built in {built:.0f} s" if built else "cached"))
    with tempfile.TemporaryDirectory(prefix=f"{docker.run_tag()}-wheels-") as wheels:
        docker.build_wheelhouse(Path(wheels))
        docker.build_image(engine, Path(wheels), base, image)
    say(f"image {image} built offline in {time.monotonic() - started:.0f} s")


def _run_inside(pid: int, run_file: Path, console: Console) -> int:
    """`python -m grid.chaos.compose RUN.json` in the runner's network namespace: on a
    terminal it draws its own progress line; else its output goes to `console`."""
    nsenter = docker.which("nsenter") or "nsenter"
    cmd = [nsenter, f"--net=/proc/{pid}/ns/net", "--", sys.executable, "-m",
           "grid.chaos.compose", str(run_file)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRID_")}
    tty = console.file is sys.stderr and console.is_terminal
    child = subprocess.Popen(
        cmd,
        env=env,
        stdout=None if tty else subprocess.PIPE,
        stderr=None if tty else subprocess.STDOUT,
        text=True,
        # its own session: a Ctrl-C reaches it once, from us, not also from the terminal
        start_new_session=True,
    )
    try:
        if child.stdout is not None:
            for line in child.stdout:
                console.print(line.rstrip("\n"), markup=False, highlight=False)
        code = child.wait()
    except BaseException:  # Ctrl-C, a test's timeout: the run stops its members first
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGINT)
        try:
            rest, _ = child.communicate(timeout=120)
            for line in (rest or "").splitlines():
                console.print(line, markup=False, highlight=False)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)
        raise
    return code if code >= 0 else 1


def _save_logs(engine: docker.Engine, project: docker.ComposeProject, names: list[str],
               to: Path) -> None:  # fmt: skip
    to.mkdir(parents=True, exist_ok=True)
    for name in names:
        logs = engine.run("logs", project.container(name), check=False, timeout=60)
        (to / f"{name}.log").write_text(logs.stdout + logs.stderr)


# ---- inside: the backend the run drives ---------------------------------------------------------
@dataclass
class ComposeBackend(ProcessBackend, LinkFaults):
    """The members of a compose project (ComposeRun), driven through the Docker CLI from
    the runner's network namespace; see the module's doc."""

    project: ComposeRun | None = None
    name: str = "compose"
    smart_routing = True  # members advertise addresses on the network this process is in
    _down: set[str] = field(default_factory=set)  # killed or stopped, not started again
    _paused: set[str] = field(default_factory=set)
    _expected: dict[str, str] = field(default_factory=dict)  # name -> "kill", "term"
    _ended: list[Exit] = field(default_factory=list)  # containers that exited and restarted
    _pids: dict[str, int] = field(default_factory=dict)
    _degraded: set[str] = field(default_factory=set)

    @property
    def run(self) -> ComposeRun:
        assert self.project is not None
        return self.project

    def _docker(self, *args: str, timeout: float = 60.0) -> str:
        return docker.run_command([self.run.docker, *args], timeout=timeout).stdout

    def _inspect(self, name: str, fmt: str) -> str:
        return self._docker("inspect", "--format", fmt, self.run.container(name)).strip()

    def _pid(self, name: str) -> int:
        if name not in self._pids:
            self._pids[name] = int(self._inspect(name, "{{.State.Pid}}"))
        return self._pids[name]

    def _enter(self, name: str) -> list[str]:
        """The command prefix that runs a host command in the member's namespace."""
        return ["nsenter", "-t", str(self._pid(name)), "-n"]

    # ---- life cycle --------------------------------------------------------------------------
    def start(self, size: int, timeout: float = START_S) -> None:
        """Bring up the members the host side wrote into the compose file (`size` of
        them: it made the file from the same options), and wait until each serves."""
        names = list(self.run.members)
        docker.run_command(
            [self.run.compose, "--project-name", self.run.project, "--file", self.run.file,
             "up", "--detach", "--no-build", *names],
            timeout=timeout,
        )  # fmt: skip
        for name in names:
            self._wait_serving(name, timeout)

    def _wait_serving(self, name: str, timeout: float) -> None:
        address = self.members()[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if is_serving(address):
                return
            if self._inspect(name, "{{.State.Running}}") != "true":
                raise RuntimeError(f"{name} exited before it served:\n{self._tail(name)}")
            time.sleep(0.2)
        raise TimeoutError(f"{name} not serving at {address} after {timeout:.0f}s")

    def _tail(self, name: str, lines: int = 15) -> str:
        logs = docker.run_command(
            [self.run.docker, "logs", "--tail", str(lines), self.run.container(name)],
            timeout=30, check=False,
        )  # fmt: skip
        return (logs.stdout + logs.stderr)[-3000:]

    def members(self) -> dict[str, str]:
        return {name: f"{ip}:{GRPC_PORT}" for name, ip in self.run.members.items()}

    def running(self) -> dict[str, str]:
        """Members whose container runs (a paused one runs): what this backend did, not
        asked of Docker each time (a poll calls it ten times a second); exits() asks."""
        return {n: a for n, a in self.members().items() if n not in self._down}

    def data_dir(self, name: str) -> Path:
        """The member's data dir as the host sees it (through its container's root)."""
        return Path(f"/proc/{self._pid(name)}/root{DATA_DIR}")

    # ---- what a nemesis does -------------------------------------------------------------------
    def kill(self, name: str) -> None:
        self._expected[name] = "kill"
        self._docker("kill", "--signal", "KILL", self.run.container(name), timeout=30)
        self._docker("wait", self.run.container(name), timeout=30)
        self._down.add(name)

    def terminate(self, name: str, timeout: float = STOP_S) -> int:
        """SIGTERM (a graceful leave), SIGKILL after `timeout`; the exit code."""
        self._expected[name] = "term"
        self._docker("stop", "--time", str(int(timeout)), self.run.container(name),
                     timeout=timeout + 30)  # fmt: skip
        self._down.add(name)
        code = int(self._inspect(name, "{{.State.ExitCode}}"))
        if code == 128 + signal.SIGKILL:  # the leave hung: Docker killed it
            self._expected[name] = "kill"
            raise subprocess.TimeoutExpired(f"docker stop {name}", timeout)
        return code

    def pause(self, name: str) -> None:
        self._docker("pause", self.run.container(name))
        self._paused.add(name)

    def resume(self, name: str) -> None:
        self._docker("unpause", self.run.container(name))
        self._paused.discard(name)

    def restart(self, name: str, timeout: float = START_S) -> None:
        """Start the same container again: its volume, its data, its address."""
        self._ended.append(self._exit_of(name))
        self._expected.pop(name, None)
        self._pids.pop(name, None)
        self._docker("start", self.run.container(name), timeout=timeout)
        self._down.discard(name)
        self._wait_serving(name, timeout)

    def _exit_of(self, name: str) -> Exit:
        state = json.loads(self._inspect(name, "{{json .State}}"))
        caused = self._expected.get(name, "")
        if caused == "term" and state["ExitCode"] != 0:
            caused = ""  # asked to leave gracefully, but it died another way
        return Exit(name, self._pids.get(name, 0), state["ExitCode"], caused, self._tail(name))

    def exits(self) -> list[Exit]:
        """Every container exit so far: the restarted ones, and any member not running."""
        out = list(self._ended)
        for name in self.run.members:
            if self._inspect(name, "{{.State.Running}}") != "true":
                out.append(self._exit_of(name))
        return out

    def stop(self) -> None:
        """Unpause, then stop every member (the host side removes the project after)."""
        for name in list(self._paused):
            with contextlib.suppress(RuntimeError):
                self.resume(name)
        for name in self.running():
            self._expected.setdefault(name, "term")  # the run's own stop: not a crash
        docker.run_command(
            [self.run.compose, "--project-name", self.run.project, "--file", self.run.file,
             "stop", "--timeout", "10", *self.run.members],
            timeout=120, check=False,
        )  # fmt: skip

    # ---- the network: rules in the members' namespaces -------------------------------------
    def _others(self, names: Sequence[str]) -> list[str]:
        return [self.run.members[n] for n in names]

    def split(self, sides: Sequence[Sequence[str]]) -> None:
        """Each member drops every packet to and from the members of other sides (a member
        on no side: from everyone). The runner's traffic passes: clients reach both sides."""
        placed = {n: set(side) for side in sides for n in side}
        for name in self.running():
            apart = [n for n in self.run.members if n != name and n not in placed.get(name, ())]
            if apart:
                nft.apply(self._enter(name), nft.cut(self._others(apart)), nft.SPLIT_TABLE)

    def heal(self) -> None:
        for name in self.running():
            nft.delete(self._enter(name), nft.SPLIT_TABLE)

    def lose(self, names: Sequence[str], percent: int) -> None:
        for name in names:
            peers = self._others([n for n in self.run.members if n != name])
            nft.apply(self._enter(name), nft.loss(percent, nft.with_peers(peers)))
            self._degraded.add(name)

    def deafen(self, name: str, to: Sequence[str]) -> None:
        nft.apply(self._enter(name), nft.deaf(self._others([n for n in to if n != name])))
        self._degraded.add(name)

    def throttle(self, name: str, kbit: int) -> None:
        """A rate limit on the member's one link: the clients' traffic to it too."""
        nft.throttle(self._enter(name), DEVICE, kbit)
        self._degraded.add(name)

    def restore_links(self) -> None:
        for name in sorted(self._degraded):
            if name in self.running():
                nft.delete(self._enter(name))
                nft.unthrottle(self._enter(name), DEVICE)
        self._degraded.clear()


def main(argv: list[str]) -> int:
    """`python -m grid.chaos.compose RUN.json`: the run, inside the runner's network."""
    from grid.chaos.run import Options, run

    project = ComposeRun.load(Path(argv[0]))
    try:
        return run(Options(**project.options), Console(stderr=True), project=project)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
