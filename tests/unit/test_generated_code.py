"""The committed gRPC code in service/generated/ is exactly what `make protos` makes from protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

GENERATED = ("importer_pb2.py", "importer_pb2_grpc.py", "importer_pb2.pyi")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the Makefile's `protos` command into a temporary folder; return its service/generated."""
    out = tmp_path_factory.mktemp("protos")
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-Iservice/generated=protos",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--pyi_out={out}",
        "protos/importer.proto",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return out / "service" / "generated"


@pytest.mark.parametrize("name", GENERATED)
def test_the_committed_generated_file_matches_a_fresh_make_protos(regenerated: Path, name: str) -> None:
    fresh = (regenerated / name).read_text()
    committed = (ROOT / "service" / "generated" / name).read_text()
    assert committed == fresh, f"service/generated/{name} is stale: run `make protos` and commit the result"


def test_protoc_generates_nothing_the_repository_does_not_hold(regenerated: Path) -> None:
    assert sorted(path.name for path in regenerated.iterdir()) == sorted(GENERATED)
