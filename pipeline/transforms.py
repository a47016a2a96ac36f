"""The Beam transforms of the preparation pipeline, and `build_pipeline` that wires them.

Graph (two stages, joined by the tokenizer side input)::

    inputs ─► ReadSources ─► [Reshuffle] ─► Normalize ─┬─► TrainTokenizer (CombineFn over train transcripts) ─► tokenizer.model
               │                        ▲ side input   │                    │ side input
               └─► [CorpusHeldOut]──────┘              └─► Decode (decode, resample, tokenize)
                    (named corpora: held-out speakers       ─► [SpeedPerturb (train only, one copy per --speed_perturb factor)]
                     per corpus, CombineFn)                 ─► [AugmentCopies ─► Reverb ─► Noise ─► Channel ─► Bandwidth ─► Gain (train only, --augment)]
                                                            ─► Featurize (log-mel, serialise, --corpus_weight repeats;
                                                                          one fused stage with Decode)
                                                                ├─► Write[split] (TFRecord shards)
                                                                ├─► CMVN (train features, every copy, CombineFn) ─► cmvn.json
                                                                ├─► CountNgrams (train transcripts, originals only, CombineFn) ─► lm/ (ARPA, lexicon)
                                                                └─► rejects ─► rejects.jsonl
    counts from every branch ─► Summary (CombineFn) ─► _summary.json (read by the driver)

The graph is kept small on purpose: every Beam transform costs construction, proto translation and
bundle set-up time on the local runner, which on a corpus of AN4's size (~40 min of audio) weighs
as much as a third of the actual work (docs/pipeline.md, "Measured throughput").

The tokenizer is trained on the normalised transcripts of the train split *before* audio is
decoded (audio rejects are not yet known then), so the heavy audio stage runs once, streaming,
and never has to hold features in memory waiting for the tokenizer. It sees every transcript
once: speed perturbation, augmentation and the repeats of a corpus weight happen after it, and an
utterance that a fractional weight leaves out of train (`pipeline.mixing`) is left out before it.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import time
from typing import Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from dsnn_keras.errors import DsnnError
from dsnn_keras.frontend import FeatureConfig
from pipeline import augment as aug
from pipeline import outdir
from pipeline.audio import AudioConfig, load_audio
from pipeline.cmvn import CmvnCombineFn
from pipeline.mixing import repeats, repeats_id
from pipeline.records import Reject, RejectError, RejectReason, Utterance
from pipeline.shuffled_write import WriteShuffledTFRecords
from pipeline.sources import InputSpec, read_source
from pipeline.speed import NO_PERTURBATION, PERTURBED_SPLITS, format_factor, perturbed_id, speed_perturb
from pipeline.splits import SpeakerSplit
from pipeline.summary import (AUGMENTED, CORPUS, INPUT, PERTURBED, REJECTED, REPEATED, SAMPLED_OUT, SPEAKERS,
                              WRITTEN, SummaryCombineFn)
from pipeline.text import TextConfig, normalize_transcript
from pipeline.tokenizer import train_tokenizer

LOG = logging.getLogger("dsnn.prepare")
NAMESPACE = "dsnn"
# Audio whose features are not finite although its samples are (they overflow); non-finite
# samples themselves are the decoder's `non_finite_samples`.
NON_FINITE_FEATURES = RejectReason.NON_FINITE_FEATURES
SUMMARY_FILE = "_summary.json"
TRAIN_ORDER_SHUFFLED, TRAIN_ORDER_INPUT = "shuffled", "input"
TRAIN_ORDERS = (TRAIN_ORDER_SHUFFLED, TRAIN_ORDER_INPUT)


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """Everything `build_pipeline` needs besides the inputs.

    Args:
        feature_config: Frontend settings.
        audio_config: Decoding limits.
        text_config: Transcript normalisation.
        vocab_size: Requested SentencePiece vocabulary size.
        model_type: SentencePiece model type.
        speaker_split: Optional held-out speakers.
        num_shards: TFRecord shards per split; 0 lets the runner decide (the shuffled train split:
            enough of about 256 MiB).
        progress_every_s: Seconds between progress log lines per worker.
        reshuffle: Redistribute the read items (``beam.Reshuffle``) before the per-utterance work, so
            a distributed runner spreads one large manifest over its workers. The local runner gains
            nothing from it (the tokenizer side input already materialises the utterances before
            ``Decode``), so `dsnn-prepare` turns it off there. Defaults to True.
        lm_order: Order of the word n-gram LM counted over the train transcripts and written with
            its lexicon to ``lm/`` (`dsnn_keras.ngram_lm`); 0 = none. Defaults to 3.
        speed_factors: Speed perturbation of the train split (`pipeline.speed`): one example per
            factor for every train utterance; ``(1.0,)`` (the default) adds no transform at all.
        corpora: Names of the named corpora (``--corpus NAME=PATH``); their held-out speakers are
            chosen per corpus and go to ``<dev split>_<NAME>``. Defaults to none.
        corpus_weights: ``((name, weight), ...)``: times each train utterance of a named corpus is
            written (`pipeline.mixing`); a corpus not listed has weight 1. Defaults to none.
        weight_salt: Salt of the weight sampling hash. Defaults to "dsnn".
        augment: Augmentation of the train split (`pipeline.augment`); off by default (no transform).
        train_order: ``"shuffled"`` (the default): the train split's records in an order drawn from a
            hash of their ids (`pipeline.shuffled_write`), so a trainer whose shuffle buffer holds only
            part of the split still mixes corpora and speakers; ``"input"``: as read (corpus by
            corpus, an utterance's copies side by side). Other splits keep the input order. On the
            local runner `dsnn-prepare` builds the job with ``"input"`` and reorders the files
            after it (`pipeline.shuffled_write.reorder_tfrecord_files`: the same files, one shard's
            memory).
        order_salt: Salt of the train-order hash. Defaults to "dsnn".
    """

    feature_config: FeatureConfig = FeatureConfig()
    audio_config: AudioConfig = AudioConfig()
    text_config: TextConfig = TextConfig()
    vocab_size: int = 128
    model_type: str = "unigram"
    speaker_split: SpeakerSplit | None = None
    num_shards: int = 0
    progress_every_s: float = 10.0
    reshuffle: bool = True
    lm_order: int = 3
    speed_factors: tuple[float, ...] = NO_PERTURBATION
    corpora: tuple[str, ...] = ()
    corpus_weights: tuple[tuple[str, float], ...] = ()
    weight_salt: str = "dsnn"
    augment: aug.AugmentConfig = aug.AugmentConfig()
    train_order: str = TRAIN_ORDER_SHUFFLED
    order_salt: str = "dsnn"

    def __post_init__(self):
        if self.train_order not in TRAIN_ORDERS:
            raise ValueError(f"train_order must be one of {list(TRAIN_ORDERS)}, got {self.train_order!r}")

    def weight(self, corpus: str) -> float:
        """The weight of the named corpus ``corpus`` (1.0 when not weighted or unnamed)."""
        return dict(self.corpus_weights).get(corpus, 1.0)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """One written example: the serialised example plus what CMVN and counts need.

    ``factor`` is its speed factor: 1.0 for the utterance as read, another value for a
    speed-perturbed copy (whose ``utt_id`` is ``sp<factor>-<id>``). ``aug`` is 0 for a clean
    example, ``k`` for augmented copy ``k`` (``aug<k>-...``); ``rep`` is 0 for the first of the
    ``repeats`` times a corpus weight writes the example, ``r`` for the others (``rep<r>-...``).
    The original utterance is the example with factor 1.0, aug 0 and rep 0.
    """

    split: str
    utt_id: str
    num_frames: int
    num_samples: int
    features: np.ndarray
    serialized: bytes
    factor: float = 1.0
    corpus: str = ""
    aug: int = 0
    rep: int = 0
    repeats: int = 1

    @property
    def original(self) -> bool:
        return self.factor == 1.0 and self.aug == 0 and self.rep == 0


def split_names(specs: Sequence[InputSpec], speaker_split: SpeakerSplit | None) -> list[str]:
    """Output splits (the directories written): ``train`` first, then the others sorted.

    With named corpora (``InputSpec.corpus``) and held-out speakers, each corpus has its own
    held-out split (``dev_<NAME>``) instead of the one ``--dev_split``; the combined ``dev`` is
    only listed in ``dataset.json`` (its files are theirs).
    """
    names = {s.split for s in specs}
    if speaker_split is not None:
        corpora = {s.corpus for s in specs if s.corpus}
        if corpora:
            names.update(speaker_split.corpus_split(c) for c in corpora)
        else:
            names.add(speaker_split.target_split)
    return sorted(names, key=lambda n: (n != "train", n))


def _read(spec: InputSpec):
    counter = Metrics.counter(NAMESPACE, "utterances_read")
    for item in read_source(spec):
        counter.inc()
        yield item


class NormalizeDoFn(beam.DoFn):
    """Assigns splits, normalises transcripts; source and text rejects go to the ``rejects`` tag.

    Args:
        text_config: Transcript normalisation.
        speaker_split: Optional held-out speakers.
        corpus_weights: ``((name, weight), ...)`` of the named corpora (`pipeline.mixing`): a train
            utterance of a corpus whose weight writes it 0 times goes to the ``sampled_out`` tag
            (before the tokenizer sees it). Defaults to none.
        weight_salt: Salt of the weight hash. Defaults to "dsnn".

    Side input (optional, named corpora with a fraction of held-out speakers): ``held_out``, a dict
    corpus -> its held-out speakers (`CorpusHeldOutFn`). With a list of speakers, the list is used.
    """

    def __init__(self, text_config: TextConfig, speaker_split: SpeakerSplit | None,
                 corpus_weights: tuple[tuple[str, float], ...] = (), weight_salt: str = "dsnn"):
        self.text_config = text_config
        self.speaker_split = speaker_split
        self.corpus_weights = dict(corpus_weights)
        self.weight_salt = weight_salt

    def process(self, item, held_out=None):
        if isinstance(item, Reject):
            yield beam.pvalue.TaggedOutput("rejects", item)
            return
        if self.speaker_split is not None:
            if not item.corpus:
                item = self.speaker_split.assign(item)
            elif held_out is not None:
                item = self.speaker_split.assign_in_corpus(item, held_out.get(item.corpus, frozenset()))
            else:
                item = self.speaker_split.assign_in_corpus(item, frozenset(self.speaker_split.speakers))
        try:
            text = normalize_transcript(item.transcript, self.text_config)
        except RejectError as e:
            yield beam.pvalue.TaggedOutput("rejects", Reject(item.path, e.reason, e.detail))
            return
        item = dataclasses.replace(item, transcript=text)
        if item.corpus and item.split == "train" and \
                repeats(item.utt_id, self.corpus_weights.get(item.corpus, 1.0), item.corpus, self.weight_salt) == 0:
            yield beam.pvalue.TaggedOutput("sampled_out", item)
            return
        yield item


class CorpusHeldOutFn(beam.CombineFn):
    """Collects the speakers of every named corpus's train utterances (as read) and chooses each
    corpus's held-out speakers (`SpeakerSplit.choose_held_out`).

    Returns (``extract_output``): a dict corpus -> frozenset of held-out speakers.
    """

    def __init__(self, speaker_split: SpeakerSplit):
        self.speaker_split = speaker_split

    def create_accumulator(self):
        return {}

    def add_input(self, accumulator, item):
        if isinstance(item, Utterance) and item.corpus and item.split == self.speaker_split.source_split:
            accumulator.setdefault(item.corpus, set()).add(item.speaker)
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = {}
        for acc in accumulators:
            for corpus, speakers in acc.items():
                merged.setdefault(corpus, set()).update(speakers)
        return merged

    def extract_output(self, accumulator):
        held = {}
        for corpus, speakers in sorted(accumulator.items()):
            held[corpus] = self.speaker_split.choose_held_out(speakers)
            if not held[corpus]:
                LOG.warning("prepare: corpus %s has %d speaker(s); none is held out", corpus, len(speakers))
        return held


@dataclasses.dataclass(frozen=True)
class Decoded:
    """One decoded utterance on its way to the featurizer.

    Args:
        utt: The utterance (split assigned, transcript normalised).
        token_ids: The transcript's token ids (the same for every copy).
        copies: ``((factor, waveform), ...)``: the decoded audio as ``((1.0, waveform),)``, and after
            `SpeedPerturbDoFn` one entry per speed factor (`pipeline.speed`).
        augmented: ``((factor, k, waveform), ...)``: the augmented copies (`pipeline.augment`), ``k``
            from 1 to ``--augment_copies`` for every entry of ``copies``. Empty unless augmented.
    """

    utt: Utterance
    token_ids: tuple[int, ...]
    copies: tuple[tuple[float, np.ndarray], ...]
    augmented: tuple[tuple[float, int, np.ndarray], ...] = ()


class DecodeUtterance(beam.DoFn):
    """Decode → resample (`load_audio`) and tokenize the transcript; yields `Decoded` or `Reject`.

    Args:
        audio_config: Decoding limits.

    Side input (per call): the serialized SentencePiece model. It is taken here, at the head of the
    audio chain, so that the whole chain (decode, speed perturbation, features) runs in the one
    stage after the tokenizer is trained: a transform upstream of the side input would run in the
    tokenizer's stage and its waveforms would be materialised to wait for it.
    """

    def __init__(self, audio_config: AudioConfig):
        self.audio_config = audio_config

    def setup(self):
        self._tokenizer_key = None

    def _tokenizer(self, model: bytes):
        if self._tokenizer_key != model:
            from pipeline.tokenizer import load_tokenizer

            self._tok = load_tokenizer(model)
            self._tokenizer_key = model
        return self._tok

    def process(self, utt: Utterance, tokenizer_model: bytes):
        tokenizer = self._tokenizer(tokenizer_model)
        try:
            waveform = load_audio(utt.path, self.audio_config)
        except RejectError as e:
            yield Reject(utt.path, e.reason, e.detail)
            return
        yield Decoded(utt, tuple(tokenizer.encode(utt.transcript)), ((1.0, waveform),))


class SpeedPerturbDoFn(beam.DoFn):
    """Adds one speed-perturbed copy per factor to the decoded utterances of the perturbed splits.

    Args:
        factors: Speed factors, 1.0 among them (`pipeline.speed.parse_speed_factors`).
        sample_rate: The decoded audio's rate (``AudioConfig.sample_rate``).
        quality: soxr quality (``AudioConfig.resample_quality``).
        splits: Splits whose utterances are perturbed. Defaults to `PERTURBED_SPLITS` (``train``):
            held-out splits keep the real audio.

    Rejects and utterances of other splits pass through unchanged.
    """

    def __init__(self, factors: Sequence[float], sample_rate: int, quality: str = "HQ",
                 splits: Sequence[str] = PERTURBED_SPLITS):
        self.factors = tuple(factors)
        self.sample_rate = sample_rate
        self.quality = quality
        self.splits = tuple(splits)

    def process(self, item):
        if isinstance(item, Reject) or item.utt.split not in self.splits:
            yield item
            return
        ((_, waveform),) = item.copies
        yield dataclasses.replace(item, copies=tuple(
            (f, speed_perturb(waveform, f, self.sample_rate, self.quality)) for f in self.factors))


class AugmentCopiesDoFn(beam.DoFn):
    """Adds ``copies`` augmented copies (still clean; `AugmentDoFn` transforms them) of every entry of
    ``Decoded.copies`` to the utterances of the augmented splits; rejects and other splits pass through.

    Args:
        copies: Augmented copies per example (``--augment_copies``).
        splits: Splits whose utterances are augmented. Defaults to `pipeline.augment.AUGMENTED_SPLITS`.
    """

    def __init__(self, copies: int, splits: Sequence[str] = aug.AUGMENTED_SPLITS):
        self.copies = copies
        self.splits = tuple(splits)

    def process(self, item):
        if isinstance(item, Reject) or item.utt.split not in self.splits:
            yield item
            return
        yield dataclasses.replace(item, augmented=tuple(
            (factor, k, waveform) for factor, waveform in item.copies for k in range(1, self.copies + 1)))


class AugmentDoFn(beam.DoFn):
    """Applies one kind of augmentation (``reverb``, ``noise``, ``channel``, ``bandwidth`` or ``gain``) to every augmented copy,
    with the copy's own deterministic draws (`pipeline.augment.draw`); the clean copies are untouched.

    Args:
        kind: The augmentation.
        config: The `AugmentConfig` (ranges, seed).
        sample_rate: The decoded audio's rate.
    """

    def __init__(self, kind: str, config: aug.AugmentConfig, sample_rate: int):
        if kind not in aug.KINDS:
            raise ValueError(f"AugmentDoFn: unknown kind {kind!r}; expected one of {aug.KINDS}")
        self.kind = kind
        self.config = config
        self.sample_rate = sample_rate

    def process(self, item):
        if isinstance(item, Reject) or not item.augmented:
            yield item
            return
        utt_id = item.utt.utt_id
        yield dataclasses.replace(item, augmented=tuple(
            (factor, k, aug.apply(self.kind, waveform, aug.draw(self.kind, self.config, utt_id, factor, k),
                                  self.sample_rate))
            for factor, k, waveform in item.augmented))


class FeaturizeUtterance(beam.DoFn):
    """log-mel → ``tf.train.Example`` for every copy of a `Decoded`; yields `Prepared` or `Reject`.

    An utterance is written or rejected as a whole: if the features of any of its copies are not
    finite, it gives one `Reject` and no example, so a perturbed split reconciles
    (``examples == utterances × factors``). Rejects from upstream pass through (and count in the
    progress lines). Every example of a train utterance of a weighted corpus is written
    `pipeline.mixing.repeats` times (the features computed once).

    Args:
        feature_config: The frontend settings.
        audio_config: The decoded audio's rate.
        progress_every_s: Seconds between progress log lines.
        corpus_weights: ``((name, weight), ...)`` of the named corpora. Defaults to none.
        weight_salt: Salt of the weight hash. Defaults to "dsnn".
    """

    def __init__(self, feature_config: FeatureConfig, audio_config: AudioConfig,
                 progress_every_s: float = 10.0, corpus_weights: tuple[tuple[str, float], ...] = (),
                 weight_salt: str = "dsnn"):
        self.feature_config = feature_config
        self.audio_config = audio_config
        self.progress_every_s = progress_every_s
        self.corpus_weights = dict(corpus_weights)
        self.weight_salt = weight_salt
        self.written = Metrics.counter(NAMESPACE, "utterances_written")
        self.perturbed = Metrics.counter(NAMESPACE, "speed_perturbed_written")
        self.augmented = Metrics.counter(NAMESPACE, "augmented_written")
        self.repeated = Metrics.counter(NAMESPACE, "repeated_written")
        self.audio_ms = Metrics.counter(NAMESPACE, "audio_ms_written")

    def setup(self):
        from pipeline.featurize import Featurizer

        self._featurizer = Featurizer(self.feature_config)
        self._start = time.monotonic()
        self._last_log = self._start
        self._done = self._rejected = self._copies = 0
        self._seconds = 0.0

    def _progress(self):
        now = time.monotonic()
        if now - self._last_log >= self.progress_every_s:
            self._last_log = now
            copies = f" (+{self._copies} copies)" if self._copies else ""
            LOG.info("prepare: %d utterances written%s, %d rejected, %.0f s of audio (%.0f s/s)",
                     self._done, copies, self._rejected, self._seconds, self._seconds / (now - self._start))

    def process(self, item):
        from pipeline.examples import make_example

        if isinstance(item, Reject):
            self._rejected += 1
            self._progress()
            yield item
            return
        utt = item.utt
        featurized = []
        copies = [(factor, 0, waveform) for factor, waveform in item.copies] + list(item.augmented)
        for factor, k, waveform in copies:
            features = self._featurizer(waveform)
            if not np.isfinite(features).all():  # e.g. float samples so large that their power overflows
                self._rejected += 1
                self._progress()
                peak = float(np.max(np.abs(waveform), initial=0.0))
                copy = "" if factor == 1.0 else f" (speed-perturbed copy x{format_factor(factor)})"
                copy += f" (augmented copy {k})" if k else ""
                yield Reject(utt.path, NON_FINITE_FEATURES,
                             f"log-mel features{copy} are not finite ({int((~np.isfinite(features)).sum())} of "
                             f"{features.size} values; peak |sample| {peak:.3g})")
                return
            featurized.append((factor, k, waveform.shape[0], features))
        times = 1
        if utt.corpus and utt.split == "train":
            times = repeats(utt.utt_id, self.corpus_weights.get(utt.corpus, 1.0), utt.corpus, self.weight_salt)
        for rep in range(times):
            for factor, k, num_samples, features in featurized:
                utt_id = repeats_id(aug.augmented_id(perturbed_id(utt.utt_id, factor), k), rep)
                blob = make_example(utt_id, utt.speaker, utt.transcript, features, list(item.token_ids))
                seconds = num_samples / self.audio_config.sample_rate
                self.audio_ms.inc(int(round(seconds * 1000)))
                self._seconds += seconds
                if rep:
                    self.repeated.inc()
                elif k:
                    self.augmented.inc()
                elif factor != 1.0:
                    self.perturbed.inc()
                if rep or k or factor != 1.0:
                    self._copies += 1
                yield Prepared(utt.split, utt_id, int(features.shape[0]), int(num_samples), features, blob, factor,
                               utt.corpus, k, rep, times)
        self.written.inc()
        self._done += 1
        self._progress()


def _count_written(x: Prepared):
    """The summary tuples of one written example (`pipeline.summary`): an original counts as written,
    a speed copy as perturbed, an augmented copy as augmented, a repetition as repeated; an example
    of a named corpus also counts for its corpus (originals with their number of repeats)."""
    value = (1, x.num_frames, x.num_samples)
    if x.rep:
        yield REPEATED, x.split, value
    elif x.aug:
        yield AUGMENTED, (x.split, x.aug), value
    elif x.factor == 1.0:
        yield WRITTEN, x.split, value
    else:
        yield PERTURBED, (x.split, x.factor), value
    if x.corpus:
        yield CORPUS, (x.corpus, x.split), (int(x.original), x.repeats if x.original else 0, *value)


def _dead_letter_to_reject(bad) -> Reject:
    element, (exc_type, exc_repr, _) = bad
    if isinstance(element, Decoded):  # failed after decoding (speed perturbation, augmentation, features)
        element = element.utt
    path = getattr(element, "path", repr(element)[:200])
    return Reject(path, RejectReason.INTERNAL_ERROR, f"{getattr(exc_type, '__name__', exc_type)}: {exc_repr}"[:500])


def _route(item, num_partitions: int, splits: Sequence[str]) -> int:
    if isinstance(item, Reject):
        return 0
    return 1 + splits.index(item.split)


def _reject_to_json(reject: Reject) -> str:
    Metrics.counter(NAMESPACE, f"rejected_{reject.reason}").inc()
    return reject.to_json()


def _write_json(value, path: str) -> None:
    outdir.write_bytes(path, (json.dumps(value, indent=1) + "\n").encode("utf-8"))


class NonFiniteStatisticsError(DsnnError, ValueError):
    """The CMVN statistics hold NaN or Inf: ``cmvn.json`` is not written and the job fails."""


def _write_cmvn(stats, path: str) -> None:
    """Writes ``cmvn.json``, refusing statistics that are not finite (a NaN file would poison training).

    Raises:
        NonFiniteStatisticsError: naming the bins; nothing is written.
    """
    bad = ~(np.isfinite(stats.mean) & np.isfinite(stats.std))
    if bad.any():
        bins = np.flatnonzero(bad).tolist()
        shown = f"{bins[:10]}{' ...' if len(bins) > 10 else ''}"
        raise NonFiniteStatisticsError(
            f"{os.path.basename(path)}: CMVN statistics are not finite in bins {shown} of {bad.size} over "
            f"{stats.num_frames} train frames; some training features hold NaN or Inf (not written)")
    _write_json(stats.to_dict(), path)


class TrainTokenizerFn(beam.CombineFn):
    """Collects the transcripts of the ``train`` split and trains the SentencePiece model on them.

    Args:
        vocab_size: Requested vocabulary size.
        model_type: SentencePiece model type.

    Returns (``extract_output``): the serialized model; raises ``ValueError`` (no training transcripts)
    when the train split is empty.
    """

    def __init__(self, vocab_size: int, model_type: str):
        self.vocab_size = vocab_size
        self.model_type = model_type

    def create_accumulator(self):
        return []

    def add_input(self, accumulator, utt: Utterance):
        if utt.split == "train":
            accumulator.append(utt.transcript)
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = []
        for acc in accumulators:
            merged.extend(acc)
        return merged

    def extract_output(self, accumulator) -> bytes:
        return train_tokenizer(accumulator, self.vocab_size, self.model_type)


class CountNgramsFn(beam.CombineFn):
    """Counts the word n-grams of the transcripts of written examples (`dsnn_keras.ngram_lm.count_ngrams`).

    Only originals count (`Prepared.original`): speed-perturbed and augmented copies and the
    repetitions of a corpus weight have the original's transcript, and counting it once per copy
    would change the LM (its discounts depend on the counts of counts).

    Args:
        order: The LM order.

    Returns (``extract_output``): a ``Counter`` of word tuples.
    """

    def __init__(self, order: int):
        self.order = order

    def create_accumulator(self):
        return collections.Counter()

    def add_input(self, accumulator, prepared: Prepared):
        if not prepared.original:
            return accumulator
        from tensorflow.core.example import example_pb2

        from dsnn_keras.ngram_lm import count_ngrams

        example = example_pb2.Example.FromString(prepared.serialized)
        transcript = example.features.feature["transcript"].bytes_list.value[0].decode("utf-8")
        accumulator.update(count_ngrams([transcript], self.order))
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = collections.Counter()
        for acc in accumulators:
            merged.update(acc)
        return merged

    def extract_output(self, accumulator):
        return accumulator


def _write_lm(counts, out_dir: str, order: int, tokenizer_model: bytes) -> None:
    """Writes ``lm/words.arpa``, ``lm/lexicon.txt`` and ``lm/lm.json`` from the n-gram counts."""
    from dsnn_keras.ngram_lm import ARPA_FILE, INFO_FILE, LEXICON_FILE, LM_DIR, build_lm_from_counts
    from pipeline.tokenizer import load_tokenizer

    if not counts:
        return   # no train utterance written: finalize fails with its own message
    tokenizer = load_tokenizer(tokenizer_model)
    bundle = build_lm_from_counts(counts, order, lambda word: tokenizer.encode(word, out_type=str),
                                  {"split": "train", "source": "dsnn-prepare"})
    for name, text in ((ARPA_FILE, bundle.arpa), (LEXICON_FILE, bundle.lexicon_text()),
                       (INFO_FILE, json.dumps(dict(bundle.info), indent=1) + "\n")):
        outdir.write_bytes(outdir.join(out_dir, LM_DIR, name), text.encode("utf-8"))


def build_pipeline(p: beam.Pipeline, specs: Sequence[InputSpec], config: PrepareConfig,
                   out_dir: str) -> list[str]:
    """Adds the whole preparation job to ``p``, writing into ``out_dir``.

    Args:
        p: The pipeline.
        specs: Inputs (path, format, split).
        config: The `PrepareConfig`.
        out_dir: Directory (local or ``gs://``) for shards, ``tokenizer.model``, ``cmvn.json``,
            ``rejects.jsonl`` and ``_summary.json``.

    Returns:
        The split names, ``train`` first.
    """
    splits = split_names(specs, config.speaker_split)
    items = (p
             | "CreateInputs" >> beam.Create(list(specs))
             | "ReadSources" >> beam.FlatMap(_read))
    if config.reshuffle:
        items = items | "Reshuffle" >> beam.Reshuffle()
    side = []
    if config.corpora and config.speaker_split is not None and config.speaker_split.fraction is not None:
        side = [beam.pvalue.AsSingleton(items | "CorpusHeldOut" >> beam.CombineGlobally(
            CorpusHeldOutFn(config.speaker_split)))]
    normalized = items | "Normalize" >> beam.ParDo(
        NormalizeDoFn(config.text_config, config.speaker_split, config.corpus_weights, config.weight_salt),
        *side).with_outputs("rejects", *(["sampled_out"] if config.corpora else []), main="utts")
    utts = normalized.utts

    tokenizer_model = utts | "TrainTokenizer" >> beam.CombineGlobally(
        TrainTokenizerFn(config.vocab_size, config.model_type))
    _ = tokenizer_model | "WriteTokenizer" >> beam.Map(
        lambda m: outdir.write_bytes(outdir.join(out_dir, "tokenizer.model"), m))

    # The audio chain: Decode -> [SpeedPerturb] -> Featurize, one fused stage after the tokenizer
    # (Decode takes the side input). Unexpected exceptions in any of them go to the dead letters.
    decoded, failed_decode = utts | "Decode" >> beam.ParDo(
        DecodeUtterance(config.audio_config),
        beam.pvalue.AsSingleton(tokenizer_model)).with_exception_handling()
    failures = [failed_decode]
    if tuple(config.speed_factors) != NO_PERTURBATION:
        decoded, failed_perturb = decoded | "SpeedPerturb" >> beam.ParDo(SpeedPerturbDoFn(
            config.speed_factors, config.audio_config.sample_rate,
            config.audio_config.resample_quality)).with_exception_handling()
        failures.append(failed_perturb)
    if config.augment.enabled:
        decoded, failed_copies = decoded | "AugmentCopies" >> beam.ParDo(
            AugmentCopiesDoFn(config.augment.copies)).with_exception_handling()
        failures.append(failed_copies)
        for kind in config.augment.kinds:  # reverb -> noise -> channel -> bandwidth -> gain
            decoded, failed_augment = decoded | kind.capitalize() >> beam.ParDo(AugmentDoFn(
                kind, config.augment, config.audio_config.sample_rate)).with_exception_handling()
            failures.append(failed_augment)
    processed, failed_featurize = decoded | "Featurize" >> beam.ParDo(FeaturizeUtterance(
        config.feature_config, config.audio_config, config.progress_every_s, config.corpus_weights,
        config.weight_salt)).with_exception_handling()
    failures.append(failed_featurize)
    failed = failures | "AllFailures" >> beam.Flatten()
    parts = processed | "Route" >> beam.Partition(_route, len(splits) + 1, splits)
    if config.lm_order and "train" in splits:
        # Counted over the train utterances written (not those whose audio was rejected, nor the
        # speed-perturbed, augmented or repeated copies), so the LM is exactly `dsnn-lm` over the
        # original train split.
        _ = (parts[splits.index("train") + 1]
             | "CountNgrams" >> beam.CombineGlobally(CountNgramsFn(config.lm_order))
             | "WriteLM" >> beam.Map(_write_lm, out_dir, config.lm_order, beam.pvalue.AsSingleton(tokenizer_model)))

    rejects = ((normalized.rejects, parts[0],
                failed | "DeadLetters" >> beam.Map(_dead_letter_to_reject))
               | "AllRejects" >> beam.Flatten())
    _ = (rejects
         | "RejectsToJson" >> beam.Map(_reject_to_json)
         | "WriteRejects" >> beam.io.WriteToText(outdir.join(out_dir, "rejects"),
                                                 file_name_suffix=".jsonl", num_shards=1,
                                                 shard_name_template=""))

    counts = [items | "CountInputs" >> beam.Map(lambda _: (INPUT, "", 1)),
              rejects | "CountRejected" >> beam.Map(lambda r: (REJECTED, r.reason, 1))]
    if config.corpora:
        counts += [normalized.sampled_out | "CountSampledOut" >> beam.Map(lambda u: (SAMPLED_OUT, u.corpus, 1)),
                   ((utts, normalized.sampled_out) | "CorpusUtterances" >> beam.Flatten()
                    | "CountSpeakers" >> beam.Map(lambda u: (SPEAKERS, (u.corpus, u.split), u.speaker)))]
    for i, split in enumerate(splits):
        part = parts[i + 1]
        if split == "train" and config.train_order == TRAIN_ORDER_SHUFFLED:
            _ = (part
                 | f"Serialize[{split}]" >> beam.Map(lambda x: (x.utt_id, x.serialized))
                 | f"Write[{split}]" >> WriteShuffledTFRecords(
                     outdir.join(out_dir, split, "data"), file_name_suffix=".tfrecord",
                     num_shards=config.num_shards, salt=config.order_salt))
        else:
            _ = (part
                 | f"Serialize[{split}]" >> beam.Map(lambda x: x.serialized)
                 | f"Write[{split}]" >> beam.io.WriteToTFRecord(
                     outdir.join(out_dir, split, "data"), file_name_suffix=".tfrecord",
                     num_shards=config.num_shards))
        counts.append(part | f"CountWritten[{split}]" >> beam.FlatMap(_count_written))
        if split == "train":
            # Fed straight from the Decode-Featurize stage, so the combiner's partial sums run there and the
            # features are never materialised. without_defaults: an empty train split writes no
            # cmvn.json, and the job then fails in `finalize` ("no train utterance was written").
            # With --speed_perturb, --augment or --corpus_weight the statistics cover every copy and
            # repetition: the frames the model trains on.
            _ = (part
                 | "TrainFeatures" >> beam.Map(lambda x: x.features)
                 | "CMVN" >> beam.CombineGlobally(CmvnCombineFn()).without_defaults()
                 | "WriteCMVN" >> beam.Map(_write_cmvn, outdir.join(out_dir, "cmvn.json")))
    # without_defaults (saves a stage): an empty input already fails in TrainTokenizer, and
    # `finalize` reads a missing summary as zero inputs.
    _ = (counts
         | "AllCounts" >> beam.Flatten()
         | "Summary" >> beam.CombineGlobally(SummaryCombineFn()).without_defaults()
         | "WriteSummary" >> beam.Map(_write_json, outdir.join(out_dir, SUMMARY_FILE)))
    return splits
