"""bench/frontend_cost.py runs end to end on a tiny exported file and real AN4 audio."""

import pytest

import harness_tflite as h
from harness_bench import load_bench_script


def _bench_module():
    return load_bench_script("frontend_cost")


@pytest.mark.large
def test_prints_a_row_per_part_and_a_ratio_per_level_and_frontend(data_dir, capsys):
    # In this process (TensorFlow is loaded here already): the script's process is not under test.
    code = _bench_module().main([str(h.exported("float")), "--audio_dir", str(data_dir / "an4" / "train"),
                                 "--clips", "2", "--rounds", "1"])
    assert code == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert sum(line.startswith("| level ") for line in rows) == len(h.LEVELS)
    default = next(line for line in rows if line.startswith("| default") and "×" in line)
    assert default.split("|")[2].strip() == "1.00×"   # the default frontend + level 0 is the reference
