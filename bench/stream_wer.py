"""WER of live streams, fixed-level and switching level mid-stream, against whole-utterance decoding.

For each exported .tflite (with the ``stream`` signature) and each utterance of a prepared split
(audio from the corpus it was prepared from): ``recognize(audio)`` per level (the whole-utterance
reference), the ``stream`` signature in 160 ms chunks per level, and streams that switch level
every ``--switch_s`` seconds of audio (``0→K-1→0…`` and the cycle ``0→1→…→K-1→0…``). Reports the
WER of each, and for each switching pattern the mean of the fixed-level WERs of the levels it
visits, weighted by the audio time spent at each (the issue's comparison). Prints Markdown,
optionally writes JSON.

Example:
    python bench/stream_wer.py --data runs/an4_causal/data --split dev \
        --audio_root ../shared/data/an4/train --tflite runs/an4_causal/export/model.tflite \
        --json docs/an4_stream_wer.json
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Optional, Sequence

import numpy as np

CHUNK_MS = 160


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_split_audio_arguments(parser)
    parser.add_argument("--switch_s", type=float, default=1.0, help="seconds between level switches (default: 1)")
    parser.add_argument("--max_utterances", type=int, default=None, help="first N utterances only")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="write the figures here")
    parser.add_argument("--decoder", default="greedy", choices=("auto", "greedy", "beam"),
                        help="decoder of the runtime (default: greedy; auto = the file's default, beam = "
                             "the LM-fused beam search the file carries)")
    return parser


def add_split_audio_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data``, ``--split``, ``--audio_root``, ``--tflite``: a prepared split's audio and the files to run."""
    parser.add_argument("--data", type=pathlib.Path, required=True, help="prepared dataset directory")
    parser.add_argument("--split", default="dev", help="split to decode (default: dev)")
    parser.add_argument("--audio_root", type=pathlib.Path, required=True,
                        help="corpus directory holding <utt_id>.flac/.wav files (searched recursively)")
    parser.add_argument("--tflite", type=pathlib.Path, nargs="+", required=True, help="exported files")


def load_split_audio(data: pathlib.Path, split: str, audio_root: pathlib.Path,
                     max_utterances: Optional[int]) -> tuple[list[str], list[np.ndarray], int]:
    """The references and audio (at the dataset's feature rate) of a prepared split's utterances."""
    from dsnn_keras.dataset import PreparedDataset
    from tflite.audio import load_audio

    dataset = PreparedDataset.from_dir(data)
    examples = list(dataset.examples(split))[:max_utterances]
    index = {p.stem: p for p in audio_root.rglob("*") if p.suffix.lower() in (".flac", ".wav")}
    missing = [ex["utt_id"] for ex in examples if ex["utt_id"] not in index]
    if missing:
        raise SystemExit(f"--audio_root {audio_root}: no audio for {len(missing)} utterances, e.g. {missing[:3]}")
    rate = dataset.feature_config.sample_rate
    return [ex["transcript"] for ex in examples], [load_audio(index[ex["utt_id"]], rate) for ex in examples], rate


def level_schedule(pattern: str, num_levels: int, period: int) -> list[int]:
    """Levels of consecutive switching periods: ``flip`` = 0, K-1, 0, ...; ``cycle`` = 0, 1, ..., K-1, 0, ..."""
    if pattern == "flip":
        return [0 if p % 2 == 0 else num_levels - 1 for p in range(period)]
    return [p % num_levels for p in range(period)]


def stream_utterance(recognizer, audio: np.ndarray, chunk: int, levels_by_period: Optional[Sequence[int]],
                     period_samples: int, level: int = 0) -> tuple[str, list[int]]:
    """Streams ``audio``; returns the text and the samples spent at each level."""
    stream = recognizer.stream(level=level)
    spent = [0] * recognizer.num_levels
    for start in range(0, len(audio), chunk):
        if levels_by_period is not None:
            stream.set_level(levels_by_period[start // period_samples])
        piece = audio[start:start + chunk]
        spent[stream.level] += len(piece)
        stream.accept(piece)
    return stream.finish(), spent


def run(argv: Optional[list[str]] = None) -> dict:
    args = build_parser().parse_args(argv)
    if not args.switch_s > 0:
        raise SystemExit(f"--switch_s must be > 0, got {args.switch_s}")

    from dsnn_keras.decoding import error_rates
    from tflite.runtime import Recognizer

    references, audio, rate = load_split_audio(args.data, args.split, args.audio_root, args.max_utterances)
    chunk = rate * CHUNK_MS // 1000
    period = max(int(args.switch_s * rate), 1)
    report = {"split": args.split, "num_utterances": len(audio), "chunk_ms": CHUNK_MS,
              "switch_s": args.switch_s, "decoder": args.decoder, "files": {}}
    for path in args.tflite:
        recognizer = Recognizer(path, decoder=args.decoder)
        k = recognizer.num_levels
        entry = {"levels": [], "switching": []}
        for level in range(k):
            whole = [recognizer.transcribe(a, level=level) for a in audio]
            streamed = [stream_utterance(recognizer, a, chunk, None, period, level)[0] for a in audio]
            entry["levels"].append({"level": level, "sparsity": recognizer.metadata.sparsities[level],
                                    "whole_wer": error_rates(references, whole)["wer"],
                                    "stream_wer": error_rates(references, streamed)["wer"],
                                    "stream_equals_whole": sum(s == w for s, w in zip(streamed, whole)) / len(audio)})
            print(f"{path.name} level {level}: whole {entry['levels'][-1]['whole_wer']:.4f} "
                  f"stream {entry['levels'][-1]['stream_wer']:.4f}", file=sys.stderr)
        fixed = [row["stream_wer"] for row in entry["levels"]]
        for pattern in ("flip", "cycle"):
            texts, spent = [], np.zeros(k)
            for a in audio:
                schedule = level_schedule(pattern, k, len(a) // period + 1)
                text, used = stream_utterance(recognizer, a, chunk, schedule, period)
                texts.append(text)
                spent += used
            share = spent / spent.sum()
            expected = float(np.dot(share, fixed))
            wer = error_rates(references, texts)["wer"]
            entry["switching"].append({"pattern": pattern, "wer": wer, "time_share": share.round(4).tolist(),
                                       "mean_fixed_wer_of_visited_levels": expected,
                                       "difference_points": 100 * (wer - expected)})
            print(f"{path.name} switching {pattern}: {wer:.4f} vs {expected:.4f}", file=sys.stderr)
        report["files"][str(path)] = entry
    lines = [f"{len(audio)} utterances of split `{args.split}`, {CHUNK_MS} ms chunks, level switched every "
             f"{args.switch_s:g} s of audio.", "",
             "| file | level | sparsity | recognize WER % | stream WER % | stream text = recognize text |",
             "|---|---:|---:|---:|---:|---:|"]
    for path, entry in report["files"].items():
        for row in entry["levels"]:
            lines.append(f"| {pathlib.Path(path).name} | {row['level']} | {row['sparsity']:.2f} | "
                         f"{100 * row['whole_wer']:.2f} | {100 * row['stream_wer']:.2f} | "
                         f"{100 * row['stream_equals_whole']:.1f} % |")
    lines += ["", "| file | switching | WER % | time-weighted mean of the visited levels' WER % | Δ points |",
              "|---|---|---:|---:|---:|"]
    for path, entry in report["files"].items():
        for row in entry["switching"]:
            name = "0→K-1→0…" if row["pattern"] == "flip" else "0→1→…→K-1→0…"
            lines.append(f"| {pathlib.Path(path).name} | {name} | {100 * row['wer']:.2f} | "
                         f"{100 * row['mean_fixed_wer_of_visited_levels']:.2f} | {row['difference_points']:+.2f} |")
    report["markdown"] = "\n".join(lines)
    print(report["markdown"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main() -> None:
    run()


if __name__ == "__main__":
    main()
