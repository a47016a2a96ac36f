"""Evaluation of a trained run: greedy CTC decoding at every sparsity level, WER/CER, real-time factor.

``dsnn-eval RUN_DIR --data DIR --split dev`` loads the run's latest checkpoint, decodes the split at
each level and writes ``eval.json`` (the contract other parts read), ``eval.md`` (a Markdown table)
and ``wer_vs_sparsity.png``. TensorFlow is imported only after the arguments are parsed. RUN_DIR,
``--data`` and ``--out`` may be local or URLs `tf.io.gfile` reaches (``gs://...``; `dsnn_keras.fileio`);
each output file is written complete under a temporary name, then renamed into place.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import pathlib
import sys
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from dsnn_keras import fileio
from dsnn_keras.beam_search import log_softmax
from dsnn_keras.cli_args import accept_negative_lists
from dsnn_keras.decoding import error_rates, greedy_ctc_decode, ids_to_text
from dsnn_keras.errors import DsnnError
from dsnn_keras.eval_report import SCHEMA_VERSION, EvalReport, LevelResult
from dsnn_keras.versions import package_versions

EVAL_FORMAT_VERSION = SCHEMA_VERSION   # eval.json's "format_version", = its "schema_version"
# One utterance per forward pass: exactly what the exported model computes (one utterance per
# invoke, no padding). Zero-padding a batch is not neutral for this model: the stride-2 'same'
# convolutions align their windows by the padded length's parity (so every output frame can
# change), and zero frames are not silence after CMVN. On the AN4 comparison's models, batches of
# 16 moved the dev WER of one level by up to ~1.3 points either way (docs/results.md).
DEFAULT_BATCH_SIZE = 1
DEFAULT_NUM_EXAMPLES = 5


class EvaluationError(DsnnError, ValueError):
    """A user-facing problem with the inputs of an evaluation (missing run, split, bad level)."""


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One evaluation utterance: raw log-mel ``features`` [frames, num_mel_bins] and its text."""

    utt_id: str
    transcript: str
    features: np.ndarray
    speaker: str = ""

    @property
    def num_frames(self) -> int:
        return int(self.features.shape[0])


def _log(message: str) -> None:
    print(f"dsnn-eval: {message}", file=sys.stderr, flush=True)


def audio_seconds(num_frames: int, feature_config: Any) -> float:
    """Audio duration represented by ``num_frames`` feature frames (frames × hop / sample rate)."""
    return float(num_frames) * feature_config.frame_step / feature_config.sample_rate


def units_per_level(model: Any) -> dict[str, list[int]] | None:
    """``{layer: [units kept per level]}`` of a unit-granularity model, else None."""
    from dsnn_keras.sparsity.units import unit_wrappers, units_kept

    return units_kept(model) if unit_wrappers(model) else None


def nonzero_fractions(model: Any, level: int) -> dict[str, float | None]:
    """Fraction of weights kept at ``level``: over the prunable weights and over the whole model.

    Args:
        model: A nested-wrapped Keras model.
        level: Level index.

    Returns:
        ``{"prunable_nonzero_fraction", "model_nonzero_fraction", "prunable_params",
        "model_params"}``; the fractions are ``None`` when the model has no prunable weights.
        "Nonzero" means kept by the level's mask (a kept weight that is exactly 0.0 still counts).
    """
    from dsnn_keras.sparsity.wrapper import collect_nested_wrappers

    # The biases unit granularity masks are not prunable weights (docs/nested.md).
    codes = [w.code.numpy() for wrapper in collect_nested_wrappers(model) for w in wrapper.nested_weights
             if w.counted]
    prunable = sum(int(c.size) for c in codes)
    kept = sum(int(np.count_nonzero(c > level)) for c in codes)
    total = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    if prunable == 0:
        return {"prunable_nonzero_fraction": None, "model_nonzero_fraction": None,
                "prunable_params": 0, "model_params": total}
    return {
        "prunable_nonzero_fraction": kept / prunable,
        "model_nonzero_fraction": (total - (prunable - kept)) / total if total else None,
        "prunable_params": prunable,
        "model_params": total,
    }


def _batches(order: Sequence[int], utterances: Sequence[Utterance], batch_size: int,
             num_mel_bins: int) -> Iterable[tuple[list[int], np.ndarray, np.ndarray]]:
    for start in range(0, len(order), batch_size):
        index = list(order[start:start + batch_size])
        lengths = np.array([utterances[i].num_frames for i in index], dtype=np.int32)
        padded = np.zeros([len(index), int(lengths.max()), num_mel_bins], dtype=np.float32)
        for row, i in enumerate(index):
            padded[row, :lengths[row]] = utterances[i].features
        yield index, padded, lengths


def _default_output_lengths(model_config: Any = None) -> Callable[[np.ndarray], Any]:
    """``dsnn_keras.model.output_lengths`` for ``model_config`` (None: the default front-end)."""
    import functools

    from dsnn_keras.model import output_lengths

    return functools.partial(output_lengths, model_config=model_config)


def evaluate_model(model: Any, utterances: Sequence[Utterance], *, levels: Sequence[int],
                   sparsities: Sequence[float], blank_id: int, pieces: Sequence[str],
                   feature_config: Any, batch_size: int = DEFAULT_BATCH_SIZE,
                   output_lengths: Callable[[np.ndarray], Any] | None = None,
                   num_examples: int = DEFAULT_NUM_EXAMPLES,
                   progress: Callable[[str], None] | None = None,
                   decode: Callable[[np.ndarray], str] | None = None) -> dict[str, Any]:
    """Decodes ``utterances`` with ``model`` at each of ``levels`` and scores them.

    The model runs in one ``tf.function`` traced once under ``sparsity_level_scope(model, level)``
    with the level as an int32 tensor argument; the trace happens on an untimed warm-up batch.

    Args:
        model: Nested-wrapped Keras model: raw log-mel ``[batch, frames, mels]`` in, logits
            ``[batch, out_frames, vocab + 1]`` out.
        utterances: What to decode (padding is added per batch; utterances are batched by length).
        levels: Level indices to evaluate.
        sparsities: The model's sparsity of every level (indexed by level).
        blank_id: The CTC blank class.
        pieces: SentencePiece piece of every token id.
        feature_config: The ``FeatureConfig`` (for audio durations).
        batch_size: Utterances per forward pass. Defaults to 1 (no padding: what the export computes).
        output_lengths: Maps input frame counts to output frame counts, e.g.
            ``functools.partial(dsnn_keras.model.output_lengths, model_config=config.model)``.
            Defaults to ``dsnn_keras.model.output_lengths`` of the default front-end (two
            stride-2 convolutions).
        num_examples: How many (reference, hypothesis) pairs to keep per level. Defaults to 5.
        progress: Called with a line of progress text. Defaults to none.
        decode: Maps one utterance's log-probabilities ``[out_frames, vocab + 1]`` (log-softmax of
            the logits) and the level index to its text, e.g.
            ``lambda lp, level: decoders[level].decode(lp).text``. Defaults to greedy CTC.

    Returns:
        ``{"levels": [per-level dict], "hypotheses": {level: [text per utterance]},
        "num_utterances", "audio_seconds"}``. Each per-level dict holds ``level``, ``sparsity``,
        ``wer``, ``cer``, ``rtf`` (wall-clock compute seconds / audio seconds; compute = forward
        pass + decoding), ``cpu_rtf`` (process CPU seconds / audio seconds, all threads),
        ``num_utterances``, the error counts, the nonzero fractions and ``examples``; with
        ``decode``, also ``decoder_seconds`` (the wall-clock seconds of the decoding alone).

    Example:
        >>> result = evaluate_model(run.model, utts, levels=[0, 3], sparsities=run.levels,
        ...                         blank_id=run.blank_id, pieces=run.pieces,
        ...                         feature_config=run.feature_config)  # doctest: +SKIP
    """
    import tensorflow as tf

    from dsnn_keras import sparsity_level_scope

    if batch_size <= 0:
        raise EvaluationError(f"batch_size must be > 0, got {batch_size}")
    if not utterances:
        raise EvaluationError("there are no utterances to evaluate")
    output_lengths = output_lengths or _default_output_lengths()
    say = progress or (lambda _message: None)
    num_mel_bins = feature_config.num_mel_bins
    for utt in utterances:
        if utt.features.ndim != 2 or utt.features.shape[1] != num_mel_bins:
            raise EvaluationError(
                f"utterance {utt.utt_id}: features must be [frames, {num_mel_bins}], got "
                f"{tuple(utt.features.shape)}")
    references = [utt.transcript for utt in utterances]
    total_audio = sum(audio_seconds(utt.num_frames, feature_config) for utt in utterances)
    order = sorted(range(len(utterances)), key=lambda i: utterances[i].num_frames)

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, None, num_mel_bins], tf.float32),
                                                   tf.TensorSpec([], tf.int32)])
    def forward(features, level):
        with sparsity_level_scope(model, level):
            return model(features, training=False)

    warmup = tf.zeros([1, max(utterances[order[0]].num_frames, 1), num_mel_bins])
    forward(warmup, tf.constant(int(levels[0]), tf.int32))  # traces once for every level
    results: list[dict[str, Any]] = []
    hypotheses_by_level: dict[int, list[str]] = {}
    for level in levels:
        level = int(level)
        level_tensor = tf.constant(level, tf.int32)
        hypotheses: list[str] = [""] * len(utterances)
        wall = cpu = decoder_wall = 0.0
        done = 0
        for index, padded, lengths in _batches(order, utterances, batch_size, num_mel_bins):
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            logits = forward(tf.constant(padded), level_tensor)
            out_lengths = np.asarray(output_lengths(lengths)).astype(np.int64).reshape(-1)
            if decode is None:
                texts = [ids_to_text(ids, pieces)
                         for ids in greedy_ctc_decode(logits.numpy(), out_lengths, blank_id)]
            else:
                decode_start = time.perf_counter()
                log_probs = log_softmax(logits.numpy())
                texts = [decode(log_probs[row, :min(int(n), log_probs.shape[1])], level)
                         for row, n in enumerate(out_lengths)]
                decoder_wall += time.perf_counter() - decode_start
            wall += time.perf_counter() - wall_start
            cpu += time.process_time() - cpu_start
            for i, text in zip(index, texts):
                hypotheses[i] = text
            done += len(index)
        rates = error_rates(references, hypotheses)
        entry: dict[str, Any] = {
            "level": level,
            "sparsity": float(sparsities[level]),
            "wer": rates["wer"],
            "cer": rates["cer"],
            "rtf": wall / total_audio if total_audio else None,
            "cpu_rtf": cpu / total_audio if total_audio else None,
            "num_utterances": len(utterances),
            "compute_seconds": wall,
            "substitutions": rates["substitutions"],
            "deletions": rates["deletions"],
            "insertions": rates["insertions"],
            "reference_words": rates["reference_words"],
            "char_errors": rates["char_errors"],
            "reference_chars": rates["reference_chars"],
        }
        if decode is not None:
            entry["decoder_seconds"] = decoder_wall
        entry.update(nonzero_fractions(model, level))
        units = units_per_level(model)
        if units is not None:
            entry["units"] = {name: counts[level] for name, counts in units.items()}
        entry["examples"] = [
            {"utt_id": utterances[i].utt_id, "reference": references[i],
             "hypothesis": hypotheses[i]}
            for i in range(min(num_examples, len(utterances)))]
        results.append(entry)
        hypotheses_by_level[level] = hypotheses
        say(f"level {level} (sparsity {entry['sparsity']:.2f}): WER {entry['wer']:.2%}, "
            f"CER {entry['cer']:.2%}, RTF {entry['rtf']:.4f} over {done} utterances")
    return {"levels": results, "hypotheses": hypotheses_by_level,
            "num_utterances": len(utterances), "audio_seconds": total_audio}


def parse_levels(text: str | None, num_levels: int, flag: str = "--levels") -> list[int]:
    """Parses ``"0,3"`` into level indices, checked against a model with ``num_levels`` levels.

    ``None`` or ``"all"`` selects every level. Errors name ``flag``.
    """
    if text is None or text.strip().lower() == "all":
        return list(range(num_levels))
    levels: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            level = int(part)
        except ValueError:
            raise EvaluationError(
                f"{flag}: {part!r} is not a level index (expected e.g. 0,3)") from None
        if not 0 <= level < num_levels:
            raise EvaluationError(
                f"{flag}: level {level} is out of range: the run has {num_levels} levels "
                f"(0..{num_levels - 1})")
        if level not in levels:
            levels.append(level)
    if not levels:
        raise EvaluationError(f"{flag}: no level given")
    return levels


def decoder_description(report: Mapping[str, Any]) -> str:
    """``greedy CTC decoding, no LM`` or the beam decoder's settings, in words."""
    config = report.get("decoder_config")
    if report.get("decoder") != "beam" or not isinstance(config, Mapping):
        return "greedy CTC decoding, no LM"
    beam = config.get("beam", {})
    if not config.get("lm"):
        return f"CTC prefix beam search (beam {beam.get('beam_width')}), no LM"
    text = (f"CTC beam search with a {config.get('lm_order')}-gram word LM and a {config.get('lexicon_words')}-word "
            f"lexicon (beam {beam.get('beam_width')}, LM weight {beam.get('lm_weight')}, word bonus "
            f"{beam.get('word_bonus')})")
    levels = config.get("levels")
    if isinstance(levels, Mapping) and levels:
        text += "; per level: " + ", ".join(
            f"{level}: LM weight {beam.get('lm_weight')}, word bonus {beam.get('word_bonus')}"
            for level, beam in levels.items() if isinstance(beam, Mapping))
    if config.get("hotwords"):
        text += f", hot words {config['hotwords']} (weight {config.get('hotword_weight')})"
    return text


def markdown_table(report: Mapping[str, Any]) -> str:
    """The per-level Markdown table of an ``eval.json`` report (WER/CER in percent)."""
    lines = [
        f"# Evaluation on `{report.get('split', '?')}`",
        "",
        f"{report.get('num_utterances', '?')} utterances"
        + (f" of speaker(s) {', '.join(report['speakers'])}" if report.get("speakers") else "")
        + f", {report.get('audio_seconds', 0.0) / 60:.1f} min of audio, {decoder_description(report)}.",
        "",
        "| level | sparsity | kept (prunable) | WER % | CER % | RTF | utterances |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in report["levels"]:
        kept = entry.get("prunable_nonzero_fraction")
        kept_text = "n/a" if kept is None else f"{kept:.3f}"
        rtf = entry.get("rtf")
        rtf_text = "n/a" if rtf is None else f"{rtf:.4f}"
        if entry.get("units"):
            kept_text += " (units " + ", ".join(f"{k} {v}" for k, v in entry["units"].items()) + ")"
        lines.append(
            f"| {entry['level']} | {entry['sparsity']:.2f} | {kept_text} | "
            f"{100 * entry['wer']:.2f} | {100 * entry['cer']:.2f} | {rtf_text} | "
            f"{entry['num_utterances']} |")
    lines.append("")
    lines.append("RTF: wall-clock seconds of forward pass + decoding per second of audio "
                 f"(batch size {report.get('batch_size', '?')}).")
    return "\n".join(lines) + "\n"


def plot_wer_vs_sparsity(series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                         path: str | pathlib.Path, title: str = "WER against sparsity") -> None:
    """Writes a PNG line plot of WER (%) against sparsity (%), one line per series.

    Args:
        series: ``{label: (sparsities in 0..1, WERs in 0..1)}``.
        path: Output PNG file (local or remote; written complete, then renamed into place).
        title: Plot title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for label, (sparsities, wers) in series.items():
        axes.plot([100 * s for s in sparsities], [100 * w for w in wers], marker="o", label=label)
    axes.set_xlabel("sparsity (% of prunable weights zero)")
    axes.set_ylabel("WER (%)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    fileio.write_png(figure, path)


def output_paths(run_dir: fileio.AnyPath, out: str | pathlib.Path | None) -> dict[str, fileio.AnyPath]:
    """Where the JSON, Markdown, PNG and hypotheses files go (`pathlib.Path`s, or URLs when remote).

    Default: ``RUN_DIR/eval.json``, ``eval.md``, ``wer_vs_sparsity.png``, ``eval_hypotheses.jsonl``.
    With ``out=DIR/NAME.json``: ``DIR/NAME.json``, ``DIR/NAME.md``, ``DIR/NAME_wer_vs_sparsity.png``,
    ``DIR/NAME_hypotheses.jsonl``.
    """
    if out is None:
        return {"json": fileio.join(run_dir, "eval.json"), "md": fileio.join(run_dir, "eval.md"),
                "png": fileio.join(run_dir, "wer_vs_sparsity.png"),
                "hypotheses": fileio.join(run_dir, "eval_hypotheses.jsonl")}
    out = fileio.as_path(out)
    directory = fileio.parent(out)
    stem = pathlib.PurePosixPath(fileio.name(out)).stem
    return {"json": out, "md": fileio.join(directory, f"{stem}.md"),
            "png": fileio.join(directory, f"{stem}_wer_vs_sparsity.png"),
            "hypotheses": fileio.join(directory, f"{stem}_hypotheses.jsonl")}


def load_utterances(dataset: Any, split: str, max_utterances: int | None = None,
                    speakers: Sequence[str] | None = None) -> list[Utterance]:
    """Reads a prepared split into memory (``PreparedDataset.examples``), in file order.

    Args:
        dataset: The `PreparedDataset`.
        split: The split to read.
        max_utterances: Only the first N (of the chosen speakers'). Defaults to all.
        speakers: Only these speakers' utterances (the examples' ``speaker``). Defaults to all.

    Raises:
        EvaluationError: no such split, no utterances, or a speaker the split does not have (the
            message lists the split's speakers).
    """
    if split not in dataset.split_names:
        raise EvaluationError(
            f"split {split!r} is not in {fileio.join(dataset.root, 'dataset.json')} "
            f"(available: {', '.join(sorted(dataset.split_names)) or 'none'})")
    if max_utterances is not None and max_utterances <= 0:
        raise EvaluationError(f"max_utterances must be > 0, got {max_utterances}")
    wanted = None if speakers is None else set(speakers)
    if wanted is not None and not wanted:
        raise EvaluationError("speakers: expected at least one speaker")
    utterances, seen = [], set()
    for example in dataset.examples(split):
        speaker = str(example.get("speaker", ""))
        seen.add(speaker)
        if wanted is not None and speaker not in wanted:
            continue
        if max_utterances is not None and len(utterances) >= max_utterances:
            if wanted is None:
                break
            continue   # read on: every asked-for speaker must be found in the split
        utterances.append(Utterance(
            utt_id=str(example["utt_id"]), transcript=str(example["transcript"]),
            features=np.asarray(example["features"], dtype=np.float32), speaker=speaker))
    missing = sorted((wanted or set()) - seen)
    if missing:
        have = sorted(seen - {""})
        listed = ", ".join(have[:20]) + (f", ... ({len(have)} in all)" if len(have) > 20 else "")
        raise EvaluationError(f"split {split!r} of {dataset.root} has no speaker {', '.join(missing)} "
                              + (f"(it has {listed})" if have else "(its examples record no speaker ids)"))
    if not utterances:
        raise EvaluationError(f"split {split!r} of {dataset.root} has no utterances")
    return utterances


def evaluate_run(run_dir: str | pathlib.Path, data_dir: str | pathlib.Path, split: str = "dev",
                 levels: Sequence[int] | str | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, out: str | pathlib.Path | None = None,
                 max_utterances: int | None = None, num_examples: int = DEFAULT_NUM_EXAMPLES,
                 write: bool = True, command: Sequence[str] | None = None) -> dict[str, Any]:
    """`run_evaluation` returning the report as the ``eval.json`` dict (``report.to_dict()``).

    Kept for callers that index the JSON; new code should use `run_evaluation` (typed).
    """
    return run_evaluation(run_dir, data_dir, split=split, levels=levels, batch_size=batch_size, out=out,
                          max_utterances=max_utterances, num_examples=num_examples, write=write,
                          command=command).to_dict()


@dataclasses.dataclass(frozen=True)
class DecoderChoice:
    """What ``dsnn-eval``'s decoder flags ask for; unset fields come from the run's ``decoder.json``.

    Args:
        decoder: ``"greedy"`` or ``"beam"``; None = the run's ``decoder.json`` if any, else greedy.
        beam_width, lm_weight, word_bonus: Override the `BeamSearchConfig` (None = the run's or the default).
        lm: LM directory (``dsnn-lm`` output); ``"none"`` = no LM; None = ``RUN/lm`` of a tuned run, else
            ``DATA/lm`` if it exists, else none.
        lexicon: False = lexicon-free search without LM. None = the run's or True.
        hotwords: Phrases to favour. Defaults to none.
        hotword_weight: Bonus per hot-phrase word. Defaults to 0.0.
        settings_dir: Directory holding the ``decoder.json`` (and its ``lm/``) to use, instead of the
            run directory: where ``dsnn-eval --tune --decoder_dir DIR`` wrote them (the job keeps its
            training run read-only this way). None = the run directory.
    """

    decoder: str | None = None
    beam_width: int | None = None
    lm_weight: float | None = None
    word_bonus: float | None = None
    lm: str | None = None
    lexicon: bool | None = None
    hotwords: tuple[str, ...] = ()
    hotword_weight: float = 0.0
    settings_dir: str | None = None


def resolve_decoder(choice: DecoderChoice, run_dir: str | pathlib.Path, data_dir: str | pathlib.Path,
                    pieces: Sequence[str], blank_id: int,
                    num_levels: int | None = None) -> tuple[Any, dict[str, Any] | None]:
    """The beam decoders (`LevelDecoders`: each level's settings over one LM) a `DecoderChoice` means
    for this run (None for greedy) and its report entry. The choice's flags override every level.
    With ``num_levels``, per-level settings for a level the run lacks are refused (as the export does).

    Raises:
        EvaluationError: an unknown decoder, a missing LM directory, settings for a level the run lacks.
        BeamSearchError / LanguageModelError: bad beam settings or LM files.
    """
    from dsnn_keras.beam_search import (BeamDecoder, BeamSearchConfig, BeamSearchError, DecoderSettings,
                                        LevelDecoders, level_beams_to_dict)
    from dsnn_keras.ngram_lm import LM_DIR, LmBundle

    settings_home = fileio.as_path(choice.settings_dir) if choice.settings_dir is not None else run_dir
    settings = DecoderSettings.read(settings_home)
    if choice.settings_dir is not None and settings is None:
        raise EvaluationError(f"--decoder_dir {settings_home}: no decoder.json there (write one with "
                              f"dsnn-eval --tune --decoder_dir {settings_home})")
    name = choice.decoder or (settings.decoder if settings else "greedy")
    if name not in ("greedy", "beam"):
        raise EvaluationError(f"--decoder must be greedy or beam, got {name!r}")
    if name == "greedy":
        return None, None
    config = settings.beam if settings else BeamSearchConfig()
    overrides = {key: getattr(choice, key) for key in ("beam_width", "lm_weight", "word_bonus", "lexicon")
                 if getattr(choice, key) is not None}
    config = dataclasses.replace(config, **overrides)
    level_beams = settings.level_beams if settings else None
    if settings is not None and num_levels is not None:
        try:
            settings.check_levels(num_levels)
        except BeamSearchError as error:
            raise EvaluationError(f"{fileio.join(settings_home, 'decoder.json')}: {error}") from None
    if choice.lm is not None:
        lm_dir = None if choice.lm.lower() == "none" else fileio.as_path(choice.lm)
        if lm_dir is not None and not fileio.isdir(lm_dir):
            raise EvaluationError(f"--lm {lm_dir}: no such directory (write one with dsnn-lm --data DIR)")
        source = "--lm"
    elif settings is not None:
        lm_dir, source = settings.lm_path(settings_home), f"{settings_home}/decoder.json"
    else:
        lm_dir, source = fileio.join(data_dir, LM_DIR), "DATA/lm"
        if not fileio.isdir(lm_dir):
            lm_dir, source = None, "no LM found (DATA/lm absent)"
    lm = LmBundle.read_dir(lm_dir) if lm_dir is not None else None
    beam = BeamDecoder(pieces, blank_id, config, lm=lm, hotwords=choice.hotwords,
                       hotword_weight=choice.hotword_weight)
    decoders = LevelDecoders(beam, level_beams, overrides)
    entry = {"beam": config.to_dict(), "lm": None if lm is None else str(lm_dir),
             "lm_order": None if lm is None else lm.order,
             "lexicon_words": None if lm is None else len(lm.lexicon),
             "hotwords": list(beam.hotwords), "hotword_weight": choice.hotword_weight,
             "source": source}
    if decoders.per_level:
        entry["levels"] = level_beams_to_dict(decoders.configs())
    return decoders, entry


DEFAULT_TUNE_LM_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
DEFAULT_TUNE_WORD_BONUSES = (-1.0, 0.0, 1.0, 2.0, 3.0)
# The speed stage of --tune: pruning settings tried once the weights are chosen; the fastest one whose
# WER is no worse than the chosen weights' is kept (docs/evaluation.md, "Tuning for speed").
DEFAULT_TUNE_BEAM_THRESHOLDS = (25.0, 15.0, 10.0)
DEFAULT_TUNE_TOKEN_BEAMS = (8, 4)
DEFAULT_TUNE_BLANK_SKIPS = (None, 0.99, 0.95, 0.9)   # None: every frame searched (BeamSearchConfig.blank_skip)
DEFAULT_TUNE_TOKEN_MIN_LOGPS = (None, -10.0, -8.0, -6.0)   # None: no floor (BeamSearchConfig.token_min_logp)
DEFAULT_TUNE_BEAM_WIDTHS = (32, 16, 8)   # stage 1's own width is always tried too
SPEED_TIMING_PASSES = 3   # an admissible setting's time is the best of this many passes; others are timed once
# How the speed stage walks its settings: "coordinate" (one knob at a time, docs/evaluation.md) or "grid"
# (every combination; 288 settings per level with the defaults).
SPEED_SEARCHES = ("coordinate", "grid")
DEFAULT_TUNE_SPEED_SEARCH = "coordinate"
SPEED_KNOBS = ("beam_width", "beam_threshold", "token_beam", "blank_skip", "token_min_logp")
COORDINATE_MAX_SWEEPS = 3


def tune_defaults_fingerprint() -> dict[str, Any]:
    """What `tune_decoder`'s default speed stage runs: its grid and the search's version. A pipeline
    step that tunes with the defaults puts this into its fingerprint, so a new grid or search re-tunes."""
    from dsnn_keras.beam_search import SEARCH_VERSION

    return {"beam_thresholds": list(DEFAULT_TUNE_BEAM_THRESHOLDS), "token_beams": list(DEFAULT_TUNE_TOKEN_BEAMS),
            "blank_skips": list(DEFAULT_TUNE_BLANK_SKIPS), "beam_widths": list(DEFAULT_TUNE_BEAM_WIDTHS),
            "token_min_logps": list(DEFAULT_TUNE_TOKEN_MIN_LOGPS), "speed_search": DEFAULT_TUNE_SPEED_SEARCH,
            "search_version": SEARCH_VERSION}


def _resolved(path: fileio.AnyPath) -> str:
    """A path resolved (local: symlinks followed) or a URL normalised, to tell whether two name one place."""
    if fileio.is_local(path):
        return str(pathlib.Path(path).resolve())
    return str(path).rstrip("/")


def fastest_admissible(speed_grid: Sequence[Mapping[str, Any]], best_wer: float,
                       slack: float = 0.0) -> Mapping[str, Any] | None:
    """The speed stage's rule: of the settings whose WER is at most ``best_wer + slack``, the one with
    the least decoding time (ties: the wider search, a token beam of None being the widest, then no
    blank skipping, then no token floor); None if none is."""
    admissible = [g for g in speed_grid if g["wer"] <= best_wer + slack + 1e-12]
    if not admissible:
        return None
    return min(admissible, key=lambda g: (g["decoder_seconds"], -g.get("beam_width", 0), -g["beam_threshold"],
                                          -(math.inf if g["token_beam"] is None else g["token_beam"]),
                                          g["blank_skip"] is not None, g.get("token_min_logp") is not None))


def coordinate_speed_search(values: Mapping[str, Sequence[Any]], start: Mapping[str, Any],
                            measure: Callable[[dict[str, Any]], Mapping[str, Any]], best_wer: float,
                            slack: float = 0.0, max_sweeps: int = COORDINATE_MAX_SWEEPS) -> list[dict[str, Any]]:
    """The speed stage's coordinate search: from ``start``, one knob at a time (`SPEED_KNOBS` order),
    each of its ``values`` is measured with the other knobs held, and the fastest admissible one
    (`fastest_admissible`, WER at most ``best_wer + slack``) is taken before the next knob; sweeps
    repeat until one changes nothing (at most ``max_sweeps``). A setting is measured once, and only
    settings of the grid ``values`` spans are measured, as ``"grid"`` measures all of them.

    Args:
        values: For each knob of `SPEED_KNOBS`, the values to try.
        start: Where the walk starts (stage 1's pruning); a knob whose start value is not among its
            ``values`` starts at its first value. If no measured setting is admissible, the choice
            is None and the caller keeps stage 1's pruning, as with the grid.
        measure: Decodes with a setting; returns it with ``"wer"`` and ``"decoder_seconds"`` added.
        best_wer: Stage 1's WER.
        slack: WER the search may give up for speed.
        max_sweeps: Sweeps over the knobs at most.

    Returns:
        Every measured setting (with its WER and seconds), in the order measured; the choice is
        ``fastest_admissible(returned, best_wer, slack)``.

    Example:
        >>> grid = coordinate_speed_search({"beam_width": [32, 16], "beam_threshold": [25.0],
        ...                                 "token_beam": [8], "blank_skip": [None], "token_min_logp": [None]},
        ...                                {"beam_width": 32, "beam_threshold": 25.0, "token_beam": 8,
        ...                                 "blank_skip": None, "token_min_logp": None},
        ...                                lambda s: {**s, "wer": 0.1, "decoder_seconds": s["beam_width"] / 100},
        ...                                best_wer=0.1)
        >>> fastest_admissible(grid, 0.1)["beam_width"]
        16
    """
    measured: dict[tuple, dict[str, Any]] = {}

    def get(setting: Mapping[str, Any]) -> dict[str, Any]:
        key = tuple(setting[knob] for knob in SPEED_KNOBS)
        if key not in measured:
            measured[key] = dict(measure(dict(setting)))
        return measured[key]

    current = get({knob: start[knob] if start[knob] in values[knob] else values[knob][0] for knob in SPEED_KNOBS})
    for _ in range(max_sweeps):
        before = current
        for knob in SPEED_KNOBS:
            candidates = [current] + [get({**{k: current[k] for k in SPEED_KNOBS}, knob: value})
                                      for value in values[knob]]
            current = fastest_admissible(candidates, best_wer, slack) or current
        if current is before:
            break
    return list(measured.values())


def tune_decoder(run_dir: str | pathlib.Path, data_dir: str | pathlib.Path, split: str = "dev",
                 level: int | str | Sequence[int] = "all",
                 choice: DecoderChoice = DecoderChoice(),
                 lm_weights: Sequence[float] = DEFAULT_TUNE_LM_WEIGHTS,
                 word_bonuses: Sequence[float] = DEFAULT_TUNE_WORD_BONUSES,
                 max_utterances: int | None = None,
                 out_dir: str | pathlib.Path | None = None,
                 beam_thresholds: Sequence[float] = DEFAULT_TUNE_BEAM_THRESHOLDS,
                 token_beams: Sequence[int] = DEFAULT_TUNE_TOKEN_BEAMS,
                 blank_skips: Sequence[float | None] = DEFAULT_TUNE_BLANK_SKIPS,
                 speed_wer_slack: float = 0.0,
                 beam_widths: Sequence[int] = DEFAULT_TUNE_BEAM_WIDTHS,
                 token_min_logps: Sequence[float | None] = DEFAULT_TUNE_TOKEN_MIN_LOGPS,
                 speakers: Sequence[str] | None = None,
                 speed_search: str = DEFAULT_TUNE_SPEED_SEARCH) -> dict[str, Any]:
    """Grid-searches the LM weight and the word bonus on ``split`` at each tuned level, then the
    search's pruning for speed; writes the result into the run (or ``out_dir``).

    The model runs once per utterance and level (its log-probabilities are kept); each grid point
    only re-runs the beam search. Stage 1 picks the LM weight and word bonus with the lowest WER at
    the starting pruning (the defaults, beam threshold 25 and token beam 8, or the settings
    re-tuned). Stage 2 searches the settings of ``beam_widths`` (and stage 1's own width) x
    ``beam_thresholds`` x ``token_beams`` x ``blank_skips`` x ``token_min_logps`` with those weights
    and keeps the fastest (least decoding time, the best of 3 passes) whose WER is no higher than
    stage 1's: the search costs about the same at every level, so its share of a sparse level's time
    is what this buys down. ``speed_search="coordinate"`` (the default) walks one knob at a time
    (`coordinate_speed_search`: ~15-35 settings per level with the default values); ``"grid"``
    measures every combination (288). A setting whose WER is too high is timed once (its
    ``timing_passes`` in the recorded grid: 1, else 3). The choice
    rests on measured time, so a re-run on a busy machine may pick another setting of the same WER.

    Each level is tuned on its own (a sparse level's log-probabilities are flatter and want another
    LM weight). The densest tuned level's settings become the default (`DecoderSettings.beam`, what
    an untuned level uses); with more than one level tuned, every tuned level's settings go into
    `DecoderSettings.level_beams`. Re-tuning some levels of a run that already has a ``decoder.json``
    (where this one writes) keeps the other levels' settings from it (``tuned.kept_levels``), and the
    default becomes the densest level's. The result goes to ``RUN/decoder.json`` and the LM used is
    copied to ``RUN/lm/``, so the run's later evaluations and exports use them by default.

    Args:
        run_dir: A ``dsnn-train`` output directory.
        data_dir: The prepared dataset (its ``lm/`` is the LM unless ``choice.lm`` names another).
        split: Split to tune on. Defaults to ``"dev"``.
        level: Level(s) to tune at: an index, a list, ``"0,3"`` or ``"all"``. Defaults to ``"all"``.
        choice: Beam width, LM directory, lexicon (the weights are what is tuned).
        lm_weights: LM weights to try.
        word_bonuses: Word bonuses to try.
        max_utterances: Use only the first N utterances. Defaults to all.
        speakers: Tune on these speakers of ``split`` only (recorded in ``tuned.speakers``), e.g.
            half of the held-out speakers, to report on the other half. Defaults to all.
        out_dir: Write ``decoder.json`` and ``lm/`` here instead of into the run directory (then pass
            ``DecoderChoice(settings_dir=out_dir)`` / ``dsnn-export --decoder_dir``). Defaults to the run.
        beam_thresholds: Beam thresholds the speed stage tries (one value, with one token beam, one
            blank skip, one token floor and no width but stage 1's own: no speed stage, that setting
            is used).
        token_beams: Token beams the speed stage tries.
        blank_skips: Blank-skip probabilities the speed stage tries (None: no skipping).
        token_min_logps: Token floors (`BeamSearchConfig.token_min_logp`) the speed stage tries
            (None: every token in the token beam).
        beam_widths: Beam widths the speed stage tries besides stage 1's own (``choice.beam_width`` or
            the run's or default 32). Fewer hypotheses per frame: a search about that much shorter.
        speed_wer_slack: WER (a fraction: 0.005 = half a point) the speed stage may give up on the
            tuning split for speed: it keeps the fastest setting whose WER is at most stage 1's plus
            this. Defaults to 0.0 (never trades WER for speed).
        speed_search: ``"coordinate"`` (default) or ``"grid"``: how the speed stage walks the
            settings (see above; recorded in ``tuned.speed_search``).

    Returns:
        The default (densest tuned) level's ``{"best": {"lm_weight", "word_bonus", "wer"},
        "greedy_wer", "grid": [...], "speed": {"beam_width", "beam_threshold", "token_beam", "blank_skip",
        "token_min_logp", "wer",
        "decoder_seconds"}, "speed_grid": [...], "speed_stage": bool}`` (``speed_stage``: whether the
        speed flags gave this level more than one setting to walk), with ``"level"``, ``"decoder_json"`` and
        ``"levels"``: ``{level: the same keys}`` for every tuned level.

    Raises:
        EvaluationError: no LM to tune (the data has no ``lm/`` and none was given), bad grid or level.
    """
    import tensorflow as tf

    from dsnn_keras import sparsity_level_scope
    from dsnn_keras.beam_search import BeamSearchConfig, BeamSearchError, DecoderSettings, RUN_LM_DIR
    from dsnn_keras.dataset import PreparedDataset
    from dsnn_keras.ngram_lm import LmBundle
    from dsnn_keras.run_dir import load_run

    run_dir, data_dir = fileio.as_path(run_dir), fileio.as_path(data_dir)
    if not lm_weights or not word_bonuses:
        raise EvaluationError("--tune needs at least one LM weight and one word bonus")
    if not beam_thresholds or not token_beams or not blank_skips or not beam_widths or not token_min_logps:
        raise EvaluationError("--tune needs at least one beam width, beam threshold, token beam, blank skip and "
                              "token floor")
    for width in beam_widths:
        try:
            BeamSearchConfig(beam_width=width)
        except BeamSearchError as error:
            raise EvaluationError(f"--tune speed grid: {error}") from None
    if speed_search not in SPEED_SEARCHES:
        raise EvaluationError(f"--tune_speed_search must be one of {', '.join(SPEED_SEARCHES)}, got {speed_search!r}")
    if (isinstance(speed_wer_slack, bool) or not isinstance(speed_wer_slack, (int, float))
            or not 0.0 <= speed_wer_slack < 1.0):
        raise EvaluationError(f"--tune_wer_slack must be a WER fraction in [0, 1), got {speed_wer_slack!r}")
    speed_settings = [{"beam_threshold": float(threshold), "token_beam": int(token_beam),
                       "blank_skip": None if skip is None else float(skip),
                       "token_min_logp": None if floor is None else float(floor)}
                      for threshold in beam_thresholds for token_beam in token_beams for skip in blank_skips
                      for floor in token_min_logps]
    for setting in speed_settings:   # refused here, before the model runs
        try:
            BeamSearchConfig(**setting)
        except BeamSearchError as error:
            raise EvaluationError(f"--tune speed grid: {error}") from None
    settings_home = fileio.as_path(out_dir) if out_dir is not None else run_dir
    base = dataclasses.replace(choice, decoder="beam", lm_weight=None, word_bonus=None, hotwords=(),
                               hotword_weight=0.0, settings_dir=None)
    if out_dir is not None and DecoderSettings.read(settings_home) is not None:   # re-tuning: start from its beam
        base = dataclasses.replace(base, settings_dir=str(settings_home))
    if base.lm is None:
        base = dataclasses.replace(base, lm=str(fileio.join(data_dir, "lm")))
    if base.lm.lower() == "none" or not fileio.isdir(base.lm):
        raise EvaluationError(f"--tune needs a word LM: {base.lm} is not a directory (dsnn-lm --data {data_dir})")
    if not isinstance(level, str):
        level = ",".join(str(int(x)) for x in ([level] if isinstance(level, (int, np.integer)) else level))
    if fileio.isfile(fileio.join(run_dir, "config.yaml")):  # check the levels before the (slow) model load
        from dsnn_keras.config import load_config

        parse_levels(level, len(load_config(fileio.join(run_dir, "config.yaml")).effective_levels), "--tune_level")
    dataset = PreparedDataset.from_dir(data_dir)
    run = load_run(run_dir)
    dataset.check_feature_config(run.feature_config)
    levels = sorted(parse_levels(level, len(run.levels), "--tune_level"))
    utterances = load_utterances(dataset, split, max_utterances, speakers)
    references = [utt.transcript for utt in utterances]
    _log(f"tuning on {len(utterances)} utterances of {split!r} at level(s) {levels}: "
         f"{len(lm_weights)} LM weights x {len(word_bonuses)} word bonuses")

    @tf.function(autograph=False,
                 input_signature=[tf.TensorSpec([None, None, dataset.feature_config.num_mel_bins], tf.float32),
                                  tf.TensorSpec([], tf.int32)])
    def forward(features, level_tensor):
        with sparsity_level_scope(run.model, level_tensor):
            return run.model(features, training=False)

    lengths = _default_output_lengths(run.config.model)
    decoders, _ = resolve_decoder(base, run_dir, data_dir, run.pieces, run.blank_id, num_levels=len(run.levels))
    previous = DecoderSettings.read(settings_home)   # re-tuning: the levels not tuned now keep theirs

    def tune_one(level: int) -> tuple[Any, dict[str, Any]]:
        log_probs = []
        for utt in utterances:
            logits = forward(tf.constant(utt.features[None]), tf.constant(level, tf.int32))
            frames = int(np.asarray(lengths(np.array([utt.num_frames]))).reshape(-1)[0])
            log_probs.append(log_softmax(logits.numpy()[0, :frames]))
        greedy = [ids_to_text(greedy_ctc_decode(lp[None], None, run.blank_id)[0], run.pieces) for lp in log_probs]
        greedy_wer = error_rates(references, greedy)["wer"]
        start_decoder = decoders[level]
        grid = []
        for lm_weight in lm_weights:
            for word_bonus in word_bonuses:
                beam = start_decoder.with_config(lm_weight=float(lm_weight), word_bonus=float(word_bonus))
                start = time.perf_counter()
                hypotheses = [beam.decode(lp).text for lp in log_probs]
                seconds = time.perf_counter() - start
                wer = error_rates(references, hypotheses)["wer"]
                grid.append({"lm_weight": float(lm_weight), "word_bonus": float(word_bonus), "wer": wer,
                             "decoder_seconds": seconds})
                _log(f"level {level} lm_weight {lm_weight:g} word_bonus {word_bonus:g}: WER {wer:.2%} "
                     f"({seconds:.2f} s)")
        best = min(grid, key=lambda g: (g["wer"], g["lm_weight"], abs(g["word_bonus"])))
        beam = start_decoder.with_config(lm_weight=best["lm_weight"], word_bonus=best["word_bonus"])
        speed_grid = []
        widths = sorted({int(w) for w in beam_widths} | {beam.config.beam_width}, reverse=True)
        level_settings = [{"beam_width": width, **setting} for width in widths for setting in speed_settings]

        def measure(setting: dict[str, Any]) -> dict[str, Any]:
            candidate = beam.with_config(**setting)
            passes = []
            while len(passes) < SPEED_TIMING_PASSES:
                start = time.perf_counter()
                hypotheses = [candidate.decode(lp).text for lp in log_probs]
                passes.append(time.perf_counter() - start)
                wer = error_rates(references, hypotheses)["wer"]
                if wer > best["wer"] + speed_wer_slack + 1e-12:
                    break   # not admissible: its time decides nothing (recorded as "timing_passes": 1)
            _log(f"level {level} beam_width {setting['beam_width']} beam_threshold {setting['beam_threshold']:g} "
                 f"token_beam {setting['token_beam']} blank_skip {setting['blank_skip']} "
                 f"token_min_logp {setting['token_min_logp']}: WER {wer:.2%} ({min(passes):.3f} s)")
            return {**setting, "wer": wer, "decoder_seconds": min(passes), "timing_passes": len(passes)}

        if len(level_settings) > 1:
            _log(f"level {level} speed ({speed_search}): {len(widths)} beam widths x {len(beam_thresholds)} beam "
                 f"thresholds x {len(token_beams)} token beams x {len(blank_skips)} blank skips x "
                 f"{len(token_min_logps)} token floors at the chosen weights")
            if speed_search == "grid":
                speed_grid = [measure(setting) for setting in level_settings]
            else:
                knob_values = {knob: list(dict.fromkeys(setting[knob] for setting in level_settings))
                               for knob in SPEED_KNOBS}   # each knob's values, in the flags' order
                start_setting = {knob: getattr(beam.config, knob) for knob in SPEED_KNOBS}
                speed_grid = coordinate_speed_search(knob_values, start_setting, measure, best["wer"],
                                                     speed_wer_slack)
            fastest = fastest_admissible(speed_grid, best["wer"], speed_wer_slack)
            if fastest is not None:   # None if no measured setting is admissible: stage 1's pruning stays
                beam = beam.with_config(**{knob: fastest[knob] for knob in SPEED_KNOBS})
        elif level_settings:
            beam = beam.with_config(**level_settings[0])
        speed = next((g for g in speed_grid if all(g[knob] == getattr(beam.config, knob) for knob in SPEED_KNOBS)),
                     None)
        _log(f"level {level} best: lm_weight {best['lm_weight']:g} word_bonus {best['word_bonus']:g} WER "
             f"{best['wer']:.2%} (greedy {greedy_wer:.2%}), beam_width {beam.config.beam_width} "
             f"beam_threshold {beam.config.beam_threshold:g} "
             f"token_beam {beam.config.token_beam} blank_skip {beam.config.blank_skip} "
             f"token_min_logp {beam.config.token_min_logp}")
        return beam.config, {"best": best, "greedy_wer": greedy_wer, "grid": grid, "speed": speed,
                             "speed_grid": speed_grid, "speed_stage": len(level_settings) > 1}

    tuned = {level: tune_one(level) for level in levels}
    default_level = levels[0]
    default_config, default_result = tuned[default_level]
    configs = {level: config for level, (config, _) in tuned.items()}
    kept = [] if previous is None else [level for level in range(len(run.levels)) if level not in tuned]
    if kept:
        configs.update({level: previous.beam_for(level) for level in kept})
        default_config = configs[min(configs)]
        _log(f"level(s) {kept} keep their settings from the previous {fileio.join(settings_home, 'decoder.json')}")
    source = fileio.as_path(base.lm)
    target = fileio.join(settings_home, RUN_LM_DIR)
    if _resolved(source) != _resolved(target):
        LmBundle.read_dir(source).write_dir(target)
    record = {"split": split, "level": default_level, "data_dir": str(data_dir), "lm_source": str(source),
              "num_utterances": len(utterances), "speed_wer_slack": speed_wer_slack,
              # None: one setting per speed flag, no speed stage ran at any tuned level
              "speed_search": speed_search if any(r["speed_stage"] for _, r in tuned.values()) else None,
              "greedy_wer": default_result["greedy_wer"],
              "best_wer": default_result["best"]["wer"], "grid": default_result["grid"],
              "speed_grid": default_result["speed_grid"]}
    if speakers is not None:
        record["speakers"] = sorted({utt.speaker for utt in utterances})
    if len(levels) > 1:
        record["levels"] = [{"level": lv, "greedy_wer": result["greedy_wer"], "best_wer": result["best"]["wer"],
                             "grid": result["grid"], "speed_grid": result["speed_grid"]}
                            for lv, (_, result) in tuned.items()]
    if kept:
        record["kept_levels"] = kept
    settings = DecoderSettings(decoder="beam", beam=default_config, lm_dir=RUN_LM_DIR, tuned=record,
                               level_beams=configs if len(configs) > 1 else None)
    path = settings.write(settings_home)
    _log(f"wrote {path} (" + "; ".join(
        f"level {lv}: lm_weight {config.lm_weight:g} word_bonus {config.word_bonus:g} {split} WER "
        f"{result['best']['wer']:.2%}" for lv, (config, result) in tuned.items()) + ")")
    return {**default_result, "level": default_level, "decoder_json": str(path),
            "levels": {lv: result for lv, (_, result) in tuned.items()}}


def run_evaluation(run_dir: str | pathlib.Path, data_dir: str | pathlib.Path, split: str = "dev",
                   levels: Sequence[int] | str | None = None,
                   batch_size: int = DEFAULT_BATCH_SIZE, out: str | pathlib.Path | None = None,
                   max_utterances: int | None = None, num_examples: int = DEFAULT_NUM_EXAMPLES,
                   write: bool = True, command: Sequence[str] | None = None,
                   decoder: DecoderChoice | None = None, speakers: Sequence[str] | None = None) -> EvalReport:
    """Evaluates a trained run on one split of a prepared dataset and writes the report files.

    What ``dsnn-eval`` runs (its ``main`` only parses the arguments and prints the table).

    Args:
        run_dir: A ``dsnn-train`` output directory.
        data_dir: A prepared dataset directory (``dsnn-prepare`` output).
        split: Split to decode. Defaults to ``"dev"``.
        levels: Level indices (or a string like ``"0,3"``); ``None`` = all the run's levels.
        batch_size: Utterances per forward pass. Defaults to 1 (exact: no padding); larger batches
            are faster but pad, which changes this model's outputs slightly.
        out: Path of the JSON report. Defaults to ``RUN_DIR/eval.json`` (see ``output_paths``).
        max_utterances: Decode only the first N utterances of the split. Defaults to all.
        num_examples: (reference, hypothesis) pairs kept per level in the report. Defaults to 5.
        write: Write eval.json / eval.md / the PNG / the hypotheses file. Defaults to True.
        command: The command line recorded in the report. Defaults to ``sys.argv``.
        decoder: Which decoder (`DecoderChoice`). Defaults to the run's ``decoder.json``
            (``dsnn-eval --tune``) if it has one, else greedy CTC.
        speakers: Decode only these speakers of ``split`` (recorded in the report's ``speakers``).
            Defaults to all.

    Returns:
        The `EvalReport` written to eval.json (``report.to_dict()``: ``{"format_version",
        "schema_version", "split", "levels": [{"level", "sparsity", "wer", "cer", "rtf",
        "num_utterances", ...}], "num_utterances", "audio_seconds", "batch_size", "run_dir",
        "data_dir", "files", "created_by"}``).

    Raises:
        EvaluationError: the run or data directory is missing, the split does not exist, a level
            is out of range, or the dataset's feature config differs from the run's.

    Example:
        >>> report = run_evaluation("runs/an4_dsnn", "data/an4", split="dev")  # doctest: +SKIP
        >>> [round(level.wer, 3) for level in report.levels]  # doctest: +SKIP
    """
    run_dir = fileio.as_path(run_dir)
    data_dir = fileio.as_path(data_dir)
    if not fileio.isdir(run_dir):
        raise EvaluationError(f"run directory {run_dir} does not exist")
    if not fileio.isdir(fileio.join(run_dir, "checkpoints")):
        raise EvaluationError(
            f"run directory {run_dir} has no checkpoints/ (is it a dsnn-train output?)")
    if not fileio.isfile(fileio.join(data_dir, "dataset.json")):
        raise EvaluationError(
            f"data directory {data_dir} has no dataset.json (is it a dsnn-prepare output?)")
    if max_utterances is not None and max_utterances <= 0:
        raise EvaluationError(f"max_utterances must be > 0, got {max_utterances}")

    from dsnn_keras.dataset import PreparedDataset
    from dsnn_keras.run_dir import load_run

    dataset = PreparedDataset.from_dir(data_dir)
    if split not in dataset.split_names:  # checked before the (slow) model load
        raise EvaluationError(
            f"split {split!r} is not in {fileio.join(data_dir, 'dataset.json')} "
            f"(available: {', '.join(sorted(dataset.split_names)) or 'none'})")
    if not isinstance(levels, (str, type(None))):
        levels = ",".join(str(int(x)) for x in levels)
    if fileio.isfile(fileio.join(run_dir, "config.yaml")):  # check the levels before the (slow) model load
        from dsnn_keras.config import load_config

        parse_levels(levels, len(load_config(fileio.join(run_dir, "config.yaml")).effective_levels))
    _log(f"loading run {run_dir}")
    run = load_run(run_dir)
    dataset.check_feature_config(run.feature_config)  # DatasetError (a ValueError) naming the keys
    level_list = parse_levels(levels, len(run.levels))
    utterances = load_utterances(dataset, split, max_utterances, speakers)
    beam, decoder_config = resolve_decoder(decoder or DecoderChoice(), run_dir, data_dir, run.pieces, run.blank_id,
                                           num_levels=len(run.levels))
    _log(f"decoding {len(utterances)} utterances of {split!r} at levels {level_list} "
         f"({decoder_description({'decoder': 'beam' if beam else 'greedy_ctc', 'decoder_config': decoder_config})})")
    result = evaluate_model(
        run.model, utterances, levels=level_list, sparsities=run.levels, blank_id=run.blank_id,
        pieces=run.pieces, feature_config=run.feature_config, batch_size=batch_size,
        output_lengths=_default_output_lengths(run.config.model), num_examples=num_examples,
        progress=_log, decode=None if beam is None else (lambda lp, level: beam[level].decode(lp).text))
    paths = output_paths(run_dir, out)
    report = EvalReport(
        split=split,
        levels=tuple(LevelResult.from_dict(entry, where="dsnn-eval") for entry in result["levels"]),
        num_utterances=result["num_utterances"],
        audio_seconds=result["audio_seconds"],
        batch_size=batch_size,
        decoder="greedy_ctc" if beam is None else "beam",
        decoder_config=decoder_config,
        run_dir=str(run_dir),
        data_dir=str(data_dir),
        speakers=None if speakers is None else tuple(sorted({utt.speaker for utt in utterances})),
        files={kind: str(path) for kind, path in paths.items()},
        created_by={
            "command": list(sys.argv if command is None else command),
            "versions": package_versions(["dsnn", "tensorflow", "tf-keras", "jiwer"]
                                         + (["flashlight-text"] if beam else [])),
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    if write:
        # Each file is written complete, then renamed into place (fileio.atomic_write).
        report.write(paths["json"])
        fileio.atomic_write(paths["md"], markdown_table(report.to_dict()))
        plot_wer_vs_sparsity(
            {fileio.name(run_dir) or "run": ([e.sparsity for e in report.levels], [e.wer for e in report.levels])},
            paths["png"], title=f"WER against sparsity ({split})")
        fileio.atomic_write(paths["hypotheses"], "".join(
            json.dumps({"utt_id": utt.utt_id, "reference": utt.transcript,
                        "hypotheses": {str(level): result["hypotheses"][level][i] for level in level_list}}) + "\n"
            for i, utt in enumerate(utterances)))
        _log(f"wrote {paths['json']}, {paths['md']}, {paths['png']}")
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsnn-eval",
        description="Decode a split of a prepared dataset with a trained DSNN run at each sparsity "
                    "level (greedy CTC, or CTC beam search with a word n-gram LM: --decoder beam) and "
                    "report WER, CER and real-time factor. Writes RUN_DIR/eval.json, eval.md, wer_vs_sparsity.png and "
                    "eval_hypotheses.jsonl; prints the Markdown table on stdout.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="dsnn-train output directory.")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="Prepared dataset directory (dsnn-prepare output).")
    parser.add_argument("--split", default="dev", help="Split to decode (default: dev).")
    parser.add_argument("--levels", default=None, metavar="I,J",
                        help="Comma-separated level indices to evaluate, e.g. 0,3 "
                             "(default: every level of the run).")
    parser.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE,
                        help=f"Utterances per forward pass (default: {DEFAULT_BATCH_SIZE}: no padding, exactly what "
                             "the exported model computes; larger batches are faster but zero-pad, "
                             "which shifts the stride-2 convolutions' windows and changes the "
                             "results slightly).")
    parser.add_argument("--max_utterances", type=int, default=None, metavar="N",
                        help="Decode only the first N utterances of the split (default: all).")
    parser.add_argument("--speakers", default=None, metavar="S,S",
                        help="Decode (and with --tune, tune on) only these speakers of the split, comma-separated "
                             "(default: all). Tune on some held-out speakers and report on the others for a WER "
                             "the tuning has not seen.")
    parser.add_argument("--num_examples", type=int, default=DEFAULT_NUM_EXAMPLES, metavar="N",
                        help="Reference/hypothesis pairs kept per level in eval.json "
                             f"(default: {DEFAULT_NUM_EXAMPLES}).")
    parser.add_argument("--out", default=None, metavar="FILE",
                        help="Write the JSON report here instead of RUN_DIR/eval.json; the "
                             "Markdown, PNG and hypotheses files go next to it as FILE's stem "
                             "+ .md, _wer_vs_sparsity.png, _hypotheses.jsonl.")
    beam = parser.add_argument_group(
        "decoder", "Greedy CTC, or CTC prefix beam search fused with a word n-gram LM under a lexicon "
                   "(docs/evaluation.md). Unset flags come from RUN_DIR/decoder.json (written by --tune) if "
                   "the run has one.")
    beam.add_argument("--decoder", choices=("greedy", "beam"), default=None,
                      help="greedy = best path; beam = prefix beam search (default: the run's decoder.json, "
                           "else greedy)")
    beam.add_argument("--beam_width", type=int, default=None, metavar="N",
                      help="hypotheses kept per frame (default: the run's, else 32)")
    beam.add_argument("--lm_weight", type=float, default=None, metavar="A",
                      help="weight of the word LM's log10 probability (default: the run's, else 0.5)")
    beam.add_argument("--word_bonus", type=float, default=None, metavar="B",
                      help="score added per word (default: the run's, else 0)")
    beam.add_argument("--lm", default=None, metavar="DIR",
                      help="LM directory (words.arpa + lexicon.txt, from dsnn-lm or dsnn-prepare); 'none' = "
                           "lexicon-free beam search without LM (default: RUN_DIR/lm of a tuned run, else "
                           "DATA/lm if present, else none)")
    beam.add_argument("--no_lexicon", action="store_true",
                      help="lexicon-free beam search (the LM is not used: it scores lexicon words only)")
    beam.add_argument("--hotwords", default=None, metavar="PHRASES",
                      help="comma-separated phrases to favour, e.g. 'set alarm,stop' (beam with an LM only)")
    beam.add_argument("--hotword_weight", type=float, default=2.0, metavar="W",
                      help="bonus per word along a hot phrase, in log-probability units (default: 2.0, as "
                           "dsnn-transcribe)")
    beam.add_argument("--decoder_dir", default=None, metavar="DIR",
                      help="read decoder.json and its lm/ from DIR instead of RUN_DIR; with --tune, write them "
                           "there (the run directory stays untouched; dsnn-export --decoder_dir DIR carries them)")
    beam.add_argument("--tune", action="store_true",
                      help="first grid-search --lm_weight and --word_bonus on --split at --tune_level, write "
                           "the best into RUN_DIR/decoder.json (and the LM into RUN_DIR/lm; or into --decoder_dir), "
                           "then evaluate "
                           "with it")
    beam.add_argument("--tune_level", default="all", metavar="I,I",
                      help="level(s) to tune at, each on its own: comma-separated indices or 'all' (default: all). "
                           "The densest one's settings are the default; with several, decoder.json keeps each "
                           "level's settings and every later evaluation and export decodes each level with its own")
    beam.add_argument("--tune_lm_weights", default=",".join(f"{w:g}" for w in DEFAULT_TUNE_LM_WEIGHTS),
                      metavar="A,A", help="LM weights to try (default: %(default)s)")
    beam.add_argument("--tune_beam_thresholds",
                      default=",".join(f"{b:g}" for b in DEFAULT_TUNE_BEAM_THRESHOLDS), metavar="T,T",
                      help="speed stage of --tune: beam thresholds to try at the chosen weights; the fastest "
                           "setting with no higher WER is kept (default: "
                           f"{','.join(f'{b:g}' for b in DEFAULT_TUNE_BEAM_THRESHOLDS)}; one value here, in "
                           "--tune_token_beams, --tune_blank_skips and --tune_token_min_logps and only the "
                           "starting width in --tune_beam_widths: no speed stage)")
    beam.add_argument("--tune_beam_widths", default=",".join(str(b) for b in DEFAULT_TUNE_BEAM_WIDTHS),
                      metavar="N,N",
                      help="speed stage of --tune: beam widths to try besides the starting one (--beam_width, "
                           "or the run's, or 32; with --tune, --beam_width is only where the search starts) "
                           "(default: %(default)s)")
    beam.add_argument("--tune_token_beams", default=",".join(str(b) for b in DEFAULT_TUNE_TOKEN_BEAMS),
                      metavar="K,K",
                      help="speed stage of --tune: tokens tried per frame and hypothesis (default: "
                           f"{','.join(str(b) for b in DEFAULT_TUNE_TOKEN_BEAMS)})")
    beam.add_argument("--tune_blank_skips",
                      default=",".join("none" if b is None else f"{b:g}" for b in DEFAULT_TUNE_BLANK_SKIPS),
                      metavar="P,P",
                      help="speed stage of --tune: blank-skip probabilities (frames at least this surely blank "
                           "are searched once per run; none = every frame) (default: %(default)s)")
    beam.add_argument("--tune_token_min_logps",
                      default=",".join("none" if b is None else f"{b:g}" for b in DEFAULT_TUNE_TOKEN_MIN_LOGPS),
                      metavar="L,L",
                      help="speed stage of --tune: token floors, log-probabilities below 0 (a token less likely "
                           "than this at a frame is neither started nor held there; the blank and the frame's "
                           "likeliest token always count; none = no floor) (default: %(default)s)")
    beam.add_argument("--tune_wer_slack", type=float, default=0.0, metavar="POINTS",
                      help="speed stage of --tune: WER points on the tuning split it may give up for a faster "
                           "search (default: 0, never; e.g. 0.5 lets a sparse level whose search is a large share "
                           "of its time skip blanks at the cost of a word or two)")
    beam.add_argument("--tune_speed_search", choices=SPEED_SEARCHES, default=DEFAULT_TUNE_SPEED_SEARCH,
                      help="speed stage of --tune: coordinate (default) tries one knob's values at a time (width, "
                           "threshold, token beam, blank skip, token floor; ~15-35 settings per level), grid every "
                           "combination (288 per level with the defaults; the same choice or one close to it, "
                           "10-15x the time)")
    beam.add_argument("--tune_word_bonuses", default=",".join(f"{b:g}" for b in DEFAULT_TUNE_WORD_BONUSES),
                      metavar="B,B", help="word bonuses to try (default: %(default)s)")
    return accept_negative_lists(parser)


def _slack(points: float) -> float:
    if not 0.0 <= points < 100.0:
        raise EvaluationError(f"--tune_wer_slack: expected WER points in [0, 100), got {points!r}")
    return points / 100.0


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise EvaluationError(f"{flag}: expected comma-separated numbers, got {text!r}") from None


def _skips(text: str, flag: str) -> list[float | None]:
    return _optional_floats(text, flag, "probabilities")


def _optional_floats(text: str, flag: str, what: str = "numbers") -> list[float | None]:
    try:
        return [None if part.strip().lower() == "none" else float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise EvaluationError(f"{flag}: expected comma-separated {what} or 'none', got {text!r}") from None


def _speakers(text: str) -> list[str]:
    speakers = [part.strip() for part in text.split(",") if part.strip()]
    if not speakers:
        raise EvaluationError(f"--speakers: expected comma-separated speaker ids, got {text!r}")
    return speakers


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise EvaluationError(f"{flag}: expected comma-separated integers, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dsnn-eval``; returns the process exit status (0 on success)."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = ["dsnn-eval", *(sys.argv[1:] if argv is None else argv)]
    from dsnn_keras.beam_search import parse_hotwords

    choice = DecoderChoice(decoder=args.decoder, beam_width=args.beam_width, lm_weight=args.lm_weight,
                           word_bonus=args.word_bonus, lm=args.lm, lexicon=False if args.no_lexicon else None,
                           hotwords=parse_hotwords(args.hotwords),
                           hotword_weight=args.hotword_weight if args.hotwords else 0.0,
                           settings_dir=args.decoder_dir)
    try:
        speakers = None if args.speakers is None else _speakers(args.speakers)
        if args.tune:
            if args.decoder == "greedy":
                raise EvaluationError("--tune tunes the beam decoder; it cannot be combined with --decoder greedy")
            if not fileio.isdir(fileio.join(args.run_dir, "checkpoints")):
                raise EvaluationError(f"run directory {args.run_dir} has no checkpoints/ (is it a dsnn-train output?)")
            tune_decoder(args.run_dir, args.data, split=args.split, level=args.tune_level, choice=choice,
                         lm_weights=_floats(args.tune_lm_weights, "--tune_lm_weights"),
                         word_bonuses=_floats(args.tune_word_bonuses, "--tune_word_bonuses"),
                         max_utterances=args.max_utterances, out_dir=args.decoder_dir,
                         beam_thresholds=_floats(args.tune_beam_thresholds, "--tune_beam_thresholds"),
                         token_beams=_ints(args.tune_token_beams, "--tune_token_beams"),
                         blank_skips=_skips(args.tune_blank_skips, "--tune_blank_skips"),
                         token_min_logps=_optional_floats(args.tune_token_min_logps, "--tune_token_min_logps"),
                         speed_wer_slack=_slack(args.tune_wer_slack), speed_search=args.tune_speed_search,
                         beam_widths=_ints(args.tune_beam_widths, "--tune_beam_widths"), speakers=speakers)
            # What was tuned is now the run's default; the flags that were tuned must not override it.
            choice = dataclasses.replace(choice, decoder="beam", lm_weight=None, word_bonus=None, lm=None,
                                         beam_width=None)
        report = run_evaluation(
            args.run_dir, args.data, split=args.split, levels=args.levels,
            batch_size=args.batch_size, out=args.out, max_utterances=args.max_utterances,
            num_examples=args.num_examples, command=command, decoder=choice, speakers=speakers)
    except (DsnnError, FileNotFoundError, NotADirectoryError, KeyError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"dsnn-eval: error: {message}", file=sys.stderr)
        return 1
    sys.stdout.write(markdown_table(report.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
