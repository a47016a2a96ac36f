"""Command-line entry points of dsnn_keras: ``dsnn-train`` and ``dsnn-eval``.

TensorFlow is imported only after the arguments are parsed, so ``--help`` is instant.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsnn-train",
        description="Train a DSNN speech recognizer (all sparsity levels jointly, or one level with "
                    "training.mode=single) on a prepared dataset. Re-running the same command resumes "
                    "from the last checkpoint in --out.")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="prepared dataset directory written by dsnn-prepare (dataset.json, TFRecords)")
    parser.add_argument("--config", required=True, metavar="FILE",
                        help="training config, YAML or JSON with version: 1 (see configs/ and docs/training.md)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR",
                        help="run directory: config.yaml, checkpoints/, train_log.jsonl, tensorboard/; "
                             "an existing one is resumed (its config must match)")
    parser.add_argument("--max_steps", type=int, default=None, metavar="N",
                        help="stop (with a checkpoint) once the run reaches step N; the schedules still "
                             "follow training.total_steps, so re-running without it continues the run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config value, dotted key, YAML value; repeatable "
                             "(e.g. --set training.mode=single --set pruning.single_sparsity=0.7)")
    return parser


def train_main(argv: Optional[Sequence[str]] = None) -> int:
    """``dsnn-train``: exit 0 on success; 1 with one line on stderr for a bad config, dataset or run
    directory, a run directory another dsnn-train is using, or a run that cannot continue; 2 for
    bad arguments (argparse's status), among them an ``--out`` that overlaps ``--data``."""
    args = _train_parser().parse_args(argv)

    def fail(message: str, code: int) -> int:
        print(f"dsnn-train: error: {message}", file=sys.stderr)
        return code

    if args.max_steps is not None and args.max_steps < 0:
        return fail("--max_steps must be >= 0", 2)
    from dsnn_keras.errors import DsnnError
    from dsnn_keras.paths import PathOverlapError, check_disjoint, exclusive_lock

    try:
        # Before anything is written: the run directory must not be (in) the dataset or hold it.
        check_disjoint(args.out, {"--data": args.data}, out_flag="--out")
    except PathOverlapError as err:
        return fail(str(err), 2)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        return fail(f"--out {args.out} exists and is not a directory", 2)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from dsnn_keras.config import apply_overrides, load_config
    from dsnn_keras.dataset import PreparedDataset

    try:
        config = load_config(args.config)
        if args.overrides:
            config = apply_overrides(config, args.overrides, where=f"{args.config} with --set")
        PreparedDataset.from_dir(args.data)  # a bad --data is refused before --out is created
        # One writer per run directory: a second dsnn-train on it fails at once.
        with exclusive_lock(args.out, ".dsnn-train.lock", holder="dsnn-train"):
            from dsnn_keras.trainer import train

            summary = train(config, args.data, args.out, max_steps=args.max_steps, lock=False)
    except DsnnError as err:   # config, dataset, lock, training: one line; anything else is a bug
        return fail(str(err), err.exit_code)
    dev = summary.get("dev")
    line = f"step {summary['step']}"
    if dev:
        line += " dev WER " + " ".join(f"{r['sparsity']:g}:{r['wer']:.3f}" for r in dev)
    print(f"dsnn-train: done, {line}; run directory {args.out}", file=sys.stderr)
    return 0


def eval_main(argv: Optional[Sequence[str]] = None) -> int:
    """``dsnn-eval``: implemented in `dsnn_keras.evaluate.main`."""
    from dsnn_keras.evaluate import main

    return main(argv)


if __name__ == "__main__":
    sys.exit(train_main())
