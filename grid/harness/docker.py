"""Docker for tests and chaos runs: an engine, a local base image, the grid image, and
compose projects, with no packet leaving the machine and nothing left behind.

No image registry is reachable here, so nothing is pulled. The steps, each cheap when
its result is already there:

1. `Engine.start()`: use the dockerd that answers on the default socket, or start one
   (root only) and stop it in `close()`. One we start gets `--iptables=false
   --ip-forward=false --bridge=none`: it writes no firewall rule and flips no sysctl on
   a machine other tests share (a stock dockerd sets the FORWARD policy to DROP, which
   breaks the namespace tests' bridges), and it has no default bridge with NAT. Compose
   networks still work (they are plain Linux bridges), and ours are `internal: true`:
   containers get no default route, so nothing they send can leave.
2. `base_image()`: a Debian bookworm with python3 and its venv module, made with
   `debootstrap --variant=minbase` from the machine's apt mirror and `docker import`
   (about a minute), tagged BASE_TAG and reused while present: the cache.
3. `build_wheelhouse()`: `pip wheel '.[fast]'` on the host, with the pip, index and
   cache of the interpreter running the tests.
4. `build_image()`: deploy/Dockerfile over the wheelhouse with `--network none`.
5. `ComposeProject`: `docker-compose -p NAME` up, exec, kill, and `down -v` (containers,
   networks, volumes) in `close()`, also when the run failed.

Every name this module makes carries the run's tag (`gridtest<pid hex>`), so a sweep
can tell a dead run's leftovers from a live one's (`sweep_stale()`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

BASE_TAG = "grid-base:bookworm-minbase"
"""The local base image, kept between runs: building it costs about a minute. A change
of BASE_PACKAGES needs a new tag, or the old image goes on being reused."""
BASE_PACKAGES = "python3,python3-venv"
SOCKET = "/var/run/docker.sock"
REPO = Path(__file__).resolve().parents[2]
TAG_PREFIX = "gridtest"
LOCK_FILE = Path(tempfile.gettempdir()) / "grid-docker.lock"


class DockerUnavailable(RuntimeError):
    """Docker cannot run here; the message says why (for a skip)."""


def run_tag() -> str:
    """The tag of everything this process makes: compose project, image, temp dirs."""
    return f"{TAG_PREFIX}{os.getpid():x}"


def which(name: str, *prefer: str) -> str | None:
    """The path of a command: `prefer`red paths first, then $PATH, then the sbin folders
    (a non-root PATH may lack them)."""
    for path in prefer:
        if os.access(path, os.X_OK):
            return path
    return shutil.which(name) or next(
        (p for d in ("/usr/sbin", "/usr/bin") if os.access(p := f"{d}/{name}", os.X_OK)), None
    )


class Engine:
    """A Docker engine that answers, and the CLIs to drive it."""

    def __init__(self, docker: str, compose: str | None, process: subprocess.Popen | None):
        self.docker = docker
        self.compose = compose
        self.process = process
        """The dockerd we started, None when one was already running (we leave it be)."""

    @classmethod
    def start(cls, log_dir: Path, timeout: float = 60.0) -> Engine:
        # Debian's CLI first: it matches Debian's engine (and speaks its API version).
        docker = which("docker", "/usr/bin/docker")
        if docker is None:
            raise DockerUnavailable("no docker CLI (Debian package docker.io)")
        compose = which("docker-compose")
        if _answers(docker):
            return cls(docker, compose, None)
        dockerd = which("dockerd")
        if dockerd is None:
            raise DockerUnavailable("no dockerd (Debian package docker.io)")
        if os.geteuid() != 0:
            raise DockerUnavailable("no engine answers and starting dockerd needs root")
        log_dir.mkdir(parents=True, exist_ok=True)
        log = open(log_dir / "dockerd.log", "ab")  # noqa: SIM115 - kept open for dockerd
        process = subprocess.Popen(
            [
                dockerd,
                f"--host=unix://{SOCKET}",
                "--iptables=false",
                "--ip-forward=false",
                "--bridge=none",
                f"--pidfile={log_dir / 'dockerd.pid'}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        engine = cls(docker, compose, process)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = (log_dir / "dockerd.log").read_text(errors="replace")[-1500:]
                raise DockerUnavailable(f"dockerd exited with {process.returncode}:\n{tail}")
            if _answers(docker):
                return engine
            time.sleep(0.25)
        engine.close()
        raise DockerUnavailable(f"dockerd did not answer within {timeout:.0f} s")

    def run(
        self,
        *args: str,
        timeout: float = 120.0,
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return run_command([self.docker, *args], timeout=timeout, check=check, input=input)

    def image_exists(self, ref: str) -> bool:
        return self.run("image", "inspect", ref, check=False, timeout=30).returncode == 0

    def close(self) -> None:
        """Stop the dockerd we started (its containerd goes with it)."""
        p, self.process = self.process, None
        if p is None or p.poll() is not None:
            return
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


def _answers(docker: str) -> bool:
    try:
        return run_command([docker, "info"], timeout=15, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def run_command(
    cmd: Sequence[str],
    *,
    timeout: float,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, bounded in time; with `check`, a RuntimeError that carries the
    tails of its output when it fails."""
    result = subprocess.run(
        list(cmd),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        env=None if env is None else {**os.environ, **env},
        cwd=cwd,
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[:4])} ... exited with {result.returncode}:\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        )
    return result


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    """One base-image build at a time on this machine."""
    with open(LOCK_FILE, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def apt_mirror() -> str:
    """The Debian mirror apt uses here (debootstrap must fetch where apt may)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        with contextlib.suppress(OSError):
            text = path.read_text()
            for m in re.finditer(r"^(?:URIs:\s*(\S+)|deb\s+(?:\[[^]]*\]\s+)?(\S+))", text, re.M):
                url = m.group(1) or m.group(2)
                if "security" not in url:
                    return url.rstrip("/")
    return "http://deb.debian.org/debian"


def base_image(engine: Engine, timeout: float = 600.0) -> tuple[str, float]:
    """(BASE_TAG, seconds spent building it: 0 when it was cached)."""
    with _machine_lock():
        if engine.image_exists(BASE_TAG):
            return BASE_TAG, 0.0
        debootstrap = which("debootstrap")
        if debootstrap is None:
            raise DockerUnavailable("no debootstrap (Debian package debootstrap)")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"{run_tag()}-rootfs-") as root:
            run_command(
                [
                    debootstrap,
                    "--variant=minbase",
                    f"--include={BASE_PACKAGES}",
                    "bookworm",
                    root,
                    apt_mirror(),
                ],
                timeout=timeout,
            )
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for p in (Path(root) / junk).glob("*"):
                    if p.is_file():
                        p.unlink()
            tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
            try:
                imp = subprocess.run(
                    [engine.docker, "import", "-", BASE_TAG],
                    stdin=tar.stdout,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                )
            finally:
                assert tar.stdout is not None
                tar.stdout.close()
                tar.wait(timeout=60)
            if imp.returncode != 0:
                raise RuntimeError(f"docker import failed: {imp.stderr[-2000:]}")
        return BASE_TAG, time.monotonic() - started


def build_wheelhouse(out: Path, source: Path = REPO, timeout: float = 600.0) -> None:
    """Wheels of grid and everything it needs (with uvloop), from the host's pip index
    and cache: the image build then needs no network. Built from a copy of the source
    without build/ and the like: setuptools reuses build/lib, and a module deleted from
    the source but still there would end up in the wheel."""
    skip = shutil.ignore_patterns(
        *(".git", ".venv", "build", "dist", "wheelhouse", "*.egg-info", "__pycache__"),
        *(".*_cache", ".hypothesis"),
    )
    with tempfile.TemporaryDirectory(prefix=f"{run_tag()}-src-") as tmp:
        copy = Path(tmp) / "grid"
        shutil.copytree(source, copy, ignore=skip)
        run_command(
            [sys.executable, "-m", "pip", "wheel", "--quiet", f"{copy}[fast]", "-w", str(out)],
            timeout=timeout,
        )


def build_image(
    engine: Engine, wheelhouse: Path, base: str, tag: str, timeout: float = 600.0
) -> None:
    """The grid image from deploy/Dockerfile, offline. Removes the intermediate image of
    the build stage (it would stay as a dangling image)."""
    before = set(engine.run("images", "-q", "--filter", "dangling=true").stdout.split())
    try:
        engine.run(
            "build",
            "--network=none",
            "--pull=false",
            "--file",
            str(REPO / "deploy" / "Dockerfile"),
            "--build-arg",
            f"BASE={base}",
            "--tag",
            tag,
            str(wheelhouse),
            timeout=timeout,
        )
    finally:
        after = set(engine.run("images", "-q", "--filter", "dangling=true").stdout.split())
        if after - before:
            engine.run("rmi", "--force", *sorted(after - before), check=False)


class ComposeProject:
    """One `docker-compose -p NAME -f FILE` project; `close()` removes all of it."""

    def __init__(
        self, engine: Engine, file: Path, name: str, env: Mapping[str, str] | None = None
    ) -> None:
        if engine.compose is None:
            raise DockerUnavailable("no docker-compose (Debian package docker-compose)")
        self.engine = engine
        self.file = file
        self.name = name
        self.env = dict(env or {})

    def compose(
        self, *args: str, timeout: float = 120.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        assert self.engine.compose is not None
        return run_command(
            [self.engine.compose, "--project-name", self.name, "--file", str(self.file), *args],
            timeout=timeout,
            check=check,
            env=self.env,
        )

    def container(self, service: str) -> str:
        """The container name compose v1 gives a service's first replica."""
        return f"{self.name}_{service}_1"

    def up(self, *services: str, timeout: float = 120.0) -> None:
        self.compose("up", "--detach", "--no-build", *services, timeout=timeout)

    def exec(
        self,
        service: str,
        *cmd: str,
        input: str | None = None,
        timeout: float = 60.0,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """A command in a running service's container (`docker exec`, stdin from `input`)."""
        args = ["exec", *(["-i"] if input is not None else []), self.container(service), *cmd]
        return self.engine.run(*args, input=input, timeout=timeout, check=check)

    def kill(self, service: str) -> None:
        self.engine.run("kill", self.container(service), timeout=30)

    def logs(self, tail: int = 40) -> str:
        return self.compose("logs", "--no-color", f"--tail={tail}", check=False).stdout

    def close(self) -> None:
        """Containers, networks and volumes of the project, whatever state it is in."""
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)


def sweep_stale(engine: Engine) -> list[str]:
    """Remove what runs that died without cleaning up left behind: compose projects and
    images tagged `gridtest<pid>` whose process is gone. Returns what was removed."""
    removed: list[str] = []
    ps = engine.run(
        "ps", "-a", "--format", '{{.ID}} {{.Label "com.docker.compose.project"}}', check=False
    )
    projects: dict[str, list[str]] = {}
    for line in ps.stdout.splitlines():
        cid, _, project = line.partition(" ")
        if _stale(project):
            projects.setdefault(project, []).append(cid)
    for project, ids in projects.items():
        engine.run("rm", "--force", "--volumes", *ids, check=False)
        removed.append(project)
    for kind in ("network", "volume"):
        names = engine.run(kind, "ls", "--quiet", check=False).stdout.split()
        stale = [n for n in names if _stale(n.split("_")[0])]
        if stale:
            engine.run(kind, "rm", *stale, check=False)
            removed += stale
    images = engine.run("images", "--format", "{{.Repository}}:{{.Tag}}", check=False)
    stale = [i for i in images.stdout.split() if _stale(i.split(":")[-1])]
    if stale:
        engine.run("rmi", "--force", *stale, check=False)
        removed += stale
    return removed


def _stale(name: str) -> bool:
    m = re.fullmatch(rf"{TAG_PREFIX}([0-9a-f]+)", name)
    if m is None:
        return False
    pid = int(m.group(1), 16)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
