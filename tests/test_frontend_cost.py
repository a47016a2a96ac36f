"""bench/frontend_cost.py runs end to end on a tiny exported file and real AN4 audio."""
import pathlib
import subprocess
import sys

import pytest

import harness_tflite as h

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.large
def test_prints_a_row_per_part_and_a_ratio_per_level_and_frontend(data_dir):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "frontend_cost.py"), str(h.exported("float")),
                          "--audio_dir", str(data_dir / "an4" / "train"), "--clips", "2", "--rounds", "1"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    assert sum(line.startswith("| level ") for line in rows) == len(h.LEVELS)
    default = next(line for line in rows if line.startswith("| default") and "×" in line)
    assert default.split("|")[2].strip() == "1.00×"   # the default frontend + level 0 is the reference
