"""Command-line entry points of dsnn_keras: ``dsnn-train``, ``dsnn-eval``, ``dsnn-lm`` and ``dsnn-average``.

TensorFlow is imported only after the arguments are parsed, so ``--help`` is instant.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from dsnn_keras.cli_args import accept_negative_lists
from dsnn_keras.distribute import STRATEGIES


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
    parser.add_argument("--warm_start", default=None, metavar="RUN_DIR",
                        help="start from a finished run's weights and nested pruning masks (same model, levels "
                             "and tokenizer, else an error naming the difference); the masks stay frozen, the "
                             "optimizer and the step counter start fresh; recorded in RUN_DIR/warm_start.json")
    parser.add_argument("--strategy", default=None, choices=STRATEGIES,
                        help="tf.distribute strategy (overrides training.strategy; default: the config's, "
                             "'default' = one device): mirrored = every local GPU; multi_worker = one "
                             "process per machine, cluster from the TF_CONFIG environment variable, every "
                             "worker runs this same command and --out must be storage they all reach; "
                             "tpu = TPUStrategy on --tpu. A step trains on the same global batch whatever "
                             "the number of replicas (docs/training.md, 'Distributed training')")
    parser.add_argument("--tpu", default=None, metavar="NAME",
                        help="with --strategy tpu: the TPU's name or grpc:// address (default: the local TPU)")
    return accept_negative_lists(parser)


def train_main(argv: Optional[Sequence[str]] = None) -> int:
    """``dsnn-train``: parses the arguments and calls `dsnn_keras.train_run.train_run`.

    Exit 0 on success; 1 with one line on stderr for a bad config, dataset or run directory, a run
    directory another dsnn-train is using, or a run that cannot continue; 2 for bad arguments
    (argparse's status), among them an ``--out`` that overlaps ``--data``."""
    args = _train_parser().parse_args(argv)
    from dsnn_keras.errors import DsnnError
    from dsnn_keras.train_run import train_run

    try:
        summary = train_run(args.data, args.config, args.out, overrides=args.overrides, max_steps=args.max_steps,
                            warm_start=args.warm_start, strategy=args.strategy, tpu=args.tpu)
    except DsnnError as err:   # arguments, config, dataset, lock, training: one line; anything else is a bug
        print(f"dsnn-train: error: {err}", file=sys.stderr)
        return err.exit_code
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


def _lm_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsnn-lm",
        description="Build the word n-gram LM (ARPA, interpolated absolute discounting) and the lexicon (each "
                    "word spelled in the dataset's tokenizer pieces) from the training transcripts of a prepared "
                    "dataset, for dsnn-eval --decoder beam and the exported file (docs/evaluation.md). "
                    "dsnn-prepare --lm_order N does the same inside the Beam job.")
    parser.add_argument("--data", required=True, metavar="DIR", help="prepared dataset directory (dsnn-prepare output)")
    parser.add_argument("--order", type=int, default=3, metavar="N", help="n-gram order (default: 3)")
    parser.add_argument("--split", default="train", help="split whose transcripts are counted (default: train)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output directory (default: DIR/lm; an old one is replaced once the new one is complete)")
    return accept_negative_lists(parser)


def lm_main(argv: Optional[Sequence[str]] = None) -> int:
    """``dsnn-lm --data DIR [--order 3]``: `dsnn_keras.ngram_lm.build_dataset_lm`; prints the directory written."""
    args = _lm_parser().parse_args(argv)
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from dsnn_keras.errors import DsnnError
    from dsnn_keras.ngram_lm import LmBundle, build_dataset_lm

    try:
        out = build_dataset_lm(args.data, order=args.order, split=args.split, out=args.out)
    except (DsnnError, FileNotFoundError) as err:
        print(f"dsnn-lm: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 1)
    info = LmBundle.read_dir(out).info
    print(f"dsnn-lm: {info['order']}-gram LM of {info['sentences']} sentences, {info['words']} words "
          f"(n-grams {info['ngrams']}) -> {out}", file=sys.stderr)
    print(out)
    return 0


def _average_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsnn-average",
        description="Average the trainable weights of a run's last checkpoints into a new run directory that "
                    "dsnn-eval and dsnn-export read like any run (the nested masks are the newest checkpoint's, "
                    "and must be the same in every averaged one). The source run is only read.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by dsnn-train (only read)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="new run directory (an earlier average there is replaced once the new one is complete; "
                             "any other non-empty directory is refused)")
    parser.add_argument("--last", type=int, default=2, metavar="K",
                        help="average the K newest checkpoints (default: 2; the run keeps "
                             "training.keep_checkpoints of them)")
    return parser


def average_main(argv: Optional[Sequence[str]] = None) -> int:
    """``dsnn-average RUN_DIR --out DIR [--last K]``: `dsnn_keras.checkpoint_average.average_checkpoints`."""
    args = _average_parser().parse_args(argv)
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from dsnn_keras.checkpoint_average import average_checkpoints
    from dsnn_keras.errors import DsnnError

    try:
        record = average_checkpoints(args.run_dir, args.out, last=args.last)
    except DsnnError as err:
        print(f"dsnn-average: error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"dsnn-average: mean of {', '.join(record['checkpoints'])} -> {args.out}", file=sys.stderr)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(train_main())
