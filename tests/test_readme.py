"""The README's examples run as written (against a real member for the SDK example)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from grid.harness.cluster import LocalCluster

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_readme_has_the_two_setup_commands_first() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make run", "make test"]


@pytest.mark.integration
def test_sdk_example_runs_against_a_member() -> None:
    sdk = next(b for b in BLOCKS if "grid.Client" in b)
    with LocalCluster(1) as cluster:
        code = sdk.replace("127.0.0.1:5701", cluster.addresses[0])
        exec(compile(code, "README.md", "exec"), {})


def test_embedded_example_runs() -> None:
    embedded = next(b for b in BLOCKS if "grid.Node" in b)
    namespace: dict = {}
    exec(compile(embedded, "README.md", "exec"), namespace)
    import asyncio

    asyncio.run(namespace["main"]())
