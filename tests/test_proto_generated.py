"""The committed protobuf modules are exactly what the pinned grpcio-tools generates."""

from __future__ import annotations

from pathlib import Path

from grid.errors import Status
from proto import grid_pb2 as pb
from proto.generate import ROOT, generate


def test_generated_modules_are_current(tmp_path: Path) -> None:
    generate(tmp_path)
    for name in ("grid_pb2.py", "grid_pb2.pyi", "grid_pb2_grpc.py"):
        fresh = (tmp_path / "proto" / name).read_text()
        committed = (ROOT / "proto" / name).read_text()
        assert fresh == committed, f"proto/{name} is stale: run `make proto`"


def test_status_enum_matches_proto() -> None:
    assert {s.name: s.value for s in Status} == dict(pb.Status.items())
