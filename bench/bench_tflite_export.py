"""Benchmark of the one-file multi-level TFLite export on the AN4-sized model (configs/an4.yaml).

Builds the model with random weights (latency and size do not depend on the values), makes four
nested magnitude-masked levels (0/50/70/90 %; 1x4 blocks for the sparse-speed variant), exports:
  * multi-level float32 (fused LSTMs, IF tree)            -> multi_float.tflite
  * multi-level dynamic-int8                               -> multi_int8.tflite
  * multi-level sparse-speed (FC-loop LSTMs, sparse storage, 1x4-block masks) -> multi_sparse.tflite
  * multi-level shared weights (--design shared), float32 and int8 storage -> shared_float.tflite,
    shared_int8.tflite (timed at the cached level: each timed invoke follows one at the same level)
  * each level alone, the usual way (float32)              -> singles/level_<i>.tflite
then runs tflite.bench on AN4 utterances (or synthetic clips) at 1 and 2 threads.

Usage: .venv/bin/python bench/bench_tflite_export.py OUT_DIR [--utterances DIR] [--repeats N]
       [--lstm_units 512] [--variants multi_sparse]

--lstm_units overrides the config's LSTM widths (e.g. 512: where the sparse-speed option pays off);
--variants limits the multi-level files written and timed (multi_float is always the reference).
"""
import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

LEVELS = (0.0, 0.5, 0.7, 0.9)
VARIANTS = ("multi_int8", "multi_sparse", "shared_float", "shared_int8")


def _masked_levels(base, block):
    import numpy as np
    import tf_keras as keras

    def mask(w, s):
        rows, cols = w.shape
        b = block if rows % block == 0 else 1
        scores = np.abs(w).reshape(rows // b, b, cols).sum(1).reshape(-1)
        keep = np.zeros(scores.size, bool)
        keep[np.argsort(-scores, kind="stable")[:int(round(scores.size * (1 - s)))]] = True
        return np.repeat(keep.reshape(rows // b, cols), b, axis=0)

    prunable = [layer for layer in base.layers
                if isinstance(layer, (keras.layers.LSTM, keras.layers.Dense)) and layer.name != "logits"]
    models = []
    for s in LEVELS:
        m = keras.models.clone_model(base)
        m.set_weights(base.get_weights())
        for layer in prunable:
            target = m.get_layer(layer.name)
            target.set_weights([w * mask(w, s) if w.ndim == 2 and s > 0 else w for w in target.get_weights()])
        models.append(m)
    return models


def _switch_cost(path, audio, threads: int, repeats: int = 10) -> tuple[float, float]:
    """Median ms of an invoke after a level change (3 -> 1) and of one at the cached level (1 -> 1)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path), num_threads=threads).get_signature_runner("recognize")
    switched, same = [], []
    for _ in range(repeats):
        for level, sink in ((3, None), (1, switched), (1, same)):
            start = time.perf_counter()
            runner(audio=audio, sparsity_level=np.int32(level))
            if sink is not None:
                sink.append((time.perf_counter() - start) * 1e3)
    return float(np.median(switched)), float(np.median(same))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--utterances", nargs="*", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--skip_export", action="store_true")
    parser.add_argument("--lstm_units", type=int, default=None,
                        help="width of every LSTM layer (default: the config's)")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS,
                        help="multi-level files besides multi_float (default: all)")
    args = parser.parse_args()
    out = pathlib.Path(args.out_dir)
    pieces = [f"p{i}" for i in range(128)]
    if not args.skip_export:
        import numpy as np
        import tf_keras as keras

        from dsnn_keras.config import apply_overrides, load_config
        from dsnn_keras.frontend import FeatureConfig
        from dsnn_keras.model import build_model
        from tflite.export import ExportOptions, export_levels, export_single_levels

        config = load_config(pathlib.Path(__file__).resolve().parents[1] / "configs" / "an4.yaml")
        if args.lstm_units:
            depth = len(config.model.lstm_units)
            config = apply_overrides(config, [f"model.lstm_units={[args.lstm_units] * depth}"])
        fc = FeatureConfig()
        keras.utils.set_random_seed(0)
        base = build_model(config.model, fc, len(pieces), np.zeros(80), np.ones(80))
        common = dict(sparsities=LEVELS, feature_config=fc, pieces=pieces, blank_id=len(pieces))
        unstructured, blocks = _masked_levels(base, 1), _masked_levels(base, 4)
        for name, models, options in (("multi_float", unstructured, ExportOptions()),
                                      ("multi_int8", unstructured, ExportOptions(quantize="dynamic-int8")),
                                      ("multi_sparse", blocks, ExportOptions(sparse_speed=True)),
                                      ("shared_float", unstructured, ExportOptions(design="shared")),
                                      ("shared_int8", unstructured,
                                       ExportOptions(design="shared", quantize="dynamic-int8"))):
            if name != "multi_float" and name not in args.variants:
                continue
            start = time.time()
            report = export_levels(models, out / f"{name}.tflite", options=options, **common)
            worst = max(v["max_abs_diff"] for v in report.verification)
            print(f"{name}: {report.size_bytes} bytes, {time.time() - start:.0f} s, max diff {worst:.2e}",
                  file=sys.stderr, flush=True)
        export_single_levels(unstructured, out / "singles", options=ExportOptions(), **common,
                             log=lambda m: print(m, file=sys.stderr, flush=True))
    from tflite.bench import run_benchmark, to_markdown

    singles = sorted((out / "singles").glob("level_*.tflite"))
    result = run_benchmark(out / "multi_float.tflite", singles, args.utterances, repeats=args.repeats,
                           limit=args.limit, out_dir=out / "report",
                           compare=[out / f"{name}.tflite" for name in args.variants],
                           log=lambda m: print(m, file=sys.stderr, flush=True))
    print(to_markdown(result))
    from tflite.bench import collect_utterances

    audio = collect_utterances(args.utterances, 16000, limit=1)[0][1]
    for name in ["multi_float"] + [v for v in args.variants if v.startswith("shared")]:
        for threads in (1, 2):
            switched, same = _switch_cost(out / f"{name}.tflite", audio, threads)
            print(f"{name}, {threads} thread(s): invoke after a level change {switched:.2f} ms, "
                  f"at the cached level {same:.2f} ms")


if __name__ == "__main__":
    main()
