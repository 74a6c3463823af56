"""TLS, mutual TLS and the cluster token on real members, with certificates the test makes.

Two members serve TLS with a CA (so every client and peer must present a certificate it
signed) and an auth_token; they replicate to each other over TLS (peers present their
own certificates). A client with the CA, a certificate and the token works, sync and
asyncio; every client short of that is refused with a clear error, and the members stay
healthy with nothing stored lost.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

import grid
from grid.harness.certs import Authority, Pair
from grid.harness.cluster import LocalCluster
from tests.integration.support import run_grid, wait_until

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token-for-tests"


class Tls:
    def __init__(self, folder: Path) -> None:
        self.ca = Authority(folder / "ca", "grid test CA")
        self.members = [self.ca.issue(f"member-{i + 1}") for i in range(2)]
        self.client = self.ca.issue("client")
        self.stranger_ca = Authority(folder / "other", "another CA")
        self.stranger = self.stranger_ca.issue("stranger")

    def member_args(self, i: int) -> list[str]:
        pair = self.members[i]
        return ["--tls-cert", pair.cert, "--tls-key", pair.key, "--tls-ca", self.ca.ca,
                "--auth-token", TOKEN]  # fmt: skip

    def client_kw(self, pair: Pair | None = None, token: str = TOKEN) -> dict[str, str]:
        pair = pair or self.client
        return {"tls_ca": self.ca.ca, "tls_cert": pair.cert, "tls_key": pair.key, "token": token}

    def health(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            Path(self.ca.ca).read_bytes(),
            Path(self.client.key).read_bytes(),
            Path(self.client.cert).read_bytes(),
        )


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return Tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def secured(
    no_grid_env: None, tls: Tls, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    c = LocalCluster(2, log_dir=tmp_path_factory.mktemp("secured"), health_credentials=tls.health())
    try:
        for i in range(2):
            c.start_member(i, tls.member_args(i))
        for m in c.members:
            c.wait_ready(m)
        yield c
    finally:
        c.stop(grace=5)


def test_a_client_with_the_ca_its_certificate_and_the_token_works(
    secured: LocalCluster, tls: Tls
) -> None:
    items = {f"k{i}": i for i in range(500)}
    with grid.Client(secured.members[0].address, timeout=20, **tls.client_kw()) as c:
        wait_until(lambda: len(c.addresses()) == 2, 30, 0.2, "both members in the table")
        m = c.map("secure")
        m.put_many(items)
        assert m.get_many(list(items)) == items
        assert m.get("k7") == 7

    async def through_asyncio() -> dict:
        async with grid.AsyncClient(secured.members[1].address, timeout=20, **tls.client_kw()) as c:
            return await c.map("secure").get_many(list(items))

    assert asyncio.run(through_asyncio()) == items
    # the backups were filled over TLS between the members: every key has two copies
    with grid.Client(secured.members[0].address, timeout=20, **tls.client_kw()) as c:

        def copies() -> int:
            return sum(
                next(m["entries"] for m in s["maps"] if m["name"] == "secure")
                for s in (c.stats(), grid.Client(secured.members[1].address, timeout=20,
                                                 **tls.client_kw()).stats())
            )  # fmt: skip

        wait_until(lambda: copies() == 1000, 30, 0.2, "a backup copy of every key")


@pytest.mark.parametrize(
    "case",
    ["plain", "no-client-certificate", "stranger-certificate", "wrong-token", "no-token"],
)
def test_anything_short_is_refused_clearly_and_the_member_stays_up(
    secured: LocalCluster, tls: Tls, case: str
) -> None:
    kw: dict[str, str] = {
        "plain": {},
        "no-client-certificate": {"tls_ca": tls.ca.ca, "token": TOKEN},
        "stranger-certificate": tls.client_kw(tls.stranger),
        "wrong-token": tls.client_kw(token="guess"),
        "no-token": tls.client_kw(token=""),
    }[case]
    started = time.monotonic()
    address = secured.members[0].address
    with pytest.raises(grid.GridError) as refused, grid.Client(address, timeout=5, **kw) as c:
        c.map("secure").put("intruder", 1)
    why = str(refused.value)
    print(f"\n{case}: {why[:300]} ({time.monotonic() - started:.1f}s)")
    if case in ("wrong-token", "no-token"):  # said at once: retrying cannot help
        assert isinstance(refused.value, grid.AuthenticationFailed), why
        assert "authentication failed" in why, why
        assert time.monotonic() - started < 4, "a refused token is not retried"
    else:  # the member closed the TLS handshake: the client says what to check
        assert "tls_ca" in why, why
    assert "Traceback" not in why
    with grid.Client(secured.members[0].address, timeout=10, **tls.client_kw()) as c:
        assert c.map("secure").get("k7") == 7, "what was stored is still there"
        assert c.map("secure").get("intruder") is None, "nothing of the refused call landed"


def test_a_member_without_the_token_is_never_admitted(
    secured: LocalCluster, tls: Tls, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A third member with a certificate the CA signed but no token: membership messages
    are authenticated with a key derived from the token, so the others never admit it,
    and it is never given partitions it could not be sent (a certificate alone does not
    make a member)."""
    extra = tls.ca.issue("member-3")
    args = ["--tls-cert", extra.cert, "--tls-key", extra.key, "--tls-ca", tls.ca.ca]
    m3 = secured.start_member(2, args)
    try:
        wait_until(lambda: "rejected" in _logs(secured) or not m3.alive(), 30, 0.2,
                   "the members to reject its messages")  # fmt: skip
        with grid.Client(secured.members[0].address, timeout=10, **tls.client_kw()) as c:
            assert sorted(c.addresses()) == ["member-1", "member-2"]
            assert c.map("secure").get("k7") == 7
    finally:
        secured.kill(m3)
        m3.process.wait(10)
        secured.members.remove(m3)


def test_a_member_of_another_ca_with_the_same_token_is_never_admitted(
    secured: LocalCluster, tls: Tls
) -> None:
    """Another cluster's member: the same token, but its certificate and its trust are
    another CA's, so no data could pass between it and this cluster. The membership key
    derived from the token includes the CA bundle (Config.gossip_secret), so the others
    reject its messages and never name it; before, it was admitted as alive and the
    coordinator tried to fill it."""
    other = tls.stranger_ca.issue("member-3")
    args = ["--tls-cert", other.cert, "--tls-key", other.key, "--tls-ca", tls.stranger_ca.ca,
            "--auth-token", TOKEN]  # fmt: skip
    before = _logs(secured).count("rejected")
    m3 = secured.start_member(2, args)
    try:
        wait_until(lambda: _logs(secured).count("rejected") > before or not m3.alive(), 30, 0.2,
                   "the members to reject its messages")  # fmt: skip
        with grid.Client(secured.members[0].address, timeout=10, **tls.client_kw()) as c:
            assert sorted(c.addresses()) == ["member-1", "member-2"]
            assert all(m.name != "member-3" for m in c.members())
            assert c.map("secure").get("k7") == 7
    finally:
        secured.kill(m3)
        m3.process.wait(10)
        secured.members.remove(m3)


def test_the_cli_reads_the_credentials_a_member_reads(secured: LocalCluster, tls: Tls) -> None:
    """GRID_TLS_CA/CERT/KEY and GRID_AUTH_TOKEN: the variables a member's own config takes,
    so `grid` in a member's shell or container speaks to it as its peers do."""
    address = secured.members[0].address
    env = {"GRID_TLS_CA": tls.ca.ca, "GRID_TLS_CERT": tls.client.cert,
           "GRID_TLS_KEY": tls.client.key, "GRID_AUTH_TOKEN": TOKEN}  # fmt: skip
    got = run_grid("get", "k7", "-a", address, "-m", "secure", env=env)
    assert got.returncode == 0 and got.stdout.strip() == "7", got.stderr
    assert run_grid("health", "-a", address, env=env).returncode == 0
    status = run_grid("status", "-a", address, "--json", env=env)
    assert status.returncode == 0, status.stderr
    bare = run_grid("get", "k7", "-a", address, "-m", "secure")
    assert bare.returncode == 1 and "tls_ca" in bare.stderr, bare.stderr
    assert "Traceback" not in bare.stderr
    wrong = run_grid("get", "k7", "-a", address, "-m", "secure",
                     env={**env, "GRID_AUTH_TOKEN": "nope"})  # fmt: skip
    assert wrong.returncode == 1 and "authentication failed" in wrong.stderr, wrong.stderr


def _logs(cluster: LocalCluster) -> str:
    return "".join(m.log_tail(200) for m in cluster.members[:2])


def test_a_certificate_replaced_on_disk_is_served_without_a_restart(
    no_grid_env: None, tls: Tls, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("reload")
    live = Pair(str(folder / "member.pem"), str(folder / "member.key"))
    first = tls.ca.issue("first")
    shutil.copy(first.cert, live.cert)
    shutil.copy(first.key, live.key)
    c = LocalCluster(1, log_dir=folder, health_credentials=tls.health())
    try:
        c.start_member(0, ["--tls-cert", live.cert, "--tls-key", live.key, "--tls-ca", tls.ca.ca])
        c.wait_ready(c.members[0])
        second = tls.ca.issue("second")
        shutil.copy(second.key, live.key + ".new")
        shutil.copy(second.cert, live.cert + ".new")
        Path(live.key + ".new").replace(live.key)
        Path(live.cert + ".new").replace(live.cert)
        wait_until(
            lambda: "certificate reloaded" in c.members[0].log_tail(50), 30, 0.5,
            "the member to reload its certificate",
        )  # fmt: skip
        with grid.Client(c.members[0].address, timeout=10, **tls.client_kw(token="")) as client:
            client.map("m").put("after-reload", 1)
            assert client.map("m").get("after-reload") == 1
        member = c.members[0]
        host, grpc_port = member.address.rsplit(":", 1)
        data_port = member.cmd[member.cmd.index("--data-port") + 1]
        for port in (int(grpc_port), int(data_port)):  # gRPC and the data plane both
            assert _served_name(host, port, tls) == "second"
    finally:
        c.stop(grace=5)


def _served_name(host: str, port: int, tls: Tls) -> str:
    """The common name of the certificate served on host:port to a new TLS connection."""
    with socket.create_connection((host, port), timeout=5) as raw:
        ctx = ssl.create_default_context(cafile=tls.ca.ca)
        ctx.load_cert_chain(tls.client.cert, tls.client.key)
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            der = s.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_every_port_speaks_tls_and_wants_a_client_certificate(
    no_grid_env: None, tls: Tls, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With tls_cert and tls_ca, the RESP, memcached, metrics and dashboard ports speak TLS
    and want a client certificate, as gRPC and the data plane do: redis-py, pymemcache and
    an HTTPS client with the CA and a certificate get in (logging in where the port asks),
    and a plain client, or one without a certificate, does not."""
    import urllib.error
    import urllib.request

    import redis
    from pymemcache.client.base import Client as Memcache
    from pymemcache.exceptions import MemcacheUnexpectedCloseError

    from grid.harness.cluster import free_port

    metrics, dashboard = free_port(), free_port()
    c = LocalCluster(1, resp=True, memcached=True, health_credentials=tls.health(),
                     log_dir=tmp_path_factory.mktemp("tls-ports"))  # fmt: skip
    try:
        c.start_member(0, [*tls.member_args(0), "--metrics-port", str(metrics),
                           "--dashboard-port", str(dashboard)])  # fmt: skip
        c.wait_ready(c.members[0])
        m = c.members[0]
        good = ssl.create_default_context(cafile=tls.ca.ca)
        good.load_cert_chain(tls.client.cert, tls.client.key)
        no_cert = ssl.create_default_context(cafile=tls.ca.ca)

        host, port = m.resp_address.rsplit(":", 1)
        ok = redis.Redis(host, int(port), password=TOKEN, ssl=True, ssl_ca_certs=tls.ca.ca,
                         ssl_certfile=tls.client.cert, ssl_keyfile=tls.client.key)  # fmt: skip
        assert ok.set("k", "v") and ok.get("k") == b"v"
        ok.close()
        for refused in (
            redis.Redis(host, int(port), password=TOKEN, socket_timeout=5),
            redis.Redis(host, int(port), password=TOKEN, ssl=True, ssl_ca_certs=tls.ca.ca,
                        socket_timeout=5),
        ):  # fmt: skip
            with pytest.raises(redis.ConnectionError):
                refused.get("k")
            refused.close()

        host, port = m.memcached_address.rsplit(":", 1)
        mc = Memcache((host, int(port)), tls_context=good, timeout=5)
        assert mc.set("login", f"default {TOKEN}".encode(), noreply=False)
        assert mc.set("k", b"w", noreply=False) and mc.get("k") == b"w"
        mc.close()
        mc = Memcache((host, int(port)), tls_context=no_cert, timeout=5)
        with pytest.raises((ssl.SSLError, OSError, MemcacheUnexpectedCloseError)):
            mc.set("login", f"default {TOKEN}".encode(), noreply=False)
        mc.close()

        scrape = urllib.request.urlopen(f"https://127.0.0.1:{metrics}/metrics", context=good,
                                        timeout=10)  # fmt: skip
        assert b"grid_" in scrape.read()
        with pytest.raises((urllib.error.URLError, ssl.SSLError, OSError)):
            urllib.request.urlopen(f"https://127.0.0.1:{metrics}/metrics", context=no_cert,
                                   timeout=10)  # fmt: skip
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP: cut off
            urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10)

        with grpc.insecure_channel(m.address) as plain_grpc, pytest.raises(grpc.RpcError):
            health_pb2_grpc.HealthStub(plain_grpc).Check(health_pb2.HealthCheckRequest(),
                                                         timeout=5)  # fmt: skip

        def audited() -> bool:  # ours, and gRPC core's own line for its port
            text = m.log_path.read_text()
            ports = all(f'"port": "{p}"' in text for p in ("metrics", "RESP", "memcached"))
            return ports and "Handshake failed" in text

        wait_until(audited, 10, what="an audit line for each refused handshake")
        assert "TLS handshake refused" in m.log_path.read_text()

        page = urllib.request.Request(f"https://127.0.0.1:{dashboard}/api/cluster")
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(page, context=good, timeout=10)
        import base64

        page.add_header(
            "Authorization", "Basic " + base64.b64encode(f"ops:{TOKEN}".encode()).decode()
        )
        assert b"members" in urllib.request.urlopen(page, context=good, timeout=10).read()
    finally:
        c.stop(grace=5)
