"""``dsnn-prepare``: audio corpora -> prepared dataset directory, as an Apache Beam job.

Run locally (Beam's in-process FnApiRunner, the DirectRunner's batch engine; PrismRunner is never
tried) or on Dataflow by passing the standard Beam flags::

    dsnn-prepare --input ../shared/data/an4 --out data/an4 --dev_speakers 0.1
    dsnn-prepare --input ../shared/data/an4/train --out data/an4_sp --dev_speakers 0.1 --speed_perturb 0.9,1.0,1.1
    dsnn-prepare --corpus an4=../shared/data/an4/train --corpus fsdd=../shared/data/fsdd/manifest.tsv \
        --dev_speakers 0.1 --corpus_weight fsdd=0.5 --augment gain,noise,reverb --out data/an4_fsdd_aug
    dsnn-prepare --input train=gs://b/train.jsonl --input dev=gs://b/dev.jsonl --out gs://b/prep \\
        --runner=DataflowRunner --project=P --region=R --temp_location=gs://b/tmp --setup_file=./setup.py

Flags that are not ``dsnn-prepare``'s must be Beam ``PipelineOptions`` (any option a Beam
``PipelineOptions`` subclass defines); anything else is an error naming the flag and the closest
match. TensorFlow is imported only when the job runs, so ``--help`` is fast.

Exit codes: 0 done; 2 a user error (bad flag, bad input, an ``--out`` that overlaps an input,
existing ``--out``), one line on stderr; 1 the job failed; 130 / 143 interrupted by SIGINT / SIGTERM
(the partial output is removed first).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import difflib
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Sequence

from dsnn_keras.cli_args import accept_negative_lists
from dsnn_keras.errors import DsnnError, DsnnUsageError
from dsnn_keras.versions import package_versions

LOG = logging.getLogger("dsnn.prepare")
LOCAL_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"


class UserError(DsnnUsageError):
    """A problem with the command line or the inputs: reported as one line, exit code 2."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; a BaseException so that no ``except Exception`` (Beam's included)
    swallows it on the way out."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Parser(argparse.ArgumentParser):
    """argparse that raises `UserError` (one line, exit 2) instead of printing usage and exiting."""

    def error(self, message):
        raise UserError(f"{message} (see dsnn-prepare --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dsnn-prepare", allow_abbrev=False,
        description="Prepare audio corpora (LibriSpeech dirs, TSV/CSV or NeMo JSON-lines manifests) "
                    "into sharded TFRecord log-mel features, CMVN stats and a SentencePiece tokenizer. "
                    "Flags not listed here must be Apache Beam PipelineOptions (e.g. --runner, --project, "
                    "--temp_location, --setup_file, --direct_running_mode, --direct_num_workers); any "
                    "other flag is an error.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--input", action="append", default=[], metavar="[SPLIT=]PATH",
                        help="a corpus: LibriSpeech-style directory, .tsv/.csv manifest or .json/.jsonl "
                             "(NeMo) manifest; a bare PATH is split 'train'. Repeatable. With --corpus, only "
                             "evaluation splits (SPLIT=PATH, not train)")
    parser.add_argument("--corpus", action="append", default=[], metavar="NAME=PATH",
                        help="a named training corpus (same formats as --input): its utterances go to train, its "
                             "held-out speakers (--dev_speakers, chosen per corpus, at least one of a corpus of 2+ "
                             "speakers) to <dev_split>_NAME, and the combined <dev_split> lists them all. "
                             "Repeatable; a name given twice adds another path to that corpus")
    parser.add_argument("--corpus_weight", action="append", default=[], metavar="NAME=W",
                        help="times each train utterance of corpus NAME is written (weight > 0; fractional "
                             "parts sampled by a hash of the utterance id: 0.5 keeps about half, 2 writes each "
                             "twice); unweighted corpora have weight 1. Repeatable or comma-separated")
    parser.add_argument("--out", required=True, help="output directory (local path or gs://...)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--vocab_size", type=int, default=128,
                        help="SentencePiece vocabulary size (an upper bound: small corpora get fewer pieces)")
    parser.add_argument("--tokenizer_type", default="unigram", choices=["unigram", "bpe", "char"],
                        help="SentencePiece model type")
    parser.add_argument("--dev_speakers", default=None, metavar="FRACTION|SPK,SPK",
                        help="move whole speakers from train to --dev_split: a fraction in (0,1) "
                             "(chosen by a deterministic hash of the speaker id) or a comma list")
    parser.add_argument("--dev_split", default="dev", help="split name for --dev_speakers")
    parser.add_argument("--split_salt", default="dsnn",
                        help="salt of the speaker, corpus-weight and train-order hashes (change it to draw other "
                             "speakers)")
    parser.add_argument("--num_shards", type=int, default=0,
                        help="TFRecord files per split; 0 lets the runner choose (one per bundle), and for the "
                             "shuffled train split (--train_order) enough for about 256 MiB each")
    parser.add_argument("--train_order", default="shuffled", choices=["shuffled", "input"],
                        help="order of the train split's records: shuffled (the default; drawn from a hash of "
                             "--split_salt and the utterance id, the same on every run) so that dsnn-train's "
                             "shuffle buffer mixes corpora and speakers even when the split is larger than "
                             "data.shuffle_buffer_mb; input: as read, corpus by corpus")
    parser.add_argument("--min_duration", type=float, default=0.1,
                        help="reject clips shorter than this many seconds (too_short)")
    parser.add_argument("--max_duration", type=float, default=30.0,
                        help="reject clips longer than this many seconds (too_long)")
    parser.add_argument("--case", default="lower", choices=["lower", "upper", "keep"],
                        help="transcript case")
    parser.add_argument("--keep_punctuation", action="store_true",
                        help="keep punctuation in transcripts (default: strip all but apostrophes)")
    parser.add_argument("--feature_config", default=None, metavar="JSON",
                        help="JSON file with FeatureConfig fields (unknown keys are an error)")
    parser.add_argument("--num_mel_bins", type=int, default=None,
                        help="shortcut overriding FeatureConfig.num_mel_bins")
    parser.add_argument("--lm_order", type=int, default=3,
                        help="order of the word n-gram LM counted over the train transcripts and written with its "
                             "lexicon to OUT/lm/ (for dsnn-eval --decoder beam); 0 = no LM")
    parser.add_argument("--speed_perturb", default="1.0", metavar="F,F,...",
                        help="speed perturbation of the train split (Kaldi/ESPnet style: tempo and pitch together, "
                             "resampled with soxr): one example per factor for every train utterance, ids of the "
                             "copies prefixed sp<F>-, e.g. 0.9,1.0,1.1 (3x the train examples). Factors in "
                             "[0.5, 2.0], no duplicates, 1.0 among them; 1.0 alone = off. Held-out splits (dev, "
                             "test, --dev_speakers) are never perturbed; the tokenizer and the LM see each "
                             "transcript once, the CMVN statistics every copy")
    parser.add_argument("--augment", default=None, metavar="KIND,KIND,...",
                        help="augment the train split: add --augment_copies copies of every train example (speed "
                             "copies included), each with all the KINDs applied in the order pad, reverb, noise, "
                             "channel, bandwidth, gain: pad (silence before and after, each side's length from --pad_s, "
                             "noise at the clip's own floor), reverb (synthetic exponential-decay room impulse response, RT60 from "
                             "--reverb_rt60), noise (generated white/pink/brown noise at an SNR from --noise_snr_db), "
                             "channel (another microphone's frequency response: a tilt from --channel_tilt_db and two "
                             "random bands), bandwidth "
                             "(band-limited as recorded at a rate from --bandwidth_rates), gain (a level "
                             "from --gain_db, peak-limited to 1.0). Seeded per utterance and copy; ids aug<k>-<id>; "
                             "held-out splits never augmented; the tokenizer and the LM see each transcript once")
    parser.add_argument("--augment_copies", type=int, default=argparse.SUPPRESS, metavar="N",
                        help="augmented copies per train example (default 1; needs --augment)")
    parser.add_argument("--augment_seed", type=int, default=argparse.SUPPRESS, metavar="S",
                        help="seed of the augmentation draws (default 0; needs --augment)")
    parser.add_argument("--gain_db", default=argparse.SUPPRESS, metavar="LOW,HIGH",
                        help="gain range in dB for --augment gain (default -18,6: Kaldi's volume perturbation)")
    parser.add_argument("--noise_snr_db", default=argparse.SUPPRESS, metavar="LOW,HIGH",
                        help="SNR range in dB for --augment noise (default 5,20)")
    parser.add_argument("--reverb_rt60", default=argparse.SUPPRESS, metavar="LOW,HIGH",
                        help="RT60 range in seconds for --augment reverb (default 0.2,0.8)")
    parser.add_argument("--bandwidth_rates", default=argparse.SUPPRESS, metavar="HZ,HZ",
                        help="sample rates for --augment bandwidth, one drawn per copy (default 8000,11025: "
                             "telephone-band and 11 kHz recordings)")
    parser.add_argument("--channel_tilt_db", default=argparse.SUPPRESS, metavar="LOW,HIGH",
                        help="spectral tilt range in dB per octave (about 1 kHz) for --augment channel (default "
                             "-6,6), on top of two random +/-10 dB bands")
    parser.add_argument("--pad_s", default=argparse.SUPPRESS, metavar="LOW,HIGH",
                        help="seconds of silence before and after (each side drawn) for --augment pad (default "
                             "0,0.5)")
    parser.add_argument("--progress_every", type=float, default=10.0,
                        help="seconds between progress lines (per worker) on stderr")
    return accept_negative_lists(parser)


def _configs(args):
    """Validates the flags into `InputSpec`s and a `PrepareConfig` (raises UserError)."""
    from pipeline.mixing import parse_corpus_arg, parse_corpus_weights
    from pipeline.sources import InputSpec, check_input, detect_format
    from pipeline.speed import parse_speed_factors
    from pipeline.splits import SpeakerSplit, parse_input_arg
    from pipeline.text import TextConfig

    try:  # inputs first: these checks need neither TensorFlow nor Beam, so errors come fast
        if not args.input and not args.corpus:
            raise ValueError("no input: give --input [SPLIT=]PATH or --corpus NAME=PATH")
        specs, corpora = [], []
        for arg in args.corpus:
            name, path = parse_corpus_arg(arg)
            spec = InputSpec("train", path, detect_format(path, f"--corpus {name}="), corpus=name)
            check_input(spec)
            specs.append(spec)
            corpora += [name] if name not in corpora else []
        for arg in args.input:
            split, path = parse_input_arg(arg)
            if corpora and split == "train":
                raise ValueError(f"--input {arg}: with --corpus every training input is a named corpus; give it "
                                 "as --corpus NAME=PATH (--input SPLIT=PATH adds an evaluation split)")
            if corpora and args.dev_speakers and split in {args.dev_split, *(f"{args.dev_split}_{c}" for c in corpora)}:
                raise ValueError(f"--input {arg}: split {split!r} is made from the corpora's held-out speakers "
                                 "(--dev_speakers); give this input another split name")
            spec = InputSpec(split, path, detect_format(path))
            check_input(spec)
            specs.append(spec)
        if not any(s.split == "train" for s in specs):
            raise ValueError("no train split: give --input PATH or --input train=PATH "
                             "(the tokenizer and CMVN are computed on train)")
        weights = parse_corpus_weights(args.corpus_weight, corpora)
        augment = _augment_config(args)
        check_out(args.out, specs, args.feature_config)
        features = {}
        if args.feature_config:  # local, or any scheme Beam's FileSystems reads (gs://...)
            from pipeline import outdir

            features = json.loads(outdir.read_bytes(args.feature_config))
            if not isinstance(features, dict):
                raise ValueError(f"--feature_config {args.feature_config}: expected a JSON object")
        if args.num_mel_bins is not None:
            features["num_mel_bins"] = args.num_mel_bins
        speaker_split = None
        if args.dev_speakers:
            speaker_split = SpeakerSplit.parse(args.dev_speakers, target_split=args.dev_split,
                                               salt=args.split_salt)
        if args.num_shards < 0:
            raise ValueError(f"--num_shards must be >= 0, got {args.num_shards}")
        if args.vocab_size < 2:
            raise ValueError(f"--vocab_size must be >= 2, got {args.vocab_size}")
        if args.lm_order < 0:
            raise ValueError(f"--lm_order must be >= 0 (0 = no LM), got {args.lm_order}")
        speed_factors = parse_speed_factors(args.speed_perturb)
        from dsnn_keras.frontend import FeatureConfig
        from pipeline.audio import AudioConfig
        with _quiet_root_logger():
            from pipeline.transforms import PrepareConfig

        config = PrepareConfig(
            feature_config=FeatureConfig.from_dict(features),
            audio_config=AudioConfig(sample_rate=FeatureConfig.from_dict(features).sample_rate,
                                     min_duration_s=args.min_duration,
                                     max_duration_s=args.max_duration),
            text_config=TextConfig(case=args.case, strip_punctuation=not args.keep_punctuation),
            vocab_size=args.vocab_size, model_type=args.tokenizer_type,
            speaker_split=speaker_split, num_shards=args.num_shards,
            progress_every_s=args.progress_every, lm_order=args.lm_order, speed_factors=speed_factors,
            corpora=tuple(corpora), corpus_weights=tuple((c, w) for c, w in weights.items() if w != 1.0),
            weight_salt=args.split_salt, augment=augment,
            train_order=args.train_order, order_salt=args.split_salt)
    except (ValueError, TypeError, OSError) as e:
        raise UserError(str(e)) from None
    return specs, config


def _augment_config(args):
    """``--augment`` and its options -> `AugmentConfig` (raises ValueError naming the flag)."""
    from pipeline.augment import AugmentConfig, parse_kinds, parse_range, parse_rates

    value = {name: getattr(args, name, None)   # these flags default to argparse.SUPPRESS: absent unless given
             for name in ("augment_copies", "augment_seed", "gain_db", "noise_snr_db", "reverb_rt60",
                          "bandwidth_rates", "channel_tilt_db", "pad_s")}
    ranges = {"gain": ("--gain_db", value["gain_db"], "gain_db"),
              "noise": ("--noise_snr_db", value["noise_snr_db"], "noise_snr_db"),
              "reverb": ("--reverb_rt60", value["reverb_rt60"], "reverb_rt60_s"),
              "channel": ("--channel_tilt_db", value["channel_tilt_db"], "channel_tilt_db"),
              "pad": ("--pad_s", value["pad_s"], "pad_s")}
    if args.augment is None:
        given = [flag for flag, v in (("--augment_copies", value["augment_copies"]),
                                      ("--augment_seed", value["augment_seed"]),
                                      *((f, v) for f, v, _ in ranges.values()),
                                      ("--bandwidth_rates", value["bandwidth_rates"])) if v is not None]
        if given:
            raise ValueError(f"{given[0]} needs --augment (e.g. --augment gain,noise,reverb)")
        return AugmentConfig()
    kinds = parse_kinds(args.augment)
    fields = {}
    for kind, (flag, text, field) in ranges.items():
        if text is None:
            continue
        if kind not in kinds:
            raise ValueError(f"{flag} {text}: --augment {args.augment} has no {kind}")
        fields[field] = parse_range(text, flag)
    if value["bandwidth_rates"] is not None:
        if "bandwidth" not in kinds:
            raise ValueError(f"--bandwidth_rates {value['bandwidth_rates']}: --augment {args.augment} has no bandwidth")
        fields["bandwidth_rates"] = parse_rates(value["bandwidth_rates"])
    copies = 1 if value["augment_copies"] is None else value["augment_copies"]
    if not 1 <= copies <= 100:
        raise ValueError(f"--augment_copies must be in [1, 100], got {copies}")
    return AugmentConfig(kinds=kinds, copies=copies, seed=value["augment_seed"] or 0, **fields)


def check_out(out: str, specs, feature_config: str | None = None) -> None:
    """Refuses an ``--out`` that equals, contains or is inside an input, before anything is written.

    Paths are compared resolved (symlinks followed). Besides every path on the command line, the
    directories holding a local manifest's audio files count: ``--out`` may not be one of them or
    contain one (``--out`` *beside* the audio, e.g. ``corpus/prepared``, is fine). An existing
    ``--out`` that is not a directory is refused too (it is no prepared dataset to replace).

    Raises:
        ValueError: naming ``--out``, the input and how they overlap (`PathOverlapError`).
    """
    from dsnn_keras.paths import PathOverlapError, check_disjoint
    from pipeline.records import Utterance
    from pipeline.sources import read_source

    if "://" in out:
        for spec in specs:
            a, b = out.rstrip("/") + "/", spec.path.rstrip("/") + "/"
            if a.startswith(b) or b.startswith(a):
                raise PathOverlapError(f"--out {out} overlaps --input {spec.path}; choose an --out outside it")
        return
    if os.path.lexists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} exists and is not a directory; refusing to replace it")
    for spec in specs:
        if "://" not in spec.path:
            check_disjoint(out, {"--input": spec.path}, out_flag="--out")
    check_disjoint(out, {"--feature_config": feature_config}, out_flag="--out")
    resolved_out = os.path.realpath(out)
    for spec in specs:
        if spec.format == "librispeech" or "://" in spec.path:
            continue  # a directory's audio is inside it (checked above)
        directories = {os.path.dirname(item.path) for item in read_source(spec)
                       if isinstance(item, Utterance) and "://" not in item.path}
        for directory in sorted({os.path.realpath(d) for d in directories}):
            if directory == resolved_out or directory.startswith(resolved_out.rstrip(os.sep) + os.sep):
                raise PathOverlapError(
                    f"--out {resolved_out} {'is' if directory == resolved_out else 'contains'} the audio "
                    f"directory {directory} of --input {spec.path}; refusing to write there (the output "
                    "would replace the audio). Choose an --out outside it")


@contextlib.contextmanager
def _quiet_root_logger():
    """Beam's GCP modules log 'apitools not found' on the root logger when imported; not our news."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _beam_parser() -> argparse.ArgumentParser:
    """The parser Beam builds in ``PipelineOptions.get_all_options``: every option of every
    ``PipelineOptions`` subclass (GCP, worker, setup, direct-runner, portable, ... options)."""
    with _quiet_root_logger():  # (importing all of apache_beam registers no further option class)
        from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    class Parser(_BeamArgumentParser):
        def error(self, message):
            if message.startswith("ambiguous option: "):  # as Beam: never guess a prefix
                return
            raise UserError(f"Beam pipeline option: {message}")

    parser = Parser(prog="dsnn-prepare", allow_abbrev=False)
    classes = {}
    for cls in PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


def _suggest(flag: str, candidates: list[str]) -> str | None:
    def norm(f: str) -> str:
        return f.lstrip("-").replace("-", "_").lower()

    by_norm = {norm(c): c for c in candidates}
    if norm(flag) in by_norm:
        return by_norm[norm(flag)]
    close = difflib.get_close_matches(norm(flag), list(by_norm), n=1, cutoff=0.75)
    return by_norm[close[0]] if close else None


def check_beam_args(beam_args: Sequence[str]) -> None:
    """Raises `UserError` for any argument that is neither ours (already parsed) nor a Beam option.

    Args:
        beam_args: What ``build_parser().parse_known_args`` left over.
    """
    if not beam_args:
        return
    parser = _beam_parser()
    known, unknown = parser.parse_known_args(list(beam_args))
    if not unknown:
        _check_runner(known.runner)
        return
    arg = unknown[0]
    flag = arg.split("=", 1)[0]
    ours = [o for a in build_parser()._actions for o in a.option_strings]
    beams = [o for a in parser._actions for o in a.option_strings]
    suggestion = _suggest(flag, ours + beams) if flag.startswith("-") else None
    hint = (f"; did you mean {suggestion}?" if suggestion else
            " (neither a dsnn-prepare flag nor an Apache Beam pipeline option; see dsnn-prepare --help)")
    raise UserError(f"unrecognized argument {arg}{hint}")


def _check_runner(name: str | None) -> None:
    """Refuses a ``--runner`` Beam would not find (a dotted class path is left to Beam)."""
    from apache_beam.options.pipeline_options import StandardOptions

    if not name or "." in name:
        return
    known = list(StandardOptions.KNOWN_RUNNER_NAMES)
    lowered = {n.lower() for n in known}
    if name.lower() in lowered or name.lower() + "runner" in lowered:
        return
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else f"expected one of {', '.join(known)}"
    raise UserError(f"--runner {name}: not a Beam runner; {hint}")


def pipeline_options(beam_args: Sequence[str]):
    """Validates the Beam flags (`check_beam_args`) and builds the ``PipelineOptions``; without
    ``--runner`` (or with the DirectRunner) the job runs on the in-process `LOCAL_RUNNER`."""
    check_beam_args(beam_args)
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    options = PipelineOptions(list(beam_args))
    standard = options.view_as(StandardOptions)
    if standard.runner in (None, "DirectRunner", "direct", "SwitchingDirectRunner"):
        # Beam's DirectRunner first tries PrismRunner (downloads a binary); use its batch engine directly.
        standard.runner = LOCAL_RUNNER
    return options


def _is_local(options) -> bool:
    from apache_beam.options.pipeline_options import StandardOptions

    return options.view_as(StandardOptions).runner == LOCAL_RUNNER


def _metrics(result) -> dict[str, int]:
    from apache_beam.metrics.metric import MetricsFilter

    counters = {}
    try:
        for c in result.metrics().query(MetricsFilter().with_namespace("dsnn"))["counters"]:
            counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + (c.committed or c.attempted or 0)
    except Exception as e:  # some runners report no metrics; they are informative only
        LOG.warning("could not read Beam metrics: %s", e)
    return counters


def finalize(tmp: str, splits: Sequence[str], config, argv: Sequence[str], specs: Sequence = ()) -> dict:
    """Checks the job's counts, writes ``dataset.json`` into ``tmp`` and returns it.

    Args:
        tmp: The job's output directory.
        splits: The splits written (`pipeline.transforms.split_names`).
        config: The `PrepareConfig`.
        argv: The command line (recorded).
        specs: The inputs (their paths are recorded per named corpus).

    Raises:
        RuntimeError: when input != written + rejected (+ left out by corpus weights), a kind of copy
            does not reconcile with the utterances written, or the train split is empty.
    """
    from pipeline import outdir
    from pipeline.augment import AUGMENTED_SPLITS
    from pipeline.speed import NO_PERTURBATION, PERTURBED_SPLITS, format_factor
    from pipeline.summary import check_copies, check_perturbed
    from pipeline.tokenizer import vocab_size
    from pipeline.transforms import SUMMARY_FILE

    files = outdir.list_files(tmp)
    if SUMMARY_FILE in files:
        summary = json.loads(outdir.read_bytes(outdir.join(tmp, SUMMARY_FILE)))
    else:  # the summary CombineGlobally (without defaults) emits nothing for an empty input
        summary = {"input": 0, "splits": {}, "rejects": {}}
    written = sum(s["num_utterances"] for s in summary["splits"].values())
    rejected = sum(summary["rejects"].values())
    sampled_out = sum(summary.get("sampled_out", {}).values())
    if summary["input"] != written + rejected + sampled_out:
        left_out = f" + left out by corpus weights {sampled_out}" if sampled_out else ""
        raise RuntimeError(f"input count {summary['input']} != written {written} + rejected {rejected}{left_out}")
    if not summary["splits"].get("train", {}).get("num_utterances"):
        raise RuntimeError("no train utterance was written (see rejects.jsonl); cannot compute CMVN")
    factors = tuple(config.speed_factors)
    perturbed_splits = [s for s in splits if s in PERTURBED_SPLITS] if factors != NO_PERTURBATION else []
    check_perturbed(summary, factors, perturbed_splits)
    augmented_splits = [s for s in splits if s in AUGMENTED_SPLITS] if config.augment.enabled else []
    copies = config.augment.copies if augmented_splits else 0
    check_copies(summary, factors if "train" in perturbed_splits else NO_PERTURBATION, copies, augmented_splits)
    rate = config.audio_config.sample_rate
    dataset = {
        "format_version": 1,
        "feature_config": config.feature_config.to_dict(),
        "tokenizer": {"model": "tokenizer.model",
                      "vocab_size": vocab_size(outdir.read_bytes(outdir.join(tmp, "tokenizer.model"))),
                      "model_type": config.model_type},
        "cmvn": "cmvn.json",
        "splits": {},
        "rejects": {"total": rejected, "by_reason": summary["rejects"]},
        "input_count": summary["input"],
        "created_by": {"command": ["dsnn-prepare", *argv],
                       "versions": package_versions(["dsnn", "tensorflow", "apache-beam", "sentencepiece"]),
                       "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
    }
    dataset["train_order"] = config.train_order
    if perturbed_splits:  # absent when off: an unperturbed dataset.json is as before
        dataset["speed_perturb"] = {"factors": list(factors), "splits": perturbed_splits}
    if augmented_splits:  # likewise
        dataset["augment"] = config.augment.to_dict()
    empty = {"num_utterances": 0, "num_frames": 0, "num_samples": 0}

    def counts(n):  # the summary's counts as dataset.json states them
        return {"num_utterances": n["num_utterances"], "hours": n["num_samples"] / rate / 3600.0,
                "num_frames": n["num_frames"]}

    def add(*ns):
        return {k: sum(n[k] for n in ns) for k in empty}

    for split in splits:
        s = summary["splits"].get(split, empty)
        by_factor = {format_factor(1.0): s}
        if split in perturbed_splits:
            perturbed = summary.get("perturbed", {}).get(split, {})
            by_factor.update({format_factor(f): perturbed.get(format_factor(f), empty) for f in factors if f != 1.0})
        by_copy = summary.get("augmented", {}).get(split, {}) if split in augmented_splits else {}
        repeated = summary.get("repeated", {}).get(split)
        total = add(*by_factor.values(), *by_copy.values(), *([repeated] if repeated else []))
        dataset["splits"][split] = {
            **counts(total),  # num_utterances: the examples in the files, every copy included
            "files": sorted(f.replace("\\", "/") for f in files
                            if f.startswith(split + "/") and f.endswith(".tfrecord")),
        }
        if split in perturbed_splits:
            dataset["splits"][split]["speed_perturb"] = {
                "source_utterances": s["num_utterances"],
                "by_factor": {k: counts(by_factor[k]) for k in sorted(by_factor, key=float)}}
        if by_copy or repeated:
            dataset["splits"][split]["source_utterances"] = s["num_utterances"]
        if split in augmented_splits:
            dataset["splits"][split]["augment"] = {
                "copies": copies, "clean": counts(add(*by_factor.values())),
                "by_copy": {str(k): counts(by_copy.get(str(k), empty)) for k in range(1, copies + 1)}}
        if repeated:
            dataset["splits"][split]["repeated"] = counts(repeated)
    if config.corpora:
        _corpora_entries(dataset, summary, config, specs, counts)
    outdir.delete(outdir.join(tmp, SUMMARY_FILE))
    outdir.write_bytes(outdir.join(tmp, "dataset.json"),
                       (json.dumps(dataset, indent=1) + "\n").encode("utf-8"))
    return dataset


def _corpora_entries(dataset: dict, summary: dict, config, specs, counts) -> None:
    """Adds the named corpora to ``dataset``: the combined held-out split (``dev``: its ``files`` are
    the per-corpus ``dev_NAME`` files, ``union_of`` names them) and ``"corpora"``, per corpus its
    inputs, weight, held-out split and speakers, and its effective train examples and hours."""
    splits = dataset["splits"]
    held = config.speaker_split
    if held is not None:
        parts = [held.corpus_split(c) for c in config.corpora]
        union = {k: sum(splits[p][k] for p in parts) for k in ("num_utterances", "hours", "num_frames")}
        splits[held.target_split] = {**union, "files": sorted(f for p in parts for f in splits[p]["files"]),
                                     "union_of": parts}
        dataset["splits"] = {k: splits[k] for k in sorted(splits, key=lambda n: (n != "train", n))}
    train_hours = dataset["splits"]["train"]["hours"]
    found = summary.get("corpora", {})
    corpora = {}
    for corpus in config.corpora:
        entry = found.get(corpus, {})
        train = entry.get("train", {})
        examples = {k: train.get(k, 0) for k in ("num_utterances", "num_frames", "num_samples")}
        held_split = held.corpus_split(corpus) if held is not None else None
        held_counts = entry.get(held_split, {}) if held_split else {}
        corpora[corpus] = {
            "inputs": [s.path for s in specs if s.corpus == corpus],
            "weight": config.weight(corpus),
            "held_out_split": held_split,
            "held_out_speakers": held_counts.get("speakers", []),
            "train_speakers": len(train.get("speakers", [])),
            "sampled_out": summary.get("sampled_out", {}).get(corpus, 0),
            "train": {"source_utterances": train.get("source_utterances", 0), **counts(examples),
                      "share_of_train_hours": counts(examples)["hours"] / train_hours if train_hours else 0.0},
        }
        if held_split:
            corpora[corpus][held_split] = counts({k: held_counts.get(k, 0) for k in examples})
    dataset["corpora"] = corpora


def run(argv: Sequence[str] | None = None) -> dict:
    """Runs the preparation job and returns the written ``dataset.json`` as a dict.

    Args:
        argv: Command-line arguments (without the program name); Beam flags pass through.

    Returns:
        The ``dataset.json`` contents, plus ``"metrics"``: the Beam counters.

    Raises:
        UserError: bad flags or inputs, or an existing ``--out`` without ``--overwrite``.
        RuntimeError: the job ran but its counts do not add up.

    Example:
        >>> run(["--input", "an4", "--out", "/tmp/an4-prep"])  # doctest: +SKIP
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args, beam_args = build_parser().parse_known_args(argv)
    check_beam_args(beam_args)  # before the slow imports: a misspelt flag fails in a second
    specs, config = _configs(args)

    with _quiet_root_logger():
        import apache_beam as beam

        from pipeline import outdir
        from pipeline.transforms import build_pipeline

    options = pipeline_options(beam_args)
    if _is_local(options):  # the local runner gains nothing from Reshuffle (see PrepareConfig)
        import dataclasses

        config = dataclasses.replace(config, reshuffle=False)
    with _one_run_per_output(args.out):
        return _run_locked(args, specs, config, options, argv)


@contextlib.contextmanager
def _one_run_per_output(out: str):
    """Holds ``.NAME.dsnn-prepare.lock`` beside a local ``--out`` for the whole run (a second run fails).

    The lock file is removed when the run ends (a ``kill -9`` leaves it; the next run reuses it).

    Two concurrent runs on one ``--out`` would otherwise interleave their commits (renames) and could
    strand the previous dataset. Remote outputs (``gs://``) have no such lock (an object store has no
    lock that a dead process releases): a warning says so and the run goes on unlocked.
    """
    from pipeline import outdir

    if outdir._remote(out):
        LOG.warning("prepare: %s is not on a local filesystem, so it cannot be locked; make sure no other "
                    "dsnn-prepare writes there at the same time", out)
        yield
        return
    from dsnn_keras.paths import LockedError, exclusive_lock

    out = out.rstrip("/")
    parent = os.path.dirname(os.path.abspath(out))
    try:
        with exclusive_lock(parent, f".{os.path.basename(out)}.dsnn-prepare.lock", holder="dsnn-prepare",
                            remove=True):
            yield
    except LockedError as error:
        raise RuntimeError(str(error)) from None


def _run_locked(args, specs, config, options, argv) -> dict:
    import apache_beam as beam

    from pipeline import outdir
    from pipeline.shuffled_write import reorder_tfrecord_files
    from pipeline.transforms import TRAIN_ORDER_INPUT, TRAIN_ORDER_SHUFFLED, build_pipeline

    tmp = None
    try:
        try:
            with _signals_deferred():  # so that a signal never falls between creating tmp and knowing it
                tmp = outdir.start(args.out, args.overwrite)
        except (FileExistsError, OSError) as e:
            raise UserError(str(e)) from None
        start = time.monotonic()
        LOG.info("prepare: %d input(s) -> %s (runner %s)", len(specs), args.out,
                 options.get_all_options()["runner"])
        pipeline = beam.Pipeline(options=options)
        reorder_after = _is_local(options) and config.train_order == TRAIN_ORDER_SHUFFLED
        # The local runner would hold the shuffle's GroupByKey of the whole split in memory: it writes
        # the input order and the files are reordered on disk after the job (the same files).
        job_config = dataclasses.replace(config, train_order=TRAIN_ORDER_INPUT) if reorder_after else config
        splits = build_pipeline(pipeline, specs, job_config, tmp)
        result = pipeline.run()
        result.wait_until_finish()
        if reorder_after and "train" in splits:
            train_files = [outdir.join(tmp, f) for f in outdir.list_files(tmp)
                           if f.replace(os.sep, "/").startswith("train/") and f.endswith(".tfrecord")]
            reorder_tfrecord_files(train_files, outdir.join(tmp, "train", "data"), ".tfrecord",
                                   num_shards=config.num_shards, salt=config.order_salt)
        elapsed = time.monotonic() - start
        dataset = finalize(tmp, splits, config, argv, specs)
        with _signals_deferred():  # a signal here would leave --out half replaced
            outdir.commit(tmp, args.out)
            _committed.add(args.out)
    except BaseException:
        if tmp is not None:
            with _signals_deferred():
                outdir.abort(tmp)
        raise
    metrics = _metrics(result)
    _print_report(dataset, metrics, elapsed, args.out)
    return {**dataset, "metrics": metrics}


# Signals: `main` turns SIGINT and SIGTERM into `Interrupted`, raised in the main thread wherever the
# job is; `run` removes its temporary directory on the way out. Inside `_signals_deferred` (the commit
# and the clean-up) a signal is only noted and raised when the block ends.
_deferred = {"depth": 0, "pending": None}
_committed: set[str] = set()  # the --out of runs that completed (for main's message on a late signal)


@contextlib.contextmanager
def _signals_deferred():
    _deferred["depth"] += 1
    try:
        yield
    finally:
        _deferred["depth"] -= 1
    pending = _deferred["pending"]
    if pending is not None and _deferred["depth"] == 0:
        _deferred["pending"] = None
        raise Interrupted(pending)


def _on_signal(signum, frame):
    if _deferred["depth"]:
        _deferred["pending"] = _deferred["pending"] or signum
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def _signals_raise():
    """Installs `_on_signal` for SIGINT and SIGTERM (main thread only), restoring the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {signum: signal.signal(signum, _on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)


def _print_report(dataset: dict, metrics: dict, elapsed: float, out: str) -> None:
    written = {split: s for split, s in dataset["splits"].items() if "union_of" not in s}
    hours = sum(s["hours"] for s in written.values())
    sources = {split: s.get("source_utterances", s.get("speed_perturb", {}).get("source_utterances", s["num_utterances"]))
               for split, s in written.items()}
    copies = sum(s["num_utterances"] for s in written.values()) - sum(sources.values())
    kind = "speed-perturbed copies" if set(dataset) & {"augment", "corpora"} == set() else "copies"
    sampled_out = sum(c["sampled_out"] for c in dataset.get("corpora", {}).values())
    print(f"wrote {out}: {dataset['input_count']} inputs, {sum(sources.values())} written"
          f"{f' (+{copies} {kind})' if copies else ''} "
          f"({hours:.3f} h), {dataset['rejects']['total']} rejected"
          f"{f', {sampled_out} left out by corpus weights' if sampled_out else ''}, in {elapsed:.1f} s "
          f"({hours * 3600 / max(elapsed, 1e-9):.0f} s of audio per s)")
    for split, s in dataset["splits"].items():
        line = f"  {split}: {s['num_utterances']} utterances, {s['hours']:.3f} h, {len(s['files'])} file(s)"
        if "union_of" in s:
            line += f" = {' + '.join(s['union_of'])}"
        elif "source_utterances" in s:
            parts = [f"{s['speed_perturb']['source_utterances']} x {len(s['speed_perturb']['by_factor'])} speed "
                     f"factors" if "speed_perturb" in s else f"{s['source_utterances']} utterances"]
            if "augment" in s:
                parts.append(f"x (1 + {s['augment']['copies']} augmented)")
            if "repeated" in s:
                parts.append(f"+ {s['repeated']['num_utterances']} corpus-weight repeats")
            line += " = " + " ".join(parts)
        elif "speed_perturb" in s:
            factors = ",".join(s["speed_perturb"]["by_factor"])
            line += (f" = {s['speed_perturb']['source_utterances']} utterances x "
                     f"{len(s['speed_perturb']['by_factor'])} speed factors ({factors})")
        print(line)
    for name, c in dataset.get("corpora", {}).items():
        held = f"; held out {','.join(c['held_out_speakers'])} -> {c['held_out_split']}" if c["held_out_split"] else ""
        left_out = f", {c['sampled_out']} left out by its weight" if c["sampled_out"] else ""
        print(f"  corpus {name}: weight {c['weight']:g}, train {c['train']['num_utterances']} examples "
              f"({c['train']['hours']:.3f} h, {100 * c['train']['share_of_train_hours']:.1f} % of train) from "
              f"{c['train']['source_utterances']} utterances of {c['train_speakers']} speakers{left_out}{held}")
    for reason, n in dataset["rejects"]["by_reason"].items():
        print(f"  rejected {reason}: {n}")
    if metrics:
        shown = {k: v for k, v in sorted(metrics.items()) if k != "audio_ms_written"}
        if "audio_ms_written" in metrics:
            shown["audio_hours_written"] = round(metrics["audio_ms_written"] / 3.6e6, 4)
        print("  beam counters: " + ", ".join(f"{k}={v}" for k, v in shown.items()))


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: exit 0 on success, 2 with one line on a user error, 1 on a job failure,
    130 / 143 with one line on SIGINT / SIGTERM (after removing the partial output)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    LOG.setLevel(logging.INFO)
    out = None
    _committed.clear()
    try:
        with _signals_raise():
            try:
                out = _out_flag(sys.argv[1:] if argv is None else argv)
                run(argv)
            except KeyboardInterrupt:  # SIGINT before our handler was installed, or from a caller
                raise Interrupted(signal.SIGINT) from None
    except Interrupted as e:
        verb = "interrupted" if e.signum == signal.SIGINT else "terminated"
        if out in _committed:
            where = f"{out} was already complete"
        else:
            where = f"nothing written to {out} (partial output removed)" if out else "nothing written"
        print(f"dsnn-prepare: {verb} ({signal.Signals(e.signum).name}); {where}", file=sys.stderr)
        return 128 + e.signum
    except DsnnError as e:   # UserError (a wrong command line) exits 2, the others 1
        print(f"dsnn-prepare: error: {e}", file=sys.stderr)
        return e.exit_code
    except (RuntimeError, ValueError) as e:
        msg = str(e).strip().splitlines()
        print(f"dsnn-prepare: error: {msg[-1] if msg else type(e).__name__}", file=sys.stderr)
        return 1
    return 0


def _out_flag(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--out" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--out="):
            return arg[len("--out="):]
    return None


if __name__ == "__main__":
    sys.exit(main())
