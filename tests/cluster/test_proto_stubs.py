"""The committed gRPC stubs are what `make proto` generates from the .proto file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = "proto/triserve/v1/triserve.proto"
GENERATED = ("triserve_pb2.py", "triserve_pb2_grpc.py", "triserve_pb2.pyi")


def test_committed_stubs_match_the_proto_file(tmp_path):
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", "-I", ".", f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}", f"--pyi_out={tmp_path}", PROTO,
        ],
        cwd=ROOT,
        check=True,
    )  # fmt: skip
    for name in GENERATED:
        fresh = (tmp_path / "proto/triserve/v1" / name).read_text()
        committed = (ROOT / "proto/triserve/v1" / name).read_text()
        assert fresh == committed, f"{name} is stale: run `make proto`"
