"""``dsnn-synth``: generate a synthetic spoken corpus with espeak-ng (AN4-like utterances or isolated digits; LibriSpeech layout).

Example::

    dsnn-synth --out data/synth --num_utterances 2000 --seed 0 --noise_snr_db 20,40

Exit status: 0 on success, 2 on bad arguments or an output directory that cannot be used,
1 when synthesis fails. Errors are one line on stderr; progress goes to stderr; the summary line
goes to stdout.
"""
from __future__ import annotations

import argparse
import os
import sys

from dsnn_keras.cli_args import accept_negative_lists
from dsnn_keras.errors import DsnnUsageError

PROG = "dsnn-synth"


class UsageError(DsnnUsageError):
    """A bad command-line value (reported as one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        raise UsageError(f"{message} (see {self.prog} --help)")


def _words(value: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {value!r}")
    return items


def _ints(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in _words(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def _range(value: str) -> tuple[float, float]:
    try:
        parts = [float(v) for v in _words(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH or a single number, got {value!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or parts[0] > parts[1]:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH with LOW <= HIGH, got {value!r}")
    return parts[0], parts[1]


def build_parser() -> argparse.ArgumentParser:
    """The ``dsnn-synth`` argument parser (importing it does not load espeak-ng or TensorFlow)."""
    from pipeline.synth import grammar
    from pipeline.synth import speakers as sp

    def csv(values):
        return ",".join(str(v) for v in values)

    p = _Parser(prog=PROG, description=(
        "Generate a synthetic spoken corpus with espeak-ng: AN4-like utterances (digit strings, spelled letters, "
        "numbers, dates, short commands) or isolated digits (--grammar digits), written in LibriSpeech layout "
        "(<split>/<speaker>/<chapter>/<speaker>-<chapter>-<idx>.flac + .trans.txt, mono FLAC, 16 kHz by default) "
        "plus corpus.json. The same seed and arguments give byte-identical files."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True,
                   help="output directory, local or a gs://-style URL (tf.io.gfile); must not exist or be "
                        "empty unless --overwrite")
    p.add_argument("--num_utterances", required=True, type=int,
                   help="total number of utterances over all splits (>= 1)")
    p.add_argument("--seed", type=int, default=0, help="seed for texts, speakers and augmentation")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty output directory (the old one is removed only after "
                        "the new corpus is complete; files are never mixed)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="worker processes (1 = synthesise in this process); does not change the output")
    g = p.add_argument_group("content")
    g.add_argument("--grammar", choices=sorted(grammar.GRAMMARS), default="an4",
                   help="what is said: an4 = AN4-like utterances (digit strings, spelled letters, numbers, dates, "
                        "commands); digits = one digit word per utterance (ZERO ... NINE, as FSDD transcribes)")
    g.add_argument("--sample_rate", type=int, default=16000,
                   help="the FLAC files' sample rate in Hz (8000 to 48000); 8000 = telephone band, like FSDD")
    g = p.add_argument_group("splits")
    g.add_argument("--dev_fraction", type=float, default=0.1, help="fraction of utterances in dev")
    g.add_argument("--test_fraction", type=float, default=0.1, help="fraction of utterances in test")
    g.add_argument("--utts_per_speaker", type=int, default=10,
                   help="target utterances per speaker (more when a split's setting grid is too small)")
    g = p.add_argument_group(
        "speakers", "A speaker is one espeak-ng setting: voice (accent) x variant (timbre) x pitch x rate. "
        "train/dev speakers come from the first grid, test speakers from the --test_* grid; the two "
        "grids must share no setting, so test speakers are never heard in train/dev.")
    g.add_argument("--voices", type=_words, default=sp.DEFAULT_VOICES,
                   help="comma-separated espeak-ng voices for train/dev")
    g.add_argument("--variants", type=_words, default=sp.DEFAULT_VARIANTS,
                   help="comma-separated espeak-ng voice variants (espeak-ng-data/voices/!v) for train/dev")
    g.add_argument("--pitches", type=_ints, default=sp.DEFAULT_PITCHES, help="comma-separated pitches (0-99) for train/dev")
    g.add_argument("--rates", type=_ints, default=sp.DEFAULT_RATES,
                   help="comma-separated speaking rates in words per minute (80-450) for train/dev")
    g.add_argument("--test_voices", type=_words, default=None, help="voices for test (default: --voices)")
    g.add_argument("--test_variants", type=_words, default=sp.DEFAULT_TEST_VARIANTS, help="variants for test")
    g.add_argument("--test_pitches", type=_ints, default=sp.DEFAULT_TEST_PITCHES, help="pitches for test")
    g.add_argument("--test_rates", type=_ints, default=sp.DEFAULT_TEST_RATES, help="rates for test")
    g = p.add_argument_group("augmentation", "Seeded per utterance from (seed, utterance index).")
    g.add_argument("--noise_snr_db", type=_range, default=None, metavar="LOW[,HIGH]",
                   help="add white or pink noise at an SNR drawn from this range in dB (off by default)")
    g.add_argument("--gain_db", type=_range, default=None, metavar="LOW[,HIGH]",
                   help="scale each utterance by a gain drawn from this range in dB, at most +12 (off by default); "
                        "e.g. --gain_db -6,0")
    g.add_argument("--pad_s", type=_range, default=(0.1, 0.3), metavar="LOW[,HIGH]",
                   help="seconds of silence added before and after the speech, drawn from this range")
    p.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    return accept_negative_lists(p)


def _config_from_args(args: argparse.Namespace):
    from pipeline.synth import espeak
    from pipeline.synth.audio import Augmentation
    from pipeline.synth.corpus import MAX_RATE, MIN_RATE, SynthConfig
    from pipeline.synth.speakers import SpeakerDesign

    if args.num_utterances <= 0:
        raise UsageError(f"--num_utterances: expected an integer >= 1, got {args.num_utterances}")
    if args.jobs < 1:
        raise UsageError(f"--jobs: expected >= 1, got {args.jobs}")
    if not MIN_RATE <= args.sample_rate <= MAX_RATE:
        raise UsageError(f"--sample_rate: expected {MIN_RATE} to {MAX_RATE} Hz, got {args.sample_rate}")
    for flag in ("voices", "test_voices"):
        for voice in getattr(args, flag) or ():
            if not espeak.voice_exists(voice):
                raise UsageError(f"--{flag}: unknown espeak-ng voice {voice!r}; English voices are: "
                                 f"{', '.join(espeak.english_voices())}")
    for flag in ("variants", "test_variants"):
        for variant in getattr(args, flag):
            usable = ", ".join(v for v in espeak.reproducible_variants() if v[0] in "mf" and v[1:].isdigit())
            if not espeak.variant_exists(variant):
                raise UsageError(f"--{flag}: unknown espeak-ng voice variant {variant!r}; e.g. {usable} "
                                 "(all: espeak-ng-data/voices/!v)")
            if espeak.variant_uses_breath(variant):
                raise UsageError(f"--{flag}: variant {variant!r} adds breath noise, which espeak-ng does not "
                                 f"render reproducibly; choose another, e.g. {usable}")
    try:
        design = SpeakerDesign(voices=args.voices, variants=args.variants, pitches=args.pitches,
                               rates=args.rates, test_voices=args.test_voices,
                               test_variants=args.test_variants, test_pitches=args.test_pitches,
                               test_rates=args.test_rates)
        augmentation = Augmentation(noise_snr_db=args.noise_snr_db, gain_db=args.gain_db, pad_s=args.pad_s)
        return SynthConfig(num_utterances=args.num_utterances, seed=args.seed, design=design,
                           dev_fraction=args.dev_fraction, test_fraction=args.test_fraction,
                           utts_per_speaker=args.utts_per_speaker, augmentation=augmentation,
                           grammar=args.grammar, sample_rate=args.sample_rate)
    except ValueError as e:
        raise UsageError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    """Run ``dsnn-synth``; returns the exit status (0 success, 2 usage, 1 synthesis failure)."""
    try:
        args = build_parser().parse_args(argv)
        config = _config_from_args(args)
        from dsnn_keras import fileio
        from pipeline.synth import corpus

        args.out = fileio.as_path(args.out)   # a Path, or the URL string (pathlib would mangle gs://)
        try:
            corpus.check_output(args.out, args.overwrite)
        except (OSError, corpus.OutputExistsError) as e:
            raise UsageError(f"--out: {e}") from None
        manifest = corpus.write_corpus(config, args.out, jobs=args.jobs, overwrite=args.overwrite,
                                       progress=None if args.quiet else corpus.log_progress)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as e:  # synthesis or I/O failure during generation: one line, no traceback
        print(f"{PROG}: failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    splits = ", ".join(f"{name} {s['num_utterances']}" for name, s in manifest["splits"].items())
    print(f"wrote {manifest['num_utterances']} utterances ({manifest['seconds']:.1f} s of audio; "
          f"{splits}) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
