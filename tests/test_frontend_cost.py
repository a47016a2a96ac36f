"""bench/frontend_cost.py runs end to end on a tiny exported file and real AN4 audio."""
import importlib.util
import pathlib

import pytest

import harness_tflite as h

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _bench_module():
    """The script as a module: its ``main(argv)`` is what ``python bench/frontend_cost.py`` runs."""
    spec = importlib.util.spec_from_file_location("frontend_cost", ROOT / "bench" / "frontend_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
