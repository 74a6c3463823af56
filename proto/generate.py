"""Regenerate the Python modules from proto/*.proto.

Run from anywhere: `python -m proto.generate`. The modules are committed (so a
user needs no protoc), and tests/test_proto_generated.py regenerates them into
a temporary directory and fails if they differ from what is committed.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = sorted(p.relative_to(ROOT) for p in (ROOT / "proto").glob("*.proto"))


def generate(out_dir: Path) -> None:
    """Write grid_pb2.py, grid_pb2.pyi and grid_pb2_grpc.py under out_dir/proto."""
    from grpc_tools import protoc  # dev dependency, imported only when generating

    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *map(str, PROTOS),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
