"""bench/input_teardown.py: the script runs both input paths and reports what each built.

Its figure (how long deleting an epoch's input takes) is a benchmark's, not asserted here; the
script needs its own process because logical CPU devices are set before TensorFlow starts.
"""
import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "input_teardown.py"


def test_times_both_input_paths_and_the_trainers_is_per_replica(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--lifetime_s", "0.3", "--json", str(tmp_path / "t.json")],
                         capture_output=True, text=True, timeout=180, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "t.json").read_text())
    assert result["replicas"] == 2
    rows = {row["path"]: row for row in result["rows"]}
    assert sorted(rows) == ["tf_default", "trainer"]
    assert rows["tf_default"]["replication_mode"] is None
    assert "PER_REPLICA" in rows["trainer"]["replication_mode"]
    for row in rows.values():
        assert row["batches"] > 0 and row["lifetime_s"] >= 0.3 and row["deletion_s"] >= 0
        assert f"| {row['path']} |" in out.stdout


@pytest.mark.parametrize("args, message", [
    (["--replicas", "1"], "--replicas: need at least 2"),
    (["--lifetime_s", "0"], "--lifetime_s: need a positive number"),
    (["--paths", ","], "--paths: one or both of tf_default, trainer"),
    (["--paths", "trainer,trainer"], "--paths: one or both"),
    (["--paths", "fast"], "--paths: one or both"),
    (["--json", "no/such/dir/t.json"], "--json: no directory 'no/such/dir'"),
])
def test_refuses_bad_arguments_naming_the_one_at_fault(args, message):
    out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 2 and message in out.stderr
