"""Tests for bench/an4_routes.py's table: which WER and latency each route row takes.

The eval.json, results.json and timing inputs are FABRICATED FIXTURES (numbers made up for the
test), not measurements.
"""
import json
import pathlib

import pytest
from harness_bench import load_bench_script


def _load_script():
    return load_bench_script("an4_routes")


routes = _load_script()


def _eval(path: pathlib.Path, wers: dict) -> None:
    path.mkdir(parents=True)
    (path / "eval.json").write_text(json.dumps({"levels": [{"sparsity": s, "wer": w} for s, w in wers.items()]}))


def test_rows_pair_each_route_with_its_own_wer_and_file_latency(tmp_path):
    runs = tmp_path / "runs"
    _eval(runs / "dsnn", {0.0: 0.20, 0.5: 0.21, 0.7: 0.22, 0.9: 0.27})
    _eval(runs / "single_90", {0.9: 0.30})
    _eval(runs / "narrow_90", {0.0: 0.29})
    files = {}
    for key in ("unit_dsnn", "unit_single_90", "narrow_90", "weight_dsnn", "dense_single"):
        files[key] = tmp_path / f"{key}.tflite"
        files[key].write_bytes(b"x" * 1000)
    timing = {("unit_dsnn", level): {"median_ms": 10.0 - 2 * level, "ratio": 1.0 - 0.2 * level} for level in range(4)}
    timing.update({("unit_single_90", 0): {"median_ms": 4.0, "ratio": 0.4},
                   ("narrow_90", 0): {"median_ms": 3.9, "ratio": 0.39},
                   ("dense_single", 0): {"median_ms": 10.0, "ratio": 1.0}})
    timing.update({("weight_dsnn", level): {"median_ms": 10.1, "ratio": 1.01} for level in range(4)})
    weight = {"rows": [{"sparsity": s, "dsnn_wer": 0.19 + s / 10, "single_wer": 0.22 + s / 10}
                       for s in (0.0, 0.5, 0.7, 0.9)]}
    rows = routes.route_rows(timing, timing, files, tmp_path, weight)
    by = {(r["route"], r["sparsity"]): r for r in rows}
    assert by[("unit-DSNN", 0.9)]["wer"] == 0.27 and by[("unit-DSNN", 0.9)]["latency_ratio"] == pytest.approx(0.4)
    assert by[("unit single", 0.9)]["wer"] == 0.30 and by[("unit single", 0.9)]["latency_ratio"] == 0.4
    assert by[("narrow dense", 0.9)]["wer"] == 0.29 and by[("narrow dense", 0.9)]["file"] == "narrow_90.tflite"
    assert by[("dense single", 0.0)]["wer"] == 0.22 and by[("dense single", 0.0)]["latency_ratio"] == 1.0
    assert by[("weight single", 0.9)]["latency_ratio"] == 1.01 and by[("weight-DSNN", 0.5)]["wer"] == 0.24
    assert ("unit single", 0.5) not in by          # no eval.json: no row, not a made-up one
    text = routes.render(rows, {"generated": "now", "command": "c", "utterances": 2, "repeats": 1})
    assert "| unit-DSNN | 0.9 | 27.0 | 0.40× |" in text
    routes.plot(rows, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
