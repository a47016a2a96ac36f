#!/usr/bin/env python3
"""Latency of the shipped AN4 shape per level and route, on exported files (weights untrained).

Latency does not depend on the weights' values, so this times the exported files of the AN4
architecture (configs/an4.yaml) with its masks set at the final levels: the unit-granularity
DSNN file (each level sliced), the weight-granularity DSNN file (today's default; every level full
width), their int8 variants, against the dense single-level file; 1 thread, `tflite.bench`'s
round-robin, medians of per-utterance ratios. Writes OUT/bench.json, bench.md.

Example:
    .venv/bin/python bench/unit_latency_probe.py --out runs/unit_latency_probe
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np


def build_files(out: pathlib.Path, config_path: str, quantize: str) -> dict:
    import dsnn_keras
    from dsnn_keras.config import apply_overrides, load_config
    from dsnn_keras.model import build_pruned_model
    from dsnn_keras.sparsity.units import narrow_model, units_kept
    from tflite.export import ExportOptions, export_levels, export_single_levels

    pieces = [chr(ord("a") + i) for i in range(26)] + ["'", "\u2581"]
    files = {}
    for granularity in ("unit", "weight"):
        config = apply_overrides(load_config(config_path), [f"pruning.granularity={granularity}"])
        fc = config.feature_config()
        model = build_pruned_model(config, fc, len(pieces), np.zeros(fc.num_mel_bins), np.ones(fc.num_mel_bins))
        dsnn_keras.update_nested_masks(model, config.pruning.end_step)
        levels = config.effective_levels
        options = ExportOptions(quantize=quantize, verify=False)
        if granularity == "unit":
            kept = units_kept(model)
            units = [{k: v[i] for k, v in kept.items()} for i in range(len(levels))]
            models = [narrow_model(model, i) for i in range(len(levels))]
        else:
            units = None
            models = [dsnn_keras.strip_nested(model, i) for i in range(len(levels))]
        path = out / f"{granularity}_{quantize}.tflite"
        export_levels(models, path, sparsities=levels, feature_config=fc, pieces=pieces,
                      blank_id=len(pieces), options=options, units=units)
        files[granularity] = path
        if granularity == "unit":
            export_single_levels(models[:1], out / f"single_{quantize}", sparsities=levels[:1],
                                 feature_config=fc, pieces=pieces, blank_id=len(pieces),
                                 options=options)
            files["single"] = out / f"single_{quantize}" / "level_0.tflite"
    return files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--config", default="configs/an4.yaml")
    parser.add_argument("--quantize", default="none,dynamic-int8")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    from tflite.bench import run_benchmark, write_reports

    args.out.mkdir(parents=True, exist_ok=True)
    for quantize in args.quantize.split(","):
        files = build_files(args.out, args.config, quantize)
        result = run_benchmark(files["unit"], baselines=[files["single"]], compare=[files["weight"]],
                               threads=(1,), repeats=args.repeats, log=lambda m: print(m, file=sys.stderr))
        write_reports(result, args.out / quantize)
        for row in result["rows"]:
            print(quantize, row["file"], row["level"], row["kind"], f"{row['median_ms']:.2f} ms",
                  f"{row['ratio_to_dense_single']:.3f}x")
        for name, info in result["files"].items():
            print(quantize, name, info["size_bytes"], f"{info['size_ratio_to_dense_single']:.2f}x size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
