#!/usr/bin/env python3
"""WER against measured latency for every route to a cheaper model on AN4 (issue 16's comparison).

Routes, each with its dev WER (utterances decoded alone) and the latency of its exported file:

- ``unit-DSNN``: one model, unit granularity, each level exported sliced (``if_tree_sliced``);
- ``unit single``: a model trained alone at one sparsity with unit granularity, exported sliced;
- ``narrow dense``: a dense model trained alone at the widths a unit level keeps;
- ``weight-DSNN`` and ``weight single``: the committed weight-granularity comparison
  (``docs/results.json``); their files keep the dense shapes and fused kernels at every level, so
  their latency is measured on files of the same architecture (the masks' values do not change
  the kernels' work; `bench/unit_latency_probe.py` builds those files).

All files are timed in ONE `tflite.bench` round-robin (``recognize(audio)``, the app's path, on AN4
dev utterances; 1 thread; medians of per-utterance ratios to the dense single-level file), and
``recognize_features`` (the model without the in-graph frontend) in a second round-robin.
Writes ``OUT/routes.json`` and the report ``docs/results_latency.md`` with a plot
(``docs/results_latency.png``); `bench/an4_comparison.py`'s report links it.

Example:
    .venv/bin/python bench/an4_routes.py --comparison runs/an4_unit --out runs/an4_unit/routes
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from typing import Any, Optional, Sequence

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "bench"))
GOALS = {0.5: 0.55, 0.7: 0.35, 0.9: 0.15}


def _say(message: str) -> None:
    print(f"[an4_routes {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _eval_wers(run_dir: pathlib.Path) -> dict[float, float]:
    report = json.loads((run_dir / "eval.json").read_text())
    return {round(float(e["sparsity"]), 4): float(e["wer"]) for e in report["levels"]}


def export_files(comparison: pathlib.Path, out: pathlib.Path, verify_audio: Sequence[pathlib.Path],
                 quantize: str) -> dict[str, pathlib.Path]:
    """Exports the unit routes' runs (skipping files that exist); returns {route file key: path}."""
    from tflite.export import ExportOptions, export_run

    runs = comparison / "runs"
    files = {}
    suffix = "" if quantize == "none" else f"_{quantize}"
    options = ExportOptions(quantize=quantize)
    jobs = [("unit_dsnn", runs / "dsnn")]
    jobs += [(f"unit_single_{n}", runs / f"single_{n}") for n in ("50", "70", "90")]
    jobs += [(f"narrow_{n}", runs / f"narrow_{n}") for n in ("50", "70", "90")]
    for key, run_dir in jobs:
        if not (run_dir / "eval.json").is_file():
            _say(f"{key}: {run_dir} has no eval.json yet; skipped")
            continue
        path = out / f"{key}{suffix}.tflite"
        single_dir = out / f"dense_single{suffix}" if key == "unit_dsnn" else None
        if not path.is_file():
            _say(f"export {key} ({quantize})")
            export_run(run_dir, path, options=options, verify_audio_files=verify_audio,
                       single_level_dir=single_dir, single_levels=[0] if single_dir else None, log=_say)
        files[key] = path
        if single_dir is not None:
            files["dense_single"] = single_dir / "level_0.tflite"
    return files


def weight_shape_file(out: pathlib.Path, quantize: str, config_path: pathlib.Path) -> pathlib.Path:
    """The weight-granularity DSNN file of the same architecture (masks at the final levels)."""
    from unit_latency_probe import build_files

    path = out / f"weight_{quantize}.tflite"
    if not path.is_file():
        build_files(out, str(config_path), quantize)
    return path


def dev_audio(an4: pathlib.Path, dev_speakers: Sequence[str], limit: int) -> list[pathlib.Path]:
    files = []
    for speaker in dev_speakers:
        files += sorted((an4 / "train" / speaker).rglob("*.flac")) + sorted((an4 / "train" / speaker).rglob("*.wav"))
    step = max(1, len(files) // limit)
    return files[::step][:limit]


def time_files(files: dict[str, pathlib.Path], utterances: Sequence[pathlib.Path], repeats: int,
               signature: str) -> dict[tuple[str, int], dict[str, float]]:
    """One round-robin over every (file, level): median ms and median per-utterance ratio to the
    dense single file."""
    from tflite.audio import load_audio
    from tflite.bench import Candidate, _time_round_robin
    from tflite.metadata import read_metadata

    candidates = []
    for key, path in files.items():
        meta = read_metadata(path)
        for level, sparsity in enumerate(meta.sparsities):
            kind = "single" if key == "dense_single" else "multi"
            candidates.append(Candidate(kind, path, level, level, sparsity))
    audio = [(str(p), load_audio(p, 16000)) for p in utterances]
    if signature == "recognize_features":
        from dsnn_keras.frontend import FeatureConfig
        from tflite.export import run_frontend_tflite

        feats = run_frontend_tflite(FeatureConfig(), [a for _, a in audio])
        times = _time_features(candidates, feats, repeats)
    else:
        times = _time_round_robin(candidates, audio, 1, repeats)
    dense = next(c for c in candidates if c.kind == "single")
    dense_per_utt = np.median(times[dense], axis=1)
    out = {}
    key_of = {path: key for key, path in files.items()}
    for c in candidates:
        per_utt = np.median(times[c], axis=1)
        out[(key_of[c.path], c.level)] = {"median_ms": float(np.median(times[c]) * 1e3),
                                           "ratio": float(np.median(per_utt / dense_per_utt))}
    return out


def _time_features(candidates, feats, repeats):
    from tflite.runtime import load_interpreter, prime_all_signatures
    from tflite.metadata import read_metadata

    runners, interpreters, resets = {}, {}, {}
    for c in candidates:
        if c.path not in runners:
            interpreters[c.path] = load_interpreter(c.path, 1)
            runners[c.path] = interpreters[c.path].get_signature_runner("recognize_features")
            resets[c.path] = not read_metadata(c.path).state_reset_in_graph
            if resets[c.path]:
                prime_all_signatures(interpreters[c.path])
    times = {c: np.zeros([len(feats), repeats]) for c in candidates}
    order = np.random.default_rng(0)
    for r in range(repeats):
        for u, f in enumerate(feats):
            for index in order.permutation(len(candidates)):
                c = candidates[index]
                for timed in (False, True):
                    start = time.perf_counter()
                    runners[c.path](features=f, sparsity_level=np.int32(c.level))
                    if timed:
                        times[c][u, r] = time.perf_counter() - start
                    if resets[c.path]:
                        interpreters[c.path].reset_all_variables()
    return times


def route_rows(timing: dict, timing_model: dict, files: dict, comparison: pathlib.Path,
               weight_results: dict) -> list[dict[str, Any]]:
    runs = comparison / "runs"
    weight_rows = {round(r["sparsity"], 4): r for r in weight_results["rows"]}
    levels = (0.0, 0.5, 0.7, 0.9)
    rows = []

    def add(route, sparsity, wer, key, level):
        t, m = timing.get((key, level)), timing_model.get((key, level))
        rows.append({"route": route, "sparsity": sparsity, "wer": wer, "file": files[key].name, "level": level,
                     "latency_ms": t and t["median_ms"], "latency_ratio": t and t["ratio"],
                     "model_latency_ms": m and m["median_ms"], "model_latency_ratio": m and m["ratio"],
                     "file_bytes": files[key].stat().st_size})

    if "unit_dsnn" in files:
        wers = _eval_wers(runs / "dsnn")
        for level, s in enumerate(levels):
            add("unit-DSNN", s, wers.get(s), "unit_dsnn", level)
    for s in levels[1:]:
        n = f"{round(100 * s):02d}"
        if f"unit_single_{n}" in files:
            add("unit single", s, _eval_wers(runs / f"single_{n}").get(s), f"unit_single_{n}", 0)
        if f"narrow_{n}" in files:
            add("narrow dense", s, _eval_wers(runs / f"narrow_{n}").get(0.0), f"narrow_{n}", 0)
    for level, s in enumerate(levels):
        w = weight_rows.get(s, {})
        add("weight-DSNN", s, w.get("dsnn_wer"), "weight_dsnn", level)
        add("weight single" if s else "dense single", s, w.get("single_wer"),
            "weight_dsnn" if s else "dense_single", level if s else 0)
    return rows


def render(rows: Sequence[dict], setup: dict) -> str:
    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}"

    def ratio(v):
        return "–" if v is None else f"{v:.2f}×"

    def ms(v):
        return "–" if v is None else f"{v:.2f}"

    lines = ["# WER against measured latency: every route to a cheaper model (AN4)", "",
             f"Generated by `bench/an4_routes.py` on {setup['generated']}. Command: `{setup['command']}`.", "",
             "Latency: the exported float32 files, 1 thread, one round-robin over every file and level "
             f"({setup['utterances']} AN4 dev utterances × {setup['repeats']} repeats, each timed invoke "
             "after an untimed one), medians of per-utterance ratios to the **dense single-level file**. "
             "`recognize(audio)` is what an app calls (the in-graph log-mel frontend included, a fixed "
             "cost per second of audio); `recognize_features` is the model alone. WER: AN4 dev "
             f"({setup.get('dev_utterances', '?')} utterances, each decoded alone, greedy CTC). "
             "The weight-granularity rows' WERs are the committed comparison (docs/results.md); their "
             "files keep dense shapes, and their latency is measured on a file of the same architecture "
             "(weights untrained; the fused kernels' work does not depend on the values).", "",
             "| route | sparsity | dev WER % | × dense, recognize(audio) | × dense, model only | ms (audio) | file MB |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['route']} | {r['sparsity']:.1f} | {pct(r['wer'])} | {ratio(r['latency_ratio'])} | "
                     f"{ratio(r['model_latency_ratio'])} | "
                     f"{ms(r['latency_ms'])} | "
                     f"{r['file_bytes'] / 1e6:.2f} |")
    lines += ["", "![WER against latency](results_latency.png)", ""]
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, key, title in ((axes[0], "latency_ratio", "recognize(audio): frontend + model"),
                           (axes[1], "model_latency_ratio", "recognize_features: model only")):
        for route, marker in (("unit-DSNN", "o-"), ("unit single", "s--"), ("narrow dense", "^--"),
                              ("weight-DSNN", "x-"), ("weight single", "+:"), ("dense single", "D")):
            pts = [(r[key], 100 * r["wer"]) for r in rows if r["route"] == route and r[key] and r["wer"] is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker, label=route)
        ax.set_xlabel("latency × dense single file (1 thread)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("AN4 dev WER %")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comparison", type=pathlib.Path, default=REPO_ROOT / "runs" / "an4_unit",
                        help="bench/an4_comparison.py --set pruning.granularity=unit --narrow output")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="default: COMPARISON/routes")
    parser.add_argument("--an4", type=pathlib.Path, default=REPO_ROOT.parent / "shared" / "data" / "an4")
    parser.add_argument("--weight_results", type=pathlib.Path, default=REPO_ROOT / "docs" / "results.json")
    parser.add_argument("--config", type=pathlib.Path, default=REPO_ROOT / "configs" / "an4.yaml")
    parser.add_argument("--utterances", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--report", type=pathlib.Path, default=REPO_ROOT / "docs" / "results_latency.md")
    args = parser.parse_args(argv)
    out = args.out or args.comparison / "routes"
    out.mkdir(parents=True, exist_ok=True)
    weight_results = json.loads(args.weight_results.read_text())
    dev_speakers = weight_results["setup"]["dev_speakers"]
    utterances = dev_audio(args.an4, dev_speakers, args.utterances)
    files = export_files(args.comparison, out, utterances[:4], "none")
    files["weight_dsnn"] = weight_shape_file(out, "none", args.config)
    _say(f"timing recognize(audio): {len(files)} files")
    timing = time_files(files, utterances, args.repeats, "recognize")
    _say("timing recognize_features")
    timing_model = time_files(files, utterances, args.repeats, "recognize_features")
    rows = route_rows(timing, timing_model, files, args.comparison, weight_results)
    setup = {"generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
             "command": " ".join([".venv/bin/python", "bench/an4_routes.py", *(argv if argv is not None else sys.argv[1:])]),
             "utterances": len(utterances), "repeats": args.repeats,
             "dev_utterances": weight_results["setup"].get("dev_utterances")}
    (out / "routes.json").write_text(json.dumps({"setup": setup, "rows": rows}, indent=2) + "\n")
    args.report.write_text(render(rows, setup))
    args.report.with_suffix(".json").write_text(json.dumps({"setup": setup, "rows": rows}, indent=2) + "\n")
    plot(rows, args.report.with_suffix(".png"))
    sys.stdout.write(render(rows, setup))
    return 0


if __name__ == "__main__":
    sys.exit(main())
