"""Train-step time of a nested-wrapped 4-layer LSTM model at each level vs the same plain model.

Forward + backward + SGD update, tf.function, fixed batch, on CPU. Configurations are interleaved
in rounds so machine noise hits all alike; medians are printed, with the ratio to the plain
tf_keras model (goal: <= 1.15x at every level).

    .venv/bin/python bench/bench_nested_step.py --rounds 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=128, help="LSTM units per layer (default 128)")
    parser.add_argument("--frames", type=int, default=50, help="sequence length (default 50)")
    parser.add_argument("--features", type=int, default=80, help="input features per frame (default 80)")
    parser.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration per round (default 5)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--levels", default="0.0,0.5,0.7,0.9", help="comma-separated sparsity levels")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    from dsnn_keras import NestedPolynomialDecay, prune_nested, sparsity_level_scope, update_nested_masks

    levels = tuple(float(s) for s in args.levels.split(","))
    keras.utils.set_random_seed(0)
    inp = keras.Input((args.frames, args.features))
    x = inp
    for i in range(4):
        x = keras.layers.LSTM(args.units, return_sequences=True, name=f"lstm_{i}")(x)
    base = keras.Model(inp, keras.layers.Dense(129, name="out")(x))
    wrapped = prune_nested(base, NestedPolynomialDecay(levels, begin_step=0, end_step=0))
    update_nested_masks(wrapped, 0)

    rng = np.random.default_rng(0)
    xb = tf.constant(rng.normal(size=(args.batch, args.frames, args.features)).astype("float32"))
    yb = tf.constant(rng.normal(size=(args.batch, args.frames, 129)).astype("float32"))
    opt = keras.optimizers.SGD(1e-6)  # tiny lr: weights barely move, so every config sees the same model

    def make_step(model, level=None):
        variables = model.trainable_variables

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                if level is None:
                    out = model(xb, training=True)
                else:
                    with sparsity_level_scope(model, level):
                        out = model(xb, training=True)
                loss = tf.reduce_mean(tf.square(out - yb))
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss

        return step

    configs = {"plain tf_keras": make_step(base)}
    for i, s in enumerate(levels):
        configs[f"nested level {i} ({s:.0%})"] = make_step(wrapped, i)
    for fn in configs.values():  # trace + warm up
        for _ in range(2):
            fn().numpy()

    times = {name: [] for name in configs}
    for r in range(args.rounds):
        for name, fn in configs.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                loss = fn()
            loss.numpy()
            times[name].append((time.perf_counter() - start) / args.steps)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    plain = statistics.median(times["plain tf_keras"])
    print(f"4 x LSTM({args.units}) + Dense(129), batch {args.batch} x {args.frames} frames x {args.features}, "
          f"{args.rounds} rounds x {args.steps} steps, tf {tf.__version__}")
    print(f"{'configuration':<26} {'median ms/step':>14} {'ratio':>7}")
    worst = 0.0
    for name, values in times.items():
        med = statistics.median(values)
        ratio = med / plain
        if name != "plain tf_keras":
            worst = max(worst, ratio)
        print(f"{name:<26} {med * 1e3:>14.1f} {ratio:>6.3f}x")
    print(f"worst nested/plain ratio: {worst:.3f}x (goal <= 1.15x): {'MET' if worst <= 1.15 else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
