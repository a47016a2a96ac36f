"""Median training-step time of a config: the DSNN sandwich step vs a single-level step, and the
DSNN's one-pass step (`training.one_pass_before_pruning`: the steps before pruning begins).

Usage: python bench/train_step_time.py --config configs/an4.yaml [--batch 24 --frames 330 --steps 12]

Builds a tiny synthetic prepared dataset only for its metadata (vocabulary, CMVN), then times the
trainer's compiled step on fixed random batches of ``batch x frames`` (AN4 averages ~270 frames per
utterance; 8000 frames per batch ~= 24 x 330). Prints medians, the DSNN/single ratio and the
one-pass/DSNN ratio.
TensorFlow's thread pools follow ``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS`` (default:
every core), e.g. ``TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 python bench/...``.
"""
import argparse
import io
import pathlib
import sys
import tempfile
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/an4.yaml", help="training config to time")
    parser.add_argument("--batch", type=int, default=24, help="utterances per batch")
    parser.add_argument("--frames", type=int, default=330, help="frames per utterance")
    parser.add_argument("--labels", type=int, default=20, help="tokens per utterance")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per mode (after one warm-up)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
    with tempfile.TemporaryDirectory(prefix="train_step_time_") as tmp:
        return _time_steps(args, pathlib.Path(tmp))


def _time_steps(args, tmp: pathlib.Path) -> int:
    import tensorflow as tf

    from fixtures_data import build_prepared_dataset
    from dsnn_keras.config import apply_overrides, load_config
    from dsnn_keras.dataset import PreparedDataset
    from dsnn_keras.trainer import Trainer

    data = PreparedDataset.from_dir(build_prepared_dataset(tmp / "data", num_train=8, num_dev=2))
    base = load_config(args.config)
    rng = np.random.default_rng(0)
    bins = data.feature_config.num_mel_bins
    batch = {"features": tf.constant(rng.normal(size=[args.batch, args.frames, bins]).astype(np.float32)),
             "num_frames": tf.fill([args.batch], args.frames),
             "labels": tf.constant(rng.integers(1, data.vocab_size, size=[args.batch, args.labels]), tf.int32),
             "label_lengths": tf.fill([args.batch], args.labels),
             # One replica: its rows start the global batch (dsnn_keras.distribute.split_global_batches).
             "first_row": tf.constant(0, tf.int32), "global_batch": tf.constant(args.batch, tf.int32),
             "global_min_frames": tf.constant(args.frames, tf.int32)}
    results = {}
    for mode, overrides in (("dsnn", []), ("single", ["training.mode=single"])):
        config = apply_overrides(base, overrides)
        trainer = Trainer(config, data, tmp / f"run_{mode}", stream=io.StringIO())
        next(trainer.batches())  # builds the step function
        n = config.num_sandwich_levels
        chosen = trainer.sandwich_draw(0)   # the levels the trainer's first step runs
        levels = tf.constant(chosen, tf.int32)
        results[mode] = _median_step(lambda i: trainer._compute(batch, levels, tf.constant(i, tf.int64)),
                                     trainer, args.steps, mode)
        print(f"{mode}: {n} level(s), median step {results[mode]:.3f} s "
              f"(batch {args.batch} x {args.frames} frames)", flush=True)
        if mode == "dsnn":
            # A step before pruning.begin_step with the option on (Trainer.step_levels): the densest
            # level alone, its loss scaled for the levels it stands for.
            one, scale = tf.constant([0], tf.int32), tf.constant(trainer.one_pass_scale(chosen))
            results["one_pass"] = _median_step(
                lambda i: trainer._compute_one(batch, one, tf.constant(i, tf.int64), scale),
                trainer, args.steps, "dsnn one pass")
            print(f"dsnn one pass: median step {results['one_pass']:.3f} s (the densest level alone, its "
                  "loss scaled: the steps before pruning.begin_step)", flush=True)
    print(f"ratio dsnn/single: {results['dsnn'] / results['single']:.2f}")
    print(f"ratio one pass/dsnn: {results['one_pass'] / results['dsnn']:.2f}")
    return 0


def _median_step(compute, trainer, steps: int, label: str) -> float:
    """Median seconds of ``steps`` calls of ``compute(i)`` + the optimizer update, after one warm-up
    call (the trace and compile, printed)."""
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        grads, losses, *_ = compute(i)
        trainer._apply(grads)
        float(losses[0])
        times.append(time.perf_counter() - t)
        if i == 0:
            print(f"{label}: first step (trace + compile) {times[0]:.1f} s", flush=True)
    return float(np.median(times[1:]))


if __name__ == "__main__":
    sys.exit(main())
