"""``dsnn-job``: the main job end to end; see `dsnn_job.job`."""
from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Optional, Sequence

from dsnn_job.job import DECODERS, DEFAULT_CONFIG, STEPS, JobConfig
from dsnn_keras.cli_args import accept_negative_lists
from dsnn_keras.distribute import STRATEGIES
from tflite.export import DESIGN_CHOICES, QUANTIZE_CHOICES, ExportOptions

_EXPORT_DEFAULTS = ExportOptions()


def _threads(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsnn-job",
        description="Run the whole chain: [synthesize] -> prepare -> train -> [tune] -> eval -> export -> transcribe -> "
                    "bench -> [push] -> summary. Each step writes OUT/<step>/ with _artifact.json (the inputs and "
                    "parameters it was made from); re-running skips up-to-date steps, a changed input re-runs "
                    "that step and the ones after it, an interrupted training resumes.")
    parser.add_argument("--out", default="demo", metavar="DIR", help="output directory (default: demo)")
    parser.add_argument("--corpus", default="synth", metavar="synth|DIR",
                        help="'synth' = generate the built-in espeak corpus (default); or a LibriSpeech-layout "
                             "directory, e.g. ../shared/data/an4/train, split by speaker into train and dev")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="training config (default: configs/demo.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="training config override, as dsnn-train --set (repeatable)")
    parser.add_argument("--num_utterances", type=int, default=3600, help="synthetic corpus size (default: 3600)")
    parser.add_argument("--seed", type=int, default=1, help="synthetic corpus seed (default: 1)")
    parser.add_argument("--dev_speakers", default="0.1", metavar="FRACTION|SPK,SPK",
                        help="held-out speakers of a real corpus (default: 0.1)")
    parser.add_argument("--tokenizer_type", default="char", choices=("unigram", "bpe", "char"),
                        help="dsnn-prepare tokenizer (default: char; unigram-128 stayed in CTC's blank-only "
                             "phase for 475 DSNN steps on the demo corpus, char left it by step 250)")
    parser.add_argument("--vocab_size", type=int, default=128, help="SentencePiece vocabulary size (default: 128)")
    parser.add_argument("--speed_perturb", default="1.0", metavar="F,F,...",
                        help="dsnn-prepare --speed_perturb: one train example per speed factor, e.g. 0.9,1.0,1.1 "
                             "(default: 1.0, off)")
    parser.add_argument("--eval_split", default=None,
                        help="split to evaluate and benchmark on (default: test for synth, dev otherwise)")
    parser.add_argument("--decoder", default="beam", choices=DECODERS,
                        help="beam (default): tune the beam decoder's LM weight and word bonus on dev (the LM is "
                             "built from the training transcripts by the prepare step), report WER with both "
                             "decoders and carry the tuned decoder, LM and lexicon in model.tflite; greedy: "
                             "greedy CTC only, no LM in the file")
    parser.add_argument("--quantize", default=_EXPORT_DEFAULTS.quantize, choices=QUANTIZE_CHOICES,
                        help="dsnn-export --quantize (default: %(default)s)")
    parser.add_argument("--design", default=_EXPORT_DEFAULTS.design, choices=DESIGN_CHOICES,
                        help="dsnn-export --design (default: %(default)s)")
    parser.add_argument("--max_wer", type=float, default=None, metavar="W",
                        help="dsnn-export gate: stop if any level's WER exceeds W (a fraction)")
    parser.add_argument("--baselines", default="all", choices=("all", "dense"),
                        help="single-level files the benchmark compares against (default: all)")
    parser.add_argument("--bench_threads", type=_threads, default=(1, 2), metavar="N[,N]",
                        help="interpreter threads to benchmark (default: 1,2)")
    parser.add_argument("--bench_repeats", type=int, default=5, help="benchmark passes (default: 5)")
    parser.add_argument("--bench_utterances", type=int, default=8,
                        help="held-out utterances the benchmark times (default: 8)")
    parser.add_argument("--strategy", default=None, choices=STRATEGIES,
                        help="dsnn-train --strategy for the train step (default: the config's training.strategy); "
                             "multi_worker is refused: run dsnn-train on every worker instead (docs/training.md)")
    parser.add_argument("--tpu", default=None, metavar="NAME", help="dsnn-train --tpu (with --strategy tpu)")
    parser.add_argument("--force", action="append", default=[], choices=STEPS, metavar="STEP",
                        help=f"re-run STEP and every step after it even if up to date; one of {', '.join(STEPS)}")
    parser.add_argument("--warm_start", default=None, metavar="RUN_DIR",
                        help="start training from a finished run's weights and nested pruning masks (e.g. the "
                             "previous scheduled job's OUT/run); same model, levels and tokenizer required; the "
                             "masks stay frozen, optimizer and step counter start fresh")
    parser.add_argument("--push_dir", default=None, metavar="DIR",
                        help="after the benchmark, push model.tflite, eval.json and a model card to DIR/<version>/ "
                             "(1, 2, 3, ...; atomic) if every level's WER is no worse than the latest pushed "
                             "version's by more than --push_tolerance on the same evaluation data")
    parser.add_argument("--push_tolerance", type=float, default=0.0, metavar="T",
                        help="absolute WER tolerance per level, a fraction: 0.01 lets a level be one WER point worse "
                             "(default: 0.0, no level may be worse)")
    parser.add_argument("--push_force", action="store_true",
                        help="push even if a level is worse or the evaluation split, utterances or levels differ "
                             "from the pushed version's")
    return accept_negative_lists(parser)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``dsnn-job``: exit 0 on success, 1 with one ``dsnn-job: error:`` line for a failed step or a
    bad input, 2 for bad arguments (among them an ``--out`` that overlaps ``--corpus``), 130 on Ctrl-C."""
    args = _parser().parse_args(argv)
    from dsnn_job.job import run_job
    from dsnn_keras import fileio
    from dsnn_keras.errors import DsnnError

    try:
        config = JobConfig(
            out=fileio.as_path(args.out), corpus=args.corpus,
            config=fileio.as_path(args.config) if args.config else DEFAULT_CONFIG,
            overrides=tuple(args.overrides), num_utterances=args.num_utterances, seed=args.seed,
            dev_speakers=args.dev_speakers, tokenizer_type=args.tokenizer_type, vocab_size=args.vocab_size,
            speed_perturb=args.speed_perturb,
            eval_split=args.eval_split, decoder=args.decoder, quantize=args.quantize, design=args.design, max_wer=args.max_wer,
            baselines=args.baselines, bench_threads=args.bench_threads, bench_repeats=args.bench_repeats,
            bench_utterances=args.bench_utterances, force=tuple(args.force),
            warm_start=fileio.as_path(args.warm_start) if args.warm_start else None,
            push_dir=fileio.as_path(args.push_dir) if args.push_dir else None,
            push_tolerance=args.push_tolerance, push_force=args.push_force,
            strategy=args.strategy, tpu=args.tpu)
        run_job(config)
    except DsnnError as error:   # a step's failure, an overlapping --out (exit 2), a bad config
        print(f"dsnn-job: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("dsnn-job: interrupted; run the same command again to continue (training resumes from its "
              "last checkpoint)", file=sys.stderr)
        return 130
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"dsnn-job: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
