"""WER of exported files on held-out clips as recorded, and with silence put before and after them.

A clip trimmed to the word (FSDD's are) is not what an app records: a recording starts before the
speech and ends after it. For each exported .tflite, each level and each ``--pad_s`` value P, every
utterance of a prepared split (audio from the corpus it was prepared from) is decoded through
``recognize(audio)`` with P seconds of silence before and after it, the silence being Gaussian
noise at the level of the clip's own quietest 10 ms (`pipeline.augment.pad_silence`, what
``dsnn-prepare --augment pad`` trains on; P = 0 is the clip as recorded). Prints Markdown,
optionally writes JSON.

Example:
    python bench/padded_wer.py --data runs/fsdd_folds/fold_0/data --split dev_fsdd \
        --audio_root ../shared/data/fsdd/recordings --tflite model.tflite --pad_s 0,0.3,1.0
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Optional, Sequence

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))   # the sibling bench script
from stream_wer import add_split_audio_arguments, load_split_audio  # noqa: E402

PAD_SEED = 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_split_audio_arguments(parser)
    parser.add_argument("--pad_s", default="0,0.3,1.0",
                        help="comma-separated seconds of silence before and after each clip (default: 0,0.3,1.0)")
    parser.add_argument("--levels", default=None, help="comma-separated level indices (default: every level)")
    parser.add_argument("--max_utterances", type=int, default=None, help="first N utterances only")
    parser.add_argument("--decoder", default="greedy", choices=("auto", "greedy", "beam"),
                        help="decoder of the runtime (default: greedy)")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="write the figures here")
    return parser


def parse_pads(text: str) -> list[float]:
    try:
        pads = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise SystemExit(f"--pad_s {text!r}: expected comma-separated seconds, e.g. 0,0.3,1.0") from None
    if not pads or any(not 0.0 <= p <= 10.0 for p in pads):
        raise SystemExit(f"--pad_s {text!r}: expected seconds in [0, 10]")
    return pads


def padded(audio: np.ndarray, pad_s: float, sample_rate: int, seed: int = PAD_SEED) -> np.ndarray:
    """``audio`` with ``pad_s`` seconds of noise at its own floor before and after (0: unchanged)."""
    from pipeline.augment import PadParams, pad_silence

    if pad_s == 0.0:
        return np.asarray(audio, np.float32)
    return pad_silence(audio, PadParams(pad_s, pad_s, seed), sample_rate)


def run(argv: Optional[Sequence[str]] = None) -> dict:
    args = build_parser().parse_args(argv)
    pads = parse_pads(args.pad_s)

    from dsnn_keras.decoding import error_rates
    from tflite.runtime import Recognizer

    references, audio, rate = load_split_audio(args.data, args.split, args.audio_root, args.max_utterances)
    report = {"split": args.split, "num_utterances": len(audio), "pad_s": pads, "decoder": args.decoder,
              "files": {}}
    for path in args.tflite:
        recognizer = Recognizer(path, decoder=args.decoder)
        levels = (range(recognizer.num_levels) if args.levels is None
                  else [int(v) for v in args.levels.split(",")])
        rows = []
        for level in levels:
            row = {"level": level, "sparsity": recognizer.metadata.sparsities[level], "wer": {}}
            for pad in pads:
                texts = [recognizer.transcribe(padded(a, pad, rate, PAD_SEED + i), level=level)
                         for i, a in enumerate(audio)]
                row["wer"][f"{pad:g}"] = error_rates(references, texts)["wer"]
                print(f"{path.name} level {level} pad {pad:g} s: WER {row['wer'][f'{pad:g}']:.4f}", file=sys.stderr)
            rows.append(row)
        report["files"][str(path)] = rows
    header = " | ".join(f"{pad:g} s WER %" for pad in pads)
    lines = [f"{len(audio)} utterances of split `{args.split}`, decoder {args.decoder}; silence (noise at each "
             "clip's own floor) put before and after each clip.", "",
             f"| file | level | sparsity | {header} |", "|---|---:|---:|" + "---:|" * len(pads)]
    for path, rows in report["files"].items():
        for row in rows:
            cells = " | ".join(f"{100 * row['wer'][f'{pad:g}']:.1f}" for pad in pads)
            lines.append(f"| {pathlib.Path(path).name} | {row['level']} | {row['sparsity']:.2f} | {cells} |")
    report["markdown"] = "\n".join(lines)
    print(report["markdown"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    run()
