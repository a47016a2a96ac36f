"""How long ending an epoch's distributed input takes: TensorFlow's default input path against the trainer's.

The trainer builds a new tf.data pipeline every epoch and drops the previous one. Under a
`tf.distribute.MirroredStrategy` with several local replicas, TensorFlow's default input path
(a multi-device iterator) creates per-device iterators with tf.data's autotuner on, and deleting
one waits out its autotune thread's sleep (a period doubling from 10 ms up to 60 s). This script
builds that strategy on ``--replicas`` logical CPUs (a stand-in for GPUs: the input path is the
same), keeps an iterator of a pipeline with the trainer's epoch options
(`dsnn_keras.dataset.epoch_options`) alive for ``--lifetime_s`` seconds while reading from it, then
times its deletion (including the garbage collection that frees it), for each input path:

- ``tf_default``: ``distribute_datasets_from_function(fn)``, TensorFlow's defaults;
- ``trainer``: ``distribute_datasets_from_function(fn, options=input_options(strategy))``, what
  `dsnn_keras.trainer.Trainer.batches` does (`dsnn_keras.distribute.input_options`).

The wait is deterministic in the lifetime (the autotune thread's sleeps are 10 ms, 20 ms, ...;
after 70 s it is inside the 41 s sleep that ends at 81.9 s), so one pass per path says it; the
noise is the machine's. Prints a Markdown table, optionally writes JSON. Takes about
``2 x (lifetime_s + a few s)`` seconds.

Example:
    python bench/input_teardown.py --lifetime_s 70
"""
from __future__ import annotations

import argparse
import gc
import json
import pathlib
import sys
import time
from typing import Optional, Sequence

PATHS = ("tf_default", "trainer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=2, help="logical CPU devices = replicas (default: 2)")
    parser.add_argument("--lifetime_s", type=float, default=70.0,
                        help="seconds each iterator lives (is read from) before it is deleted (default: 70)")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, of {PATHS} (default: both)")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="write the figures here")
    return parser


def run(argv: Optional[Sequence[str]] = None) -> dict:
    args = build_parser().parse_args(argv)
    paths = [p for p in args.paths.split(",") if p]
    if args.replicas < 2:
        build_parser().error(f"--replicas: need at least 2 (the stall is a several-device one), got {args.replicas}")
    if args.lifetime_s <= 0:
        build_parser().error(f"--lifetime_s: need a positive number of seconds, got {args.lifetime_s:g}")
    if not paths or set(paths) - set(PATHS) or len(set(paths)) != len(paths):
        build_parser().error(f"--paths: one or both of {', '.join(PATHS)}, each once, got {args.paths!r}")
    if args.json is not None and not args.json.parent.is_dir():
        build_parser().error(f"--json: no directory {str(args.json.parent)!r} to write {args.json.name!r} into")
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.replicas)
    from dsnn_keras.dataset import epoch_options
    from dsnn_keras.distribute import input_options

    def epoch(context):
        ds = tf.data.Dataset.range(10 ** 12).map(lambda x: tf.cast(x, tf.float32)).batch(4)
        return ds.prefetch(2).with_options(epoch_options())

    rows = []
    for path in paths:
        # A fresh strategy per path: the first PER_REPLICA input rewrites a strategy's input devices.
        strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(args.replicas)])
        options = input_options(strategy) if path == "trainer" else None
        iterator = iter(strategy.distribute_datasets_from_function(epoch, options=options))
        start, batches = time.perf_counter(), 0
        while time.perf_counter() - start < args.lifetime_s:
            next(iterator)
            batches += 1
            time.sleep(0.01)
        began = time.perf_counter()
        del iterator
        gc.collect()
        rows.append({"path": path, "lifetime_s": round(began - start, 2), "batches": batches,
                     "deletion_s": round(time.perf_counter() - began, 3),
                     "replication_mode": None if options is None else str(options.experimental_replication_mode)})
    result = {"replicas": args.replicas, "tensorflow": tf.__version__, "rows": rows}
    print(f"| input path ({args.replicas} logical CPUs) | lived (s) | deletion (s) |")
    print("|---|---:|---:|")
    for row in rows:
        print(f"| {row['path']} | {row['lifetime_s']:.1f} | {row['deletion_s']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    run(sys.argv[1:])
