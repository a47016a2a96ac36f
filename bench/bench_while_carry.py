#!/usr/bin/env python3
"""What the `--sparse_speed` FC loop's per-step overhead is made of: the WHILE loop's carried outputs.

`tflite.fc_lstm.FCLoopLSTM` writes each step's output into a ``[frames, units]`` loop variable with
``DYNAMIC_UPDATE_SLICE``; LiteRT's ``WHILE`` copies its loop variables between the cond and body
subgraphs on every iteration, so that buffer costs O(frames) per step. This script times one
recurrent LSTM layer (dense random weights, batch 1, 1 thread) as a TFLite ``WHILE`` loop three ways:
carrying the outputs with a dynamic shape (what FCLoopLSTM does), with a static padded shape, and
not carrying them (the floor: the step's own ops), and prints medians per step.

Example:
    .venv/bin/python bench/bench_while_carry.py --units 160 --frames 75 300
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def build(units: int, carry: str, max_frames: int) -> bytes:
    import tensorflow as tf
    from tensorflow.compiler.tf2xla.python import xla

    recurrent = tf.constant(np.random.default_rng(0).normal(size=(units, 4 * units)).astype(np.float32) * 0.05)

    @tf.function(input_signature=[tf.TensorSpec([None, 4 * units], tf.float32)])
    def loop(projected):
        steps = tf.shape(projected)[0]

        def body(t, h, c, outputs):
            z = tf.slice(projected, tf.stack([t, 0]), [1, 4 * units]) + tf.matmul(h, recurrent)
            i, f, g, o = tf.split(z, 4, axis=1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            h = tf.sigmoid(o) * tf.tanh(c)
            if carry == "none":
                outputs = outputs + h
            else:
                outputs = xla.dynamic_update_slice(outputs, h, tf.stack([t, 0]))
            return t + 1, h, c, outputs

        zeros = tf.zeros([1, units])
        initial, invariant = {
            "dynamic": (tf.zeros(tf.stack([steps, units])), tf.TensorShape([None, units])),
            "static": (tf.zeros([max_frames, units]), tf.TensorShape([max_frames, units])),
            "none": (zeros, tf.TensorShape([1, units])),
        }[carry]
        _, _, _, outputs = tf.while_loop(
            lambda t, *_: t < steps, body, [tf.constant(0), zeros, zeros, initial],
            shape_invariants=[tf.TensorShape([]), tf.TensorShape([1, units]), tf.TensorShape([1, units]), invariant])
        return {"outputs": outputs}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([loop.get_concrete_function()], tf.Module())
    return converter.convert()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=160, help="LSTM units (default: 160, the AN4 config)")
    parser.add_argument("--frames", type=int, nargs="+", default=[75, 300],
                        help="loop lengths (default: 75 = a 3 s clip after 4x subsampling, and 300)")
    parser.add_argument("--repeats", type=int, default=30, help="timed invokes per case (default: 30)")
    args = parser.parse_args(argv)
    from ai_edge_litert.interpreter import Interpreter

    max_frames = max(args.frames)
    models = {carry: build(args.units, carry, max_frames) for carry in ("dynamic", "static", "none")}
    rng = np.random.default_rng(1)
    print(f"units {args.units}, 1 thread, median of {args.repeats} invokes")
    print("| frames | carried outputs | ms per invoke | µs per step | × no carry |")
    print("|---:|---|---:|---:|---:|")
    for frames in args.frames:
        projected = rng.normal(size=(frames, 4 * args.units)).astype(np.float32)
        medians = {}
        for carry, data in models.items():
            runner = Interpreter(model_content=data, num_threads=1).get_signature_runner()
            runner(projected=projected)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                runner(projected=projected)
                times.append(time.perf_counter() - start)
            medians[carry] = float(np.median(times))
        for carry, seconds in medians.items():
            print(f"| {frames} | {carry} | {seconds * 1e3:.3f} | {seconds / frames * 1e6:.1f} | "
                  f"{seconds / medians['none']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
