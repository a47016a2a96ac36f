"""The job's summary: one row per sparsity level from the step artifacts, as JSON, Markdown and plots.

Reads ``eval/eval.json`` (WER, CER; greedy), ``eval/eval_beam.json`` (the tuned beam decoder's, if
the job ran it) and ``decoder/decoder.json`` (its tuned settings), ``export/model.tflite``'s ``dsnn`` metadata (nonzero weights),
``bench/bench.json`` (latency, real-time factor, file sizes), ``transcribe/transcripts.json`` and
``run/train_log.jsonl`` (training curves), ``run/warm_start.json`` (a warm-started run's source)
and ``push/decision.json`` (the push step's decision, with ``--push_dir``). Writes ``summary.json``,
``summary.md`` and ``plots/wer_vs_sparsity.png``, ``plots/latency_per_level.png``, ``plots/training_curves.png``.

Example:
    >>> summary = build_summary("demo")
    >>> [(row["sparsity"], row["wer"]) for row in summary["levels"]]
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Optional, Sequence

from dsnn_keras import fileio
from dsnn_keras.fileio import AnyPath

if TYPE_CHECKING:
    from dsnn_keras.eval_report import EvalReport

# 3: adds per level "beam_wer", "beam_cer", "beam_transcript", "decoder_ms_median" (None without the
# beam decoder) and "decoder" (None, or the tuned settings: lm_weight, word_bonus, beam_width, tuned_on).
# Since 2026-12 (still 3, keys only added): per level "beam" (None, or the settings that level decodes
# with: lm_weight, word_bonus, beam_width) and "decoder.per_level" (True when the levels differ).
# 2: adds "warm_start" (None, or run/warm_start.json) and "push" (None without --push_dir, else the
# push step's decision: status, version, reason, compared_to, tolerance, forced, comparisons, ...).
FORMAT_VERSION = 3
PLOTS = ("wer_vs_sparsity.png", "latency_per_level.png", "training_curves.png")


def _read_json(path: AnyPath) -> Any:
    try:
        return json.loads(fileio.read_text(path))
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{path}: missing; its step has not run") from error
    except ValueError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def _read_eval(path: AnyPath) -> "EvalReport":
    from dsnn_keras.eval_report import EvalReport

    try:
        return EvalReport.read(path)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{path}: missing; its step has not run") from error


def read_train_log(path: AnyPath) -> dict[str, list]:
    """``train_log.jsonl`` as ``{"train": [(step, lr, {level: loss})], "dev": [(step, [level rows])]}``.

    The log is appended to across resumes, so a step that appears twice keeps its last entry.
    """
    train: dict[int, tuple] = {}
    dev: dict[int, list] = {}
    for line in fileio.read_text(path).splitlines():
        if not line.strip():
            continue
        event = json.loads(line)
        if event.get("event") == "train":
            train[int(event["step"])] = (event.get("learning_rate"),
                                         {int(k): float(v) for k, v in event["loss"].items()})
        elif event.get("event") == "dev":
            dev[int(event["step"])] = event["levels"]
    return {"train": [(s, *train[s]) for s in sorted(train)], "dev": [(s, dev[s]) for s in sorted(dev)]}


def build_summary(out: AnyPath, config: Any = None, steps: Sequence[Any] = (),
                  wall_seconds: Optional[float] = None) -> dict[str, Any]:
    """Collects the per-level table from the artifacts under ``out`` (see the module docstring)."""
    from tflite.metadata import parse

    out = fileio.as_path(out)
    evaluation = _read_eval(fileio.join(out, "eval", "eval.json"))
    bench = _read_json(fileio.join(out, "bench", "bench.json"))
    transcripts = _read_json(fileio.join(out, "transcribe", "transcripts.json"))
    model_name = "model.tflite"
    model = fileio.join(out, "export", model_name)
    model_bytes = fileio.read_bytes(model)
    meta = parse(model_bytes, str(model))
    by_level = {entry.level: entry for entry in evaluation.levels}
    beam_path = fileio.join(out, "eval", "eval_beam.json")
    wants_beam = fileio.isfile(beam_path) if config is None else getattr(config, "beam", False)
    beam_by_level = {entry.level: entry for entry in _read_eval(beam_path).levels} if wants_beam else {}
    text_by_level = {int(e["level"]): e["text"] for e in transcripts["levels"]}
    beam_text_by_level = {int(e["level"]): e.get("beam_text") for e in transcripts["levels"]}
    decoder_rows = {int(r["level"]): r for r in (bench.get("decoder") or {}).get("rows", [])}
    settings = _decoder_settings(out) if wants_beam else None
    one_thread = min(bench["threads"])
    rows = []
    for entry in meta.levels:
        level = int(entry["level"])
        ev = by_level.get(level)
        timing = next((r for r in bench["rows"] if r["kind"] == "multi" and r["file"] == model_name
                       and r["level"] == level and r["threads"] == one_thread), {})
        single = next((r for r in bench["rows"] if r["kind"] == "single" and r["level"] == level
                       and r["threads"] == one_thread), {})
        rows.append({
            "level": level, "sparsity": entry["sparsity"],
            "nonzero_weights": entry["nonzero_weights"], "total_weights": entry["total_weights"],
            "relative_macs": entry.get("relative_macs"),
            "wer": None if ev is None else ev.wer, "cer": None if ev is None else ev.cer,
            "latency_ms_median": timing.get("median_ms"), "latency_ms_p90": timing.get("p90_ms"),
            "rtf": timing.get("rtf"), "latency_vs_dense_single": timing.get("ratio_to_dense_single"),
            "single_file_latency_ms_median": single.get("median_ms"),
            "transcript": text_by_level.get(level),
            "beam_wer": beam_by_level[level].wer if level in beam_by_level else None,
            "beam_cer": beam_by_level[level].cer if level in beam_by_level else None,
            "beam_transcript": beam_text_by_level.get(level),
            "decoder_ms_median": decoder_rows.get(level, {}).get("decoder_median_ms") if wants_beam else None,
            "beam": None if settings is None else _beam_summary(settings.beam_for(level)),
        })
    files = bench["files"]
    model_file = files.get(model_name, {})
    summary = {
        "format_version": FORMAT_VERSION,
        "out_dir": str(out),
        "eval_split": evaluation.split,
        # dsnn-eval decodes the Keras model; the float export matches it (checked per level at export
        # time), a quantized export does not exactly.
        "wer_source": "dsnn-eval (Keras model, float32)",
        "eval_utterances": next((e.num_utterances for e in evaluation.levels), None),
        "levels": rows,
        "model": {"path": f"export/{model_name}", "size_bytes": len(model_bytes),
                  "size_vs_dense_single": model_file.get("size_ratio_to_dense_single"),
                  "design": meta.design, "quantize": meta.quantize},
        "single_level_files": {name: info["size_bytes"] for name, info in files.items() if name != model_name},
        "latency_threads": one_thread,
        "bench_utterances": len(bench["utterances"]),
        "bench_audio_seconds": round(sum(u["seconds"] for u in bench["utterances"]), 3),
        "transcribed": {"audio": transcripts["audio"], "reference": transcripts["reference"]},
        "tensorboard": str(fileio.join(out, "run", "tensorboard")),
        "plots": {name: str(fileio.join(out, "plots", name)) for name in PLOTS},
    }
    from dsnn_keras.warm_start import read_warm_start

    summary["warm_start"] = read_warm_start(fileio.join(out, "run"))
    summary["decoder"] = None if settings is None else _decoder_summary(settings, evaluation.split, rows)
    decision = fileio.join(out, "push", "decision.json")
    wants_push = fileio.isfile(decision) if config is None else getattr(config, "push_dir", None) is not None
    summary["push"] = _read_json(decision) if wants_push else None
    if config is not None:
        summary["job"] = {"corpus": str(config.corpus), "config": str(config.config),
                          "overrides": list(config.overrides), "eval_split": config.split,
                          "warm_start": _text(getattr(config, "warm_start", None)),
                          "push_dir": _text(getattr(config, "push_dir", None)),
                          "push_tolerance": getattr(config, "push_tolerance", None),
                          "push_force": getattr(config, "push_force", None)}
    if steps:
        summary["steps"] = [{"name": s.name, "status": s.status, "seconds": round(s.seconds, 1),
                             "fingerprint": s.fingerprint[:16], "finished": s.finished} for s in steps]
    if wall_seconds is not None:
        summary["wall_seconds"] = round(wall_seconds, 1)
    return summary


def _decoder_settings(out: AnyPath):
    from dsnn_keras.beam_search import DecoderSettings

    settings = DecoderSettings.read(fileio.join(out, "decoder"))
    if settings is None:
        raise FileNotFoundError(f"{fileio.join(out, 'decoder', 'decoder.json')}: missing; the tune step has not run")
    return settings


def _beam_summary(beam) -> dict[str, Any]:
    return {"lm_weight": beam.lm_weight, "word_bonus": beam.word_bonus, "beam_width": beam.beam_width}


def _decoder_summary(settings, eval_split: str, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The tuned beam decoder's settings (``decoder/decoder.json``) and what they were tuned on.

    The top-level ``lm_weight``/``word_bonus``/``beam_width`` are the default (``beam``) ones; with
    per-level settings (``dsnn-eval --tune --tune_level all``) ``per_level`` is True and each row's
    ``beam`` names what that level decodes with.
    """
    tuned = dict(settings.tuned or {})
    per_level = len({tuple(sorted(r["beam"].items())) for r in rows if r.get("beam")}) > 1
    return {**_beam_summary(settings.beam), "lexicon": settings.beam.lexicon,
            "tuned_on": tuned.get("split"), "tuned_level": tuned.get("level"), "per_level": per_level,
            "tuned_wer": tuned.get("best_wer"), "tuned_greedy_wer": tuned.get("greedy_wer"),
            "tuned_on_eval_split": tuned.get("split") == eval_split}


def _beam_note(decoder: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    optimistic = (" — the evaluated split itself, so its beam WER is optimistic by the tuning"
                  if decoder["tuned_on_eval_split"] else "")
    lexicon = " under its lexicon" if decoder.get("lexicon", True) else ""
    if decoder.get("per_level") and all(r.get("beam") for r in rows):
        per_level = "; ".join(f"level {r['level']}: {r['beam']['lm_weight']:g} / {r['beam']['word_bonus']:g} / "
                              f"{r['beam']['beam_width']}" for r in rows)
        settings = (f"CTC beam search with the word 3-gram LM of the training transcripts{lexicon}, "
                    f"LM weight / word bonus / beam width tuned on `{decoder['tuned_on']}` per level "
                    f"({per_level}){optimistic}")
    else:
        settings = (f"CTC beam search (width {decoder['beam_width']}) with the word 3-gram LM of the training "
                    f"transcripts{lexicon}, LM weight {decoder['lm_weight']:g} and word bonus "
                    f"{decoder['word_bonus']:g} tuned on `{decoder['tuned_on']}` at level "
                    f"{decoder['tuned_level']}{optimistic}")
    return (f" Beam: {settings}; `model.tflite` carries them (`Recognizer(path, decoder=\"beam\")`). "
            "Decoder ms: the search alone, beside the model's latency.")


def _text(value: Any) -> Optional[str]:
    return None if value is None else str(value)


def _fmt(value, pattern: str, scale: float = 1.0) -> str:
    return "–" if value is None else format(value * scale, pattern)


def to_markdown(summary: dict[str, Any]) -> str:
    """The summary table (one row per level) plus the file and the transcribed utterance."""
    m = summary["model"]
    decoder = summary.get("decoder")
    beam_note = _beam_note(decoder, summary["levels"]) if decoder else ""
    lines = [f"# dsnn-job summary: {summary['out_dir']}", "",
             f"WER/CER: {summary['eval_utterances']} `{summary['eval_split']}` utterances, Keras model "
             f"(greedy CTC{'' if decoder else ', no LM'}; a float export matches it, a quantized one only "
             f"approximately).{beam_note} "
             f"Latency: median over {summary['bench_utterances']} held-out utterances "
             f"({summary['bench_audio_seconds']:.1f} s of audio), {summary['latency_threads']} thread, "
             f"one `.tflite` ({m['size_bytes'] / 1e6:.3f} MB, "
             f"{_fmt(m['size_vs_dense_single'], '.2f')}× the dense single-level file).", ""]
    if decoder:
        lines += ["| level | sparsity | nonzero weights | WER % | CER % | beam WER % | beam CER % | latency ms | "
                  "decoder ms | × dense single | RTF | transcript | beam transcript |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    else:
        lines += ["| level | sparsity | nonzero weights | WER % | CER % | latency ms | × dense single | RTF | transcript |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in summary["levels"]:
        cells = [str(r["level"]), f"{r['sparsity']:.2f}", f"{r['nonzero_weights']:,}",
                 _fmt(r["wer"], ".1f", 100), _fmt(r["cer"], ".1f", 100)]
        if decoder:
            cells += [_fmt(r.get("beam_wer"), ".1f", 100), _fmt(r.get("beam_cer"), ".1f", 100)]
        cells.append(_fmt(r["latency_ms_median"], ".2f"))
        if decoder:
            cells.append(_fmt(r.get("decoder_ms_median"), ".2f"))
        cells += [_fmt(r["latency_vs_dense_single"], ".2f"), _fmt(r["rtf"], ".4f"), repr(r["transcript"])]
        if decoder:
            cells.append(repr(r.get("beam_transcript")))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Reference of the transcribed file (`{summary['transcribed']['audio']}`): "
              f"{summary['transcribed']['reference']!r}"]
    if summary.get("warm_start"):
        warm = summary["warm_start"]
        lines += ["", f"Warm start: weights and masks from `{warm['run_dir']}` (step {warm.get('restored_step')}); "
                  "masks frozen, optimizer and step counter fresh."]
    if summary.get("push"):
        lines += ["", f"Push (`{summary['push']['push_dir']}`): {summary['push']['reason']}"]
    if summary.get("steps"):
        lines += ["", "| step | status | seconds to make |", "|---|---|---:|"]
        lines += [f"| {s['name']} | {s['status']} | {s['seconds']:.1f} |" for s in summary["steps"]]
    return "\n".join(lines) + "\n"


def plot_all(out: AnyPath, summary: dict[str, Any]) -> None:
    """Writes the three PNGs named in ``summary["plots"]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = fileio.join(out, "plots")
    fileio.makedirs(plots)
    rows = summary["levels"]
    sparsity = [r["sparsity"] for r in rows]

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for key, label in (("wer", "WER (greedy)"), ("cer", "CER (greedy)"), ("beam_wer", "WER (beam + LM)")):
        if all(r.get(key) is not None for r in rows):
            ax.plot(sparsity, [100 * r[key] for r in rows], marker="o", label=label)
    ax.set_xlabel("sparsity of the level")
    ax.set_ylabel(f"% on {summary['eval_split']}")
    ax.set_title("Error rate per level (one DSNN model)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fileio.write_png(fig, fileio.join(plots, "wer_vs_sparsity.png"), dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    width = 0.38
    xs = list(range(len(rows)))
    ax.bar([x - width / 2 for x in xs], [r["latency_ms_median"] or 0 for r in rows], width,
           label="one .tflite, level chosen at run time")
    ax.bar([x + width / 2 for x in xs], [r["single_file_latency_ms_median"] or 0 for r in rows], width,
           label="level exported alone")
    ax.set_xticks(xs, [f"{r['level']}\n({r['sparsity']:.0%})" for r in rows])
    ax.set_xlabel("level (sparsity)")
    ax.set_ylabel(f"median ms per utterance, {summary['latency_threads']} thread")
    ax.set_title("TFLite latency per level")
    tallest = max([r["latency_ms_median"] or 0 for r in rows] + [r["single_file_latency_ms_median"] or 0 for r in rows])
    ax.set_ylim(0, 1.4 * tallest if tallest > 0 else 1)   # room for the legend above the bars
    ax.legend(fontsize=8, loc="upper center", ncol=1)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fileio.write_png(fig, fileio.join(plots, "latency_per_level.png"), dpi=120)
    plt.close(fig)

    log = read_train_log(fileio.join(out, "run", "train_log.jsonl"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    levels = sorted({level for _, _, losses in log["train"] for level in losses})
    for level in levels:
        points = [(s, losses[level]) for s, _, losses in log["train"] if level in losses]
        label = f"level {level} ({rows[level]['sparsity']:.0%})" if level < len(rows) else f"level {level}"
        axes[0].plot([p[0] for p in points], [p[1] for p in points], label=label)
        dev = [(s, next((e["wer"] for e in entries if int(e["level"]) == level), None)) for s, entries in log["dev"]]
        dev = [(s, w) for s, w in dev if w is not None]
        if dev:
            axes[1].plot([p[0] for p in dev], [100 * p[1] for p in dev], marker="o", label=label)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("training CTC loss per utterance")
    axes[0].set_title("Training loss per level")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("dev WER % (trainer's periodic eval)")
    axes[1].set_title("Dev WER per level during training")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fileio.write_png(fig, fileio.join(plots, "training_curves.png"), dpi=120)
    plt.close(fig)


def write_summary(out: AnyPath, config: Any = None, steps: Sequence[Any] = (),
                  wall_seconds: Optional[float] = None) -> dict[str, Any]:
    """Builds the summary, writes ``summary.json``, ``summary.md`` and the plots; prints the table."""
    out = fileio.as_path(out)
    summary = build_summary(out, config=config, steps=steps, wall_seconds=wall_seconds)
    plot_all(out, summary)
    fileio.atomic_write(fileio.join(out, "summary.json"), json.dumps(summary, indent=1) + "\n")
    markdown = to_markdown(summary)
    fileio.atomic_write(fileio.join(out, "summary.md"), markdown)
    print(markdown, end="")
    return summary
