"""deploy/, checked statically (tests/deploy/test_compose.py runs it for real): the
Dockerfile's and compose file's member settings are ones `grid node` accepts, the
Kubernetes manifests are valid for the Kubernetes versions the docs name (schemas
bundled with kubernetes-validate), and the promises the comments make hold: non-root,
a data volume, an internal network, stop grace periods longer than a graceful leave.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from grid.cli.main import build_parser
from grid.config import Config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
K8S_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
"""The oldest with gRPC probes (GA in 1.27), and the newest the validator knows."""
DATA_DIR = "/var/lib/grid"


def member_config(env: dict[str, str]) -> Config:
    """What a member started with this environment runs with; every GRID_* name must be
    an option (Config.load ignores unknown variables, so a typo would pass silently)."""
    options = {"GRID_" + name.upper() for name in Config.__dataclass_fields__}
    unknown = {k for k in env if k.startswith("GRID_")} - options - {"GRID_CONFIG"}
    assert not unknown, f"not grid options: {sorted(unknown)}"
    return Config.load(env=env)


def leave_bound_s(config: Config) -> float:
    """The longest a graceful stop may take: the hand-off, then requests in flight."""
    return config.leave_timeout_s + config.shutdown_grace_s


def seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+)(s|m)", text)
    assert m, text
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)


# ---- Dockerfile ----------------------------------------------------------------------------------
def dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def instruction(name: str) -> list[str]:
    """The arguments of every `NAME ...` line, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", dockerfile())
    return re.findall(rf"^{name}\s+(.*)$", text, re.M)


def test_dockerfile_runs_grid_node_as_non_root_with_a_data_volume() -> None:
    assert json.loads(instruction("ENTRYPOINT")[-1]) == ["grid", "node"]
    build_parser().parse_args(["node", *json.loads(instruction("CMD")[-1])])
    assert instruction("ARG")[0] == "BASE=python:3.11-slim"
    assert instruction("USER")[-1].split(":")[0] not in ("0", "root")
    assert json.loads(instruction("VOLUME")[-1]) == [DATA_DIR]
    env = dict(re.findall(r"(GRID_\w+)=(\S+)", " ".join(instruction("ENV"))))
    config = member_config(env)
    assert (config.host, config.data_dir) == ("0.0.0.0", DATA_DIR)


def test_dockerfile_installs_offline_from_the_context() -> None:
    runs = " ".join(instruction("RUN"))
    assert "--no-index" in runs and "--find-links /wheels" in runs
    assert instruction("COPY")[0] == ". /wheels/"


def test_healthcheck_is_grid_health() -> None:
    check = instruction("HEALTHCHECK")[-1]
    cmd = json.loads(check[check.index("CMD") + 3 :])
    assert cmd[0] == "grid"
    args = build_parser().parse_args(cmd[1:])
    assert args.command == "health"
    timeout = float(re.search(r"--timeout=(\d+)s", check).group(1))
    assert args.timeout < timeout


# ---- docker-compose.yml --------------------------------------------------------------------------
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def members() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose()["services"].items() if n.startswith("member-")}


def test_compose_members_form_one_cluster_by_service_name() -> None:
    services = members()
    assert len(services) == 3
    configs = {name: member_config(s["environment"]) for name, s in services.items()}
    for name, config in configs.items():
        assert config.name == name
        assert config.advertise == f"{name}:5701"
        assert config.backups == 1
        # every member lists every member's gossip port (it skips itself)
        assert sorted(config.seeds.split(",")) == [f"{n}:6701" for n in sorted(services)]
        assert "entrypoint" not in services[name]  # the image's `grid node`


def test_compose_members_keep_data_in_their_own_volume() -> None:
    spec = compose()
    volumes = [s["volumes"] for s in members().values()]
    sources = [v[0].split(":")[0] for v in volumes]
    assert all(len(v) == 1 and v[0].endswith(f":{DATA_DIR}") for v in volumes)
    assert len(set(sources)) == 3 and set(sources) <= set(spec["volumes"])


def test_compose_network_has_no_way_out() -> None:
    spec = compose()
    assert spec["networks"] == {
        "grid": {
            "internal": True,
            "driver_opts": {"com.docker.network.bridge.inhibit_ipv4": "true"},
        }
    }
    for name, service in spec["services"].items():
        assert service["networks"] == ["grid"], name
        assert "ports" not in service and "network_mode" not in service, name


def test_compose_stop_grace_outlasts_a_graceful_leave() -> None:
    for name, service in members().items():
        config = member_config(service["environment"])
        assert seconds(service["stop_grace_period"]) > leave_bound_s(config), name


def test_compose_workload_is_a_client_of_the_members() -> None:
    workload = compose()["services"]["workload"]
    assert workload["image"] == members()["member-1"]["image"]
    assert workload["environment"]["GRID_ADDRESS"] in {f"{m}:5701" for m in members()}


# ---- Kubernetes ----------------------------------------------------------------------------------
def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def kind(name: str) -> list[dict[str, Any]]:
    return [d for d in manifests() if d["kind"] == name]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_are_valid(version: str) -> None:
    docs = manifests()
    assert sorted(d["kind"] for d in docs) == [
        "PodDisruptionBudget",
        "Service",
        "Service",
        "StatefulSet",
    ]
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_k8s_validator_rejects_a_broken_manifest() -> None:
    """The validator is not a no-op: a misspelt field and a wrong type are refused."""
    (sts,) = kind("StatefulSet")
    for breaks in (
        lambda d: d["spec"]["template"]["spec"].update(terminationGracePeriod=150),
        lambda d: d["spec"].update(replicas="three"),
    ):
        broken = copy.deepcopy(sts)
        breaks(broken)
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def container_env(sts: dict[str, Any]) -> dict[str, str]:
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_k8s_statefulset_discovers_through_the_headless_service() -> None:
    (sts,) = kind("StatefulSet")
    headless = [s for s in kind("Service") if s["spec"].get("clusterIP") == "None"]
    assert [s["metadata"]["name"] for s in headless] == [sts["spec"]["serviceName"]]
    assert headless[0]["spec"]["publishNotReadyAddresses"] is True
    config = member_config(container_env(sts))
    assert config.discovery_dns.split(".")[0] == sts["spec"]["serviceName"]
    assert config.name == "$(POD_NAME)" and config.advertise == "$(POD_IP):5701"
    assert config.backups == 1
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    for selector in [s["spec"]["selector"] for s in kind("Service")] + [
        sts["spec"]["selector"]["matchLabels"],
        kind("PodDisruptionBudget")[0]["spec"]["selector"]["matchLabels"],
    ]:
        assert selector.items() <= pod_labels.items()


def test_k8s_one_member_down_at_a_time() -> None:
    (pdb,) = kind("PodDisruptionBudget")
    (sts,) = kind("StatefulSet")
    config = member_config(container_env(sts))
    assert pdb["spec"]["maxUnavailable"] == config.backups == 1


def test_k8s_grace_period_outlasts_a_graceful_leave() -> None:
    (sts,) = kind("StatefulSet")
    config = member_config(container_env(sts))
    grace = sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > leave_bound_s(config)


def test_k8s_probes_volume_and_non_root() -> None:
    (sts,) = kind("StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == 5701, probe
    assert container["readinessProbe"]["grpc"]["service"] == "grid.v1.Grid"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == DATA_DIR
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
