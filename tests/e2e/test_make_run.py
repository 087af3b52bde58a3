"""`make run`'s program imports every sample file through real workers and prints the right counts."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, Databases, query
from tests.integration.conftest import pipeline_env

# total, valid, invalid per sample file, as sample/README.md documents them
EXPECTED = {
    "acme/courses.kv": (8, 6, 2),
    "acme/users-xlsx.xlsx": (6, 5, 1),
    "acme/users.csv": (12, 9, 3),
    "globex/organizations.tsv": (8, 6, 2),
    "globex/users.csv": (4, 4, 0),
}


def _run(env: dict[str, str]) -> dict[str, list[str]]:
    result = subprocess.run(
        [sys.executable, "-m", "service.edges.cli.demo"], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # It ends by writing one job's rejected rows to a file, and says where.
    (named,) = [line for line in result.stdout.splitlines() if "rejected rows of job" in line]
    rejects = Path(named.rsplit(": ", 1)[1]).read_text(encoding="utf-8").splitlines()
    assert rejects[0] == "external_id,title,organization_id,start_date,credits,active,errors"
    assert len(rejects) == 3 and rejects[1].startswith("C-4,Databases,ORG-2,2025-02-30,")
    return {
        line.split()[1]: line.split() for line in result.stdout.splitlines() if line[:8].count("-") == 0 and "/" in line
    }


@pytest.mark.slow
def test_the_sample_run_imports_every_file_with_the_documented_counts_and_again_changes_nothing(
    databases: Databases, tmp_path: Path
) -> None:
    app = databases.create("app")
    # Customer databases that do not exist yet: the run creates them, as on a new machine.
    names = {c: f"importsvc_run_{c}_{uuid.uuid4().hex[:8]}" for c in ("acme", "globex")}
    databases.created.extend(names.values())
    map_path = tmp_path / "customer_map.json"
    map_path.write_text(json.dumps({c: f"dbname={n}" for c, n in names.items()}))
    env = pipeline_env(app, map_path, ROOT / "sample", DATA_DIR=str(tmp_path / "data"))
    first = _run(env)
    for name, (total, valid, invalid) in EXPECTED.items():
        row = first[name]
        assert row[2] == "succeeded"
        # total valid invalid inserted updated unchanged
        assert tuple(map(int, row[3:9])) == (total, valid, invalid, valid, 0, 0), row
    acme = databases.dsn(names["acme"])
    assert query(acme, "SELECT count(*) FROM users") == [(14,)]
    assert query(acme, "SELECT data->>'first_name' FROM users WHERE data->>'external_id' = '1001'") != []
    before = query(acme, "SELECT id, data, job_id, source_row, imported_at FROM users ORDER BY id")
    second = _run(env)
    for name, (total, valid, invalid) in EXPECTED.items():
        assert tuple(map(int, second[name][3:9])) == (total, valid, invalid, 0, 0, valid), second[name]
    assert query(acme, "SELECT id, data, job_id, source_row, imported_at FROM users ORDER BY id") == before
