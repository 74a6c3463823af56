"""The web dashboard of a real member, read by its JSON and by headless Chromium.

Three members on loopback, the dashboard on member-2 (any member serves the whole
cluster); a bounded workload with a known hit ratio; then the page loaded in Debian's
Chromium (headless), whose DOM after the page's own script ran must show every member,
the map and its hit ratio; a screenshot is kept in the test's folder (docs/dashboard.png
is one such). A second member with an auth_token shows the page only to whoever gives
the token as the password.
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import grid
from grid.harness.cluster import LocalCluster, free_port
from tests import needs
from tests.integration.support import wait_partitions_settled, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def watched(
    no_grid_env: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalCluster, int]]:
    port = free_port()
    c = LocalCluster(3, log_dir=tmp_path_factory.mktemp("dashboard"))
    try:
        for i in range(3):
            c.start_member(i, ["--dashboard-port", str(port)] if i == 1 else [])
        for m in c.members:
            c.wait_ready(m)
        wait_partitions_settled(c.addresses)
        with grid.Client(c.addresses[0], timeout=10) as client:
            users = client.map("users")
            users.put_many({f"u{i}": i for i in range(200)})
            for _ in range(3):  # 600 hits, 300 misses: a 66.7% hit ratio
                users.get_many([f"u{i}" for i in range(200)])
                users.get_many([f"nobody{i}" for i in range(100)])
        yield c, port
    finally:
        c.stop(grace=5)


def cluster_view(port: int, headers: dict[str, str] | None = None) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/cluster", headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def test_the_json_describes_the_whole_cluster(watched: tuple[LocalCluster, int]) -> None:
    _, port = watched

    def complete() -> dict | None:
        v = cluster_view(port)
        ratio = next((m["hit_ratio"] for m in v["maps"] if m["name"] == "users"), None)
        ready = len(v["members"]) == 3 and ratio is not None and len(v["series"]) >= 1
        return v if ready and abs(ratio - 2 / 3) < 1e-9 else None

    v = wait_until(complete, 20, 0.5, "three members and the map's hit ratio in the view")
    assert v["member"] == "member-2"
    assert sorted(m["name"] for m in v["members"]) == ["member-1", "member-2", "member-3"]
    assert all(m["state"] == "alive" for m in v["members"])
    assert sum(m["primaries"] for m in v["members"]) == 271
    assert sum(m["coordinator"] for m in v["members"]) == 1
    for name in ("member-1", "member-2", "member-3"):  # each seen joining, or there at start
        assert any(name in e["text"] for e in v["events"]), v["events"]


def test_chromium_shows_members_maps_and_hit_ratio(
    watched: tuple[LocalCluster, int], tmp_path: Path
) -> None:
    chromium = needs.command("chromium")
    _, port = watched
    url = f"http://127.0.0.1:{port}/"
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--virtual-time-budget=5000", "--window-size=1280,900"]  # fmt: skip
    dom = subprocess.run(
        [*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
    ).stdout
    assert 'data-loaded="yes"' in dom, dom[:2000]  # the page's script fetched and drew
    for text in ("member-1", "member-2", "member-3", "users", "66.7%", "(coordinator)"):
        assert text in dom, f"{text!r} not on the page"
    shot = tmp_path / "dashboard.png"
    subprocess.run([*flags, f"--screenshot={shot}", url], capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_with_a_token_the_page_wants_it_as_the_password(
    no_grid_env: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    port = free_port()
    c = LocalCluster(1, log_dir=tmp_path_factory.mktemp("dashboard-token"))
    try:
        c.start_member(0, ["--dashboard-port", str(port), "--auth-token", "t0ken"])
        c.wait_ready(c.members[0])
        with pytest.raises(urllib.error.HTTPError) as refused:
            cluster_view(port)
        assert refused.value.code == 401
        wrong = base64.b64encode(b"ops:guess").decode()
        with pytest.raises(urllib.error.HTTPError):
            cluster_view(port, {"Authorization": f"Basic {wrong}"})
        good = base64.b64encode(b"ops:t0ken").decode()
        assert cluster_view(port, {"Authorization": f"Basic {good}"})["member"] == "member-1"
    finally:
        c.stop()
