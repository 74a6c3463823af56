"""deploy/ cannot be run here (no Docker engine), so check it statically: every member
command in the Dockerfile and compose file is one `grid node` accepts, and every
path the Dockerfile copies exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

from grid.cli.main import build_parser

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _parse_node_args(args: list[str]) -> None:
    ns = build_parser().parse_args(["node", *args])
    assert ns.command == "node"


def test_dockerfile_command_parses_and_copies_existing_paths() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    assert entry == ["grid", "node"]
    _parse_node_args(json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1)))
    for src in re.findall(r"^COPY (\S+)", text, re.M):
        for part in src.split():
            assert (DEPLOY.parent / part).exists(), f"COPY {part}: no such path"


def test_compose_member_commands_parse() -> None:
    text = (DEPLOY / "docker-compose.yml").read_text()
    commands = [json.loads(c) for c in re.findall(r"^\s+command: (\[.*?\])$", text, re.M | re.S)]
    assert len(commands) == 3
    for cmd in commands:
        _parse_node_args(cmd)
    names = [cmd[cmd.index("--name") + 1] for cmd in commands]
    assert len(set(names)) == 3
    # every member but the first joins through the first one's gossip port (6701 = 5701 + 1000)
    assert [cmd[cmd.index("--seeds") + 1] for cmd in commands[1:]] == [f"{names[0]}:6701"] * 2
