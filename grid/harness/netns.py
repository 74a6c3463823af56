"""A cluster of real member processes in Linux network namespaces: real network splits.

The chaos backend between LocalCluster (loopback, no partitions) and docker-compose.
Needs root and iproute2 (`ip`). A split is made by link state: each member's cluster
link is moved to another bridge. Degraded links (`lose`, `deafen`, `throttle`) need
nftables (`nft`) and tc inside the member's namespace; this kernel has no netem, so
there is loss, one-way cuts and a rate limit with a queue, but no fixed added delay.
Their rules live in the member's namespace and go with it.

Per run (names carry a tag `gt<pid hex>n<run>` that says which process made them):

    hub namespace  <tag>h   bridges br0 (whole cluster), br1.. (one per side of a split)
    member i       <tag>m<i> eth0: 10.213.S.(10+i)/24, its veth peer c<i> on a hub bridge
                             cl0:  10.214.S.(4i+2)/30, point-to-point to the root namespace
    root namespace <tag>c<i> 10.214.S.(4i+1)/30, the test process's way to member i
                   unreachable 10.213.S.0/24 (metric = pid): a client that follows an
                   advertised cluster address fails at once instead of leaving the machine

S is a slot (0..255) free on this machine, so runs in parallel never share addresses.
No namespace has a default route, and before a member starts the root namespace's
`ip route get` of every client address must name that member's client link (DESIGN.md:
every packet of a test stays inside the machine).

Members serve gRPC on 0.0.0.0:5701 in their namespace, advertise their cluster address,
gossip on cluster-address:6701 and join through member 0. Clients in the root namespace
reach member i at `client_address(i)`; the members' tables and Members replies name
cluster addresses, which the root namespace cannot reach, so clients must be plain
(`grid.Client(address, smart_routing=False)`): members forward to owners.

Cleanup: `close()` (also `__exit__` and an atexit hook) kills the processes, then removes
links, the route and the namespaces. A run killed before it could clean up is swept by
the next run: namespaces, links and routes whose owning pid no longer exists.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from grid.harness import nft
from grid.harness.cluster import MemberProcess, wait_serving

CLUSTER_NET = "10.213"
CLIENT_NET = "10.214"
GRPC_PORT = 5701
GOSSIP_PORT = 6701
MAX_MEMBERS = 63  # 4 addresses per client /30 in one /24
FAMILY = re.compile(r"^gt([0-9a-f]+)n([0-9]+)")
"""Every namespace and root-namespace link this module makes starts with this."""
LOCK_FILE = Path(tempfile.gettempdir()) / "grid-netns.lock"

_runs = itertools.count(1)  # run 0 is the availability probe
_open: weakref.WeakSet[NetnsCluster] = weakref.WeakSet()


class NetnsError(RuntimeError):
    pass


# ---- iproute2 ------------------------------------------------------------------------------------
def _ip(*args: str, ns: str = "", check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *(("-n", ns) if ns else ()), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=15, check=False)
    if check and result.returncode != 0:
        raise NetnsError(f"`{' '.join(cmd)}` failed: {result.stderr.strip()}")
    return result


def _namespaces() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _root_links() -> list[str]:
    out = _ip("-o", "link", "show", check=False).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def _pids_in(ns: str) -> list[int]:
    out = _ip("netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(name: str) -> int | None:
    m = FAMILY.match(name)
    return int(m.group(1), 16) if m else None


def _kill_all_in(ns: str) -> None:
    """SIGKILL every process in a namespace and wait (bounded) until none is left."""
    for _ in range(50):
        pids = _pids_in(ns)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    """Serialises sweeps and slot choice between runs on this machine."""
    with open(LOCK_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _unreachable_routes() -> list[tuple[int, int]]:
    """(slot, metric) of the guard routes `unreachable 10.213.S.0/24 metric PID`."""
    out = _ip("-4", "route", "show", "type", "unreachable", check=False).stdout
    found = []
    pattern = re.compile(rf"^unreachable {re.escape(CLUSTER_NET)}\.(\d+)\.0/24\b.*?metric (\d+)")
    for line in out.splitlines():
        m = pattern.match(line.strip())
        if m:
            found.append((int(m.group(1)), int(m.group(2))))
    return found


def sweep_stale() -> list[str]:
    """Remove what runs that no longer exist left behind; returns what was removed."""
    removed: list[str] = []
    for ns in _namespaces():
        pid = _owner(ns)
        if pid is None or _pid_alive(pid):
            continue
        _kill_all_in(ns)
        if _ip("netns", "del", ns, check=False).returncode == 0:
            removed.append(ns)
    for link in _root_links():
        pid = _owner(link)
        if (
            pid is not None
            and not _pid_alive(pid)
            and _ip("link", "del", link, check=False).returncode == 0
        ):
            removed.append(link)
    for slot, metric in _unreachable_routes():
        if not _pid_alive(metric):
            route = f"{CLUSTER_NET}.{slot}.0/24"
            _ip("route", "del", "unreachable", route, "metric", str(metric), check=False)
            removed.append(route)
    return removed


def _free_slot() -> int:
    used = {slot for slot, _ in _unreachable_routes()}
    out = _ip("-o", "-4", "addr", "show", check=False).stdout
    used |= {int(s) for s in re.findall(rf"inet {re.escape(CLIENT_NET)}\.(\d+)\.", out)}
    for slot in range(256):
        if slot not in used:
            return slot
    raise NetnsError(f"no free {CLIENT_NET}.S.0/24 slot on this machine")


@functools.cache
def available() -> str | None:
    """None if network namespaces can be used here, else why not (a test's skip reason)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    probe = f"gt{os.getpid():x}n0p"
    try:
        try:
            _ip("netns", "add", probe)
        except (NetnsError, OSError, subprocess.SubprocessError) as e:
            return f"`ip netns add` failed: {e}"
        try:
            _ip("link", "add", "br0", "type", "bridge", ns=probe)
            _ip("link", "add", "veth0", "type", "veth", "peer", "name", "veth1", ns=probe)
        except (NetnsError, OSError, subprocess.SubprocessError) as e:
            return f"bridges or veth pairs do not work in a namespace: {e}"
    finally:
        _kill_all_in(probe)
        _ip("netns", "del", probe, check=False)
    return None


# ---- the cluster ---------------------------------------------------------------------------------
class NetnsCluster:
    """`size` members, one network namespace each, on a bridge in a hub namespace.

    with NetnsCluster(3, member_args=["--backups", "1"]) as c:
        c.split([[0, 1], [2]])      # 0 and 1 see each other, 2 sees nobody
        c.heal()
    """

    def __init__(
        self,
        size: int,
        member_args: Sequence[str] = (),
        member_extra: Callable[[int], Sequence[str]] | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        """member_extra(i): flags for member i only (e.g. its --data-dir)."""
        if not 1 <= size <= MAX_MEMBERS:
            raise ValueError(f"size must be 1..{MAX_MEMBERS}")
        self.size = size
        self.member_args = list(member_args)
        self.member_extra = member_extra
        self._own_log_dir = log_dir is None
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="grid-netns-"))
        self.env = env
        self.python = python
        self.owner = os.getpid()
        self.tag = f"gt{self.owner:x}n{next(_runs)}"
        self.hub = f"{self.tag}h"
        self.namespaces = [f"{self.tag}m{i}" for i in range(size)]
        self.client_links = [f"{self.tag}c{i}" for i in range(size)]
        for name in [self.hub, *self.namespaces, *self.client_links]:
            assert len(name) <= 15, name
        self.slot: int | None = None
        self.members: list[MemberProcess] = []
        self._made_ns: list[str] = []
        self._made_links: list[str] = []
        self._route = False
        self._bridges = {"br0"}
        self._closed = False
        self._groups: list[list[int]] | None = None
        self._degraded: set[int] = set()  # members with fault rules or a throttle

    # ---- addresses -------------------------------------------------------------------------
    def _require_slot(self) -> int:
        if self.slot is None:
            raise NetnsError("the network is not set up (call start())")
        return self.slot

    def cluster_ip(self, i: int) -> str:
        return f"{CLUSTER_NET}.{self._require_slot()}.{10 + i}"

    def client_ip(self, i: int) -> str:
        """Member i's end of its client link (the root namespace's end is .(4i+1))."""
        return f"{CLIENT_NET}.{self._require_slot()}.{4 * i + 2}"

    def client_address(self, i: int) -> str:
        return f"{self.client_ip(i)}:{GRPC_PORT}"

    def cluster_address(self, i: int) -> str:
        """What member i advertises to the others (not reachable from the root namespace)."""
        return f"{self.cluster_ip(i)}:{GRPC_PORT}"

    def gossip_address(self, i: int) -> str:
        return f"{self.cluster_ip(i)}:{GOSSIP_PORT}"

    @property
    def addresses(self) -> list[str]:
        """The client addresses of every member, in index order."""
        return [self.client_address(i) for i in range(self.size)]

    def name(self, i: int) -> str:
        return f"member-{i + 1}"

    # ---- network ---------------------------------------------------------------------------
    def setup_network(self) -> None:
        if self.slot is not None:
            return
        _register_atexit()
        _open.add(self)
        with _machine_lock():
            sweep_stale()
            slot = self.slot = _free_slot()
            # the guard route first: from now on this slot is taken for other runs
            _ip("route", "add", "unreachable", f"{CLUSTER_NET}.{slot}.0/24", "metric",
                str(self.owner))  # fmt: skip
            self._route = True
            for ns in [self.hub, *self.namespaces]:
                _ip("netns", "add", ns)
                self._made_ns.append(ns)
                _ip("link", "set", "lo", "up", ns=ns)
            for i, link in enumerate(self.client_links):
                _ip("link", "add", link, "type", "veth", "peer", "name", "cl0", "netns",
                    self.namespaces[i])  # fmt: skip
                self._made_links.append(link)
                _ip("addr", "add", f"{CLIENT_NET}.{slot}.{4 * i + 1}/30", "dev", link)
                _ip("link", "set", link, "up")
        _ip("link", "add", "br0", "type", "bridge", ns=self.hub)
        _ip("link", "set", "br0", "up", ns=self.hub)
        for i, ns in enumerate(self.namespaces):
            _ip("link", "add", f"c{i}", "type", "veth", "peer", "name", "eth0", "netns", ns,
                ns=self.hub)  # fmt: skip
            _ip("link", "set", f"c{i}", "master", "br0", ns=self.hub)
            _ip("link", "set", f"c{i}", "up", ns=self.hub)
            _ip("addr", "add", f"{self.cluster_ip(i)}/24", "dev", "eth0", ns=ns)
            _ip("link", "set", "eth0", "up", ns=ns)
            _ip("addr", "add", f"{self.client_ip(i)}/30", "dev", "cl0", ns=ns)
            _ip("link", "set", "cl0", "up", ns=ns)
        self.check_routes()

    def check_routes(self) -> None:
        """Every packet stays inside: no default route in our namespaces, each client
        address routed over its own link, the cluster subnet unreachable from here."""
        for ns in [self.hub, *self.namespaces]:
            default = _ip("route", "show", "default", ns=ns).stdout.strip()
            if default:
                raise NetnsError(f"namespace {ns} has a default route: {default}")
        for i, link in enumerate(self.client_links):
            route = _ip("-o", "route", "get", self.client_ip(i)).stdout
            if f" dev {link} " not in f" {route} ":
                raise NetnsError(
                    f"{self.client_ip(i)} is not routed over {link} from the root namespace: "
                    f"{route.strip()}"
                )
        guard = _ip("-o", "route", "get", self.cluster_ip(0), check=False)
        if guard.returncode == 0 and " dev " in guard.stdout:
            raise NetnsError(
                f"the cluster subnet is routable from the root namespace: {guard.stdout.strip()}"
            )

    def _bridge(self, name: str) -> None:
        if name not in self._bridges:
            _ip("link", "add", name, "type", "bridge", ns=self.hub)
            _ip("link", "set", name, "up", ns=self.hub)
            self._bridges.add(name)

    def split(self, groups: Sequence[Sequence[int]]) -> None:
        """Members in different groups stop reaching each other (cluster links only; every
        client link stays up). A member in no group is cut off from everyone."""
        seen: set[int] = set()
        for group in groups:
            for i in group:
                if not 0 <= i < self.size or i in seen:
                    raise ValueError(f"bad or repeated member index {i} in {groups}")
                seen.add(i)
        for g, group in enumerate(groups, start=1):
            self._bridge(f"br{g}")
            for i in group:
                _ip("link", "set", f"c{i}", "master", f"br{g}", ns=self.hub)
        for i in range(self.size):
            if i not in seen:
                _ip("link", "set", f"c{i}", "nomaster", ns=self.hub)
        self._groups = [list(g) for g in groups]

    def heal(self) -> None:
        """Every member on one bridge again."""
        for i in range(self.size):
            _ip("link", "set", f"c{i}", "master", "br0", ns=self.hub)
        self._groups = None

    # ---- degraded links (nftables and tc inside the members' namespaces) ------------------
    def lose(self, i: int, percent: int) -> None:
        """Member i drops `percent`% of the packets on its cluster link, each way, at random
        (nftables `numgen random`: the kernel here has no netem). Client links are spared."""
        self._faulty_rules(i, nft.loss(percent, nft.on_interface("eth0")))

    def deafen(self, i: int, to: Sequence[int]) -> None:
        """Member i stops hearing the members `to` while they go on hearing it: packets from
        their cluster addresses are dropped on the way in (a one-way partition; TCP
        connections either way fail, since half of each handshake is lost)."""
        self._faulty_rules(i, nft.deaf([self.cluster_ip(j) for j in to if j != i]))

    def throttle(self, i: int, kbit: int) -> None:
        """Member i's cluster link sends at most `kbit` kbit/s: a token bucket (tc tbf)
        whose queue holds up to 200 ms of traffic, so a busy link is slow before it drops."""
        nft.throttle(self._enter(i), "eth0", kbit)
        self._degraded.add(i)

    def restore_links(self) -> None:
        """Undo `lose`, `deafen` and `throttle` on every member."""
        for i in sorted(self._degraded):
            nft.delete(self._enter(i))
            nft.unthrottle(self._enter(i), "eth0")
        self._degraded.clear()

    def _enter(self, i: int) -> list[str]:
        """The command prefix that runs a command in member i's namespace."""
        return ["ip", "netns", "exec", self.namespaces[i]]

    def _faulty_rules(self, i: int, chains: dict[str, str]) -> None:
        """Replace member i's fault table with these chains (name -> body)."""
        try:
            nft.apply(self._enter(i), chains)
        except nft.RuleError as e:
            raise NetnsError(str(e)) from e
        self._degraded.add(i)

    # ---- processes -------------------------------------------------------------------------
    def _command(self, i: int) -> list[str]:
        seeds = ["--seeds", self.gossip_address(0)] if i > 0 else []
        extra = list(self.member_extra(i)) if self.member_extra else []
        return [
            "ip", "netns", "exec", self.namespaces[i],
            self.python, "-m", "grid", "node",
            "--name", self.name(i),
            "--host", "0.0.0.0",
            "--port", str(GRPC_PORT),
            "--advertise", self.cluster_address(i),
            "--gossip-host", self.cluster_ip(i),
            "--gossip-port", str(GOSSIP_PORT),
            "--log-format", "json",
            "--parent-pid", str(os.getpid()),  # stops if this process dies unannounced
            *seeds, *self.member_args, *extra,
        ]  # fmt: skip

    def _spawn(self, cmd: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
        env = {**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"}
        with open(log_path, "ab") as log:
            # `ip netns exec` enters the namespace and execs: the pid is the member's
            return subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def start_member(self, i: int) -> MemberProcess:
        cmd = self._command(i)
        log_path = self.log_dir / f"{self.name(i)}.log"
        member = MemberProcess(
            self.name(i),
            self.client_address(i),
            self._spawn(cmd, log_path),
            log_path,
            self.gossip_address(i),
            tuple(cmd),
        )
        if i < len(self.members):
            self.members[i] = member
        else:
            self.members.append(member)
        return member

    def start(self, timeout: float = 30.0) -> NetnsCluster:
        try:
            self.setup_network()
            for i in range(self.size):
                self.start_member(i)
            for m in self.members:
                self.wait_ready(m, timeout)
        except BaseException:
            self.close()
            raise
        return self

    def wait_ready(self, member: MemberProcess, timeout: float = 30.0) -> None:
        wait_serving(member, timeout)

    def restart(self, i: int, timeout: float = 30.0) -> MemberProcess:
        """Start member i again (same namespace, flags and log) after it exited or was killed."""
        if self.members[i].alive():
            raise RuntimeError(f"{self.members[i].name} is still running")
        member = self.start_member(i)
        self.wait_ready(member, timeout)
        return member

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        member = self.members[i]
        with contextlib.suppress(ProcessLookupError):
            member.process.send_signal(sig)
        if sig == signal.SIGKILL:
            with contextlib.suppress(subprocess.TimeoutExpired):
                member.process.wait(5)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM every member, wait up to `grace` for a graceful exit, SIGKILL the rest."""
        for m in self.members:
            if m.alive():
                with contextlib.suppress(ProcessLookupError):
                    m.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for m in self.members:
            try:
                m.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(m.process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    m.process.wait(5)

    def close(self, grace: float = 5.0) -> None:
        """Stop the members, then remove every namespace, link and route this run made.
        Safe to call twice, and from atexit."""
        if self._closed:
            return
        self._closed = True
        try:
            self.stop(grace)
        finally:
            self._teardown()
            _open.discard(self)
            if self._own_log_dir:
                shutil.rmtree(self.log_dir, ignore_errors=True)

    def _teardown(self) -> None:
        for m in self.members:  # whatever survived stop(): the whole process group
            if m.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(m.process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    m.process.wait(5)
        for ns in self._made_ns:  # anything else started inside (nothing, normally)
            _kill_all_in(ns)
        with _machine_lock():
            for link in self._made_links:
                _ip("link", "del", link, check=False)
            for ns in self._made_ns:
                _ip("netns", "del", ns, check=False)
            if self._route and self.slot is not None:
                _ip("route", "del", "unreachable", f"{CLUSTER_NET}.{self.slot}.0/24",
                    "metric", str(self.owner), check=False)  # fmt: skip
        self._made_links.clear()
        self._made_ns.clear()
        self._route = False

    def __enter__(self) -> NetnsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@functools.cache
def _register_atexit() -> None:
    atexit.register(_close_all)


def _close_all() -> None:
    for cluster in list(_open):
        with contextlib.suppress(Exception):
            cluster.close(grace=1.0)
