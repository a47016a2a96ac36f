"""bench/train_step_time.py runs end to end and prints each mode's median step and their ratio."""
import pathlib
import re

import pytest
from harness_bench import load_bench_script

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _bench_module():
    return load_bench_script("train_step_time")


@pytest.mark.large
def test_prints_a_median_step_for_the_dsnn_the_single_model_and_the_one_pass_step_and_their_ratios(capsys):
    code = _bench_module().main(["--config", str(ROOT / "configs" / "tiny.yaml"), "--batch", "2",
                                 "--frames", "40", "--labels", "3", "--steps", "2"])
    assert code == 0
    out = capsys.readouterr().out
    dsnn = re.search(r"^dsnn: (\d+) level\(s\), median step (\d+\.\d+) s", out, re.M)
    single = re.search(r"^single: 1 level\(s\), median step (\d+\.\d+) s", out, re.M)
    ratio = re.search(r"^ratio dsnn/single: (\d+\.\d+)$", out, re.M)
    one_pass = re.search(r"^dsnn one pass: median step (\d+\.\d+) s", out, re.M)
    one_pass_ratio = re.search(r"^ratio one pass/dsnn: (\d+\.\d+)$", out, re.M)
    assert dsnn and single and ratio and one_pass and one_pass_ratio, out
    assert int(dsnn.group(1)) > 1   # the DSNN step runs several levels
    assert float(ratio.group(1)) > 0
