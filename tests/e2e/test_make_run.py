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


@pytest.mark.slow
def test_the_sample_run_imports_every_file_with_the_documented_counts(databases: Databases, tmp_path: Path) -> None:
    app = databases.create("app")
    # Customer databases that do not exist yet: the run creates them, as on a new machine.
    names = {c: f"importsvc_run_{c}_{uuid.uuid4().hex[:8]}" for c in ("acme", "globex")}
    databases.created.extend(names.values())
    map_path = tmp_path / "customer_map.json"
    map_path.write_text(json.dumps({c: f"dbname={n}" for c, n in names.items()}))
    env = pipeline_env(app, map_path, ROOT / "sample", DATA_DIR=str(tmp_path / "data"))
    result = subprocess.run(
        [sys.executable, "-m", "service.demo"], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {
        line.split()[1]: line.split() for line in result.stdout.splitlines() if line[:8].count("-") == 0 and "/" in line
    }
    for name, (total, valid, invalid) in EXPECTED.items():
        row = lines[name]
        assert row[3] == "succeeded"
        assert tuple(map(int, row[4:8])) == (total, valid, invalid, valid), row
    acme = databases.dsn(names["acme"])
    assert query(acme, "SELECT count(*) FROM users") == [(14,)]
    assert query(acme, "SELECT data->>'first_name' FROM users WHERE data->>'external_id' = '1001'") != []
