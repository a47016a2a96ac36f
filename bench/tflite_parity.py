"""Parity of exported .tflite files with the Keras model, per level, on real utterances.

For every level of a trained run and every given .tflite file, runs the same prepared utterances
(features from the dataset, through the file's ``recognize_features`` signature) and reports:
max |Δ log-posterior| against Keras at that level, the fraction of utterances with identical greedy
tokens, and the WER of each side against the references (so a quantized file's WER can be compared
with Keras's). With ``--audio_root`` (the corpus the dataset was prepared from), each utterance's
audio file also goes through the file's ``recognize(audio)`` signature, the path an app uses
(in-graph frontend included): its WER and its max |Δ| from ``recognize_features`` are reported too.
Prints a Markdown table and optionally writes JSON.

Example:
    python bench/tflite_parity.py runs/an4/dsnn --data runs/an4/data --split dev \
        --tflite model.tflite model_int8.tflite --json parity.json \
        --audio_root ../shared/data/an4/train
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Optional


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=pathlib.Path, help="dsnn-train run directory")
    parser.add_argument("--data", type=pathlib.Path, required=True, help="prepared dataset directory")
    parser.add_argument("--split", default="dev", help="split to decode (default: dev)")
    parser.add_argument("--tflite", type=pathlib.Path, nargs="+", required=True,
                        help="exported .tflite files to compare with Keras")
    parser.add_argument("--max_utterances", type=int, default=None,
                        help="decode only the first N utterances (default: all)")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="write the figures here")
    parser.add_argument("--audio_root", type=pathlib.Path, default=None,
                        help="corpus directory holding <utt_id>.flac/.wav files (searched recursively): "
                             "also decode each utterance's audio through recognize(audio)")
    return parser


def run(argv: Optional[list[str]] = None) -> dict:
    args = build_parser().parse_args(argv)

    import numpy as np
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    import dsnn_keras
    from dsnn_keras.dataset import PreparedDataset
    from dsnn_keras.decoding import error_rates, greedy_ctc_decode, ids_to_text
    from dsnn_keras.run_dir import load_run

    trained = load_run(args.run_dir)
    dataset = PreparedDataset.from_dir(args.data)
    examples = []
    for i, ex in enumerate(dataset.examples(args.split)):
        if args.max_utterances is not None and i >= args.max_utterances:
            break
        examples.append(ex)
    references = [ex["transcript"] for ex in examples]
    audio = None
    if args.audio_root is not None:
        from tflite.audio import load_audio

        index = {p.stem: p for p in args.audio_root.rglob("*") if p.suffix.lower() in (".flac", ".wav")}
        missing = [ex["utt_id"] for ex in examples if ex["utt_id"] not in index]
        if missing:
            raise SystemExit(f"--audio_root {args.audio_root}: no audio file for {len(missing)} utterance(s), "
                             f"e.g. {missing[:3]}")
        audio = [load_audio(index[ex["utt_id"]], dataset.feature_config.sample_rate) for ex in examples]

    @tf.function(input_signature=[tf.TensorSpec([1, None, dataset.feature_config.num_mel_bins], tf.float32),
                                  tf.TensorSpec([], tf.int32)])
    def keras_log_probs(features, level):
        with dsnn_keras.sparsity_level_scope(trained.model, level):
            return tf.nn.log_softmax(trained.model(features, training=False))

    interpreters = {}
    for path in args.tflite:
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        interpreters[path] = (interpreter.get_signature_runner("recognize_features"),
                              interpreter.get_signature_runner("recognize"))

    report = {"run_dir": str(args.run_dir), "split": args.split, "num_utterances": len(examples), "files": {}}
    keras_wer = {}
    for level in range(len(trained.levels)):
        keras_out = [keras_log_probs(ex["features"][None], np.int32(level)).numpy()[0] for ex in examples]
        keras_tokens = [greedy_ctc_decode(lp[None], [len(lp)], trained.blank_id)[0] for lp in keras_out]
        keras_wer[level] = error_rates(references, [ids_to_text(t, trained.pieces) for t in keras_tokens])["wer"]
        for path, (runner, audio_runner) in interpreters.items():
            max_delta, same, hyps = 0.0, 0, []
            audio_delta, audio_hyps = 0.0, []
            for i, (ex, lp, kt) in enumerate(zip(examples, keras_out, keras_tokens)):
                out = runner(features=ex["features"].astype(np.float32), sparsity_level=np.int32(level))
                tl = np.asarray(out["log_probs"])
                max_delta = max(max_delta, float(np.max(np.abs(tl - lp))))
                tokens = [int(t) for t in out["tokens"]]
                same += tokens == list(kt)
                hyps.append(ids_to_text(tokens, trained.pieces))
                if audio is not None:
                    via_audio = audio_runner(audio=audio[i], sparsity_level=np.int32(level))
                    al = np.asarray(via_audio["log_probs"])
                    audio_delta = max(audio_delta, float(np.max(np.abs(al - tl))) if al.shape == tl.shape
                                      else float("inf"))
                    audio_hyps.append(ids_to_text([int(t) for t in via_audio["tokens"]], trained.pieces))
            entry = report["files"].setdefault(str(path), {"levels": []})
            row = {"level": level, "sparsity": float(trained.levels[level]),
                   "max_abs_log_prob_delta": max_delta, "identical_tokens": same / max(len(examples), 1),
                   "tflite_wer": error_rates(references, hyps)["wer"], "keras_wer": keras_wer[level]}
            if audio is not None:
                row["audio_wer"] = error_rates(references, audio_hyps)["wer"]
                row["audio_vs_features_max_abs_delta"] = audio_delta
            entry["levels"].append(row)
            print(f"{path.name} level {level}: max|Δ|={max_delta:.2e} identical={same}/{len(examples)}",
                  file=sys.stderr)

    with_audio = audio is not None
    lines = ["| file | level | sparsity | max abs Δ log-posterior | identical greedy tokens | "
             "Keras WER % | TFLite WER % | Δ WER (points) |"
             + (" recognize(audio) WER % | audio vs features max abs Δ |" if with_audio else ""),
             "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if with_audio else "")]
    for path, entry in report["files"].items():
        for row in entry["levels"]:
            lines.append(
                f"| {pathlib.Path(path).name} | {row['level']} | {row['sparsity']:.2f} | "
                f"{row['max_abs_log_prob_delta']:.2e} | {100 * row['identical_tokens']:.1f} % | "
                f"{100 * row['keras_wer']:.2f} | {100 * row['tflite_wer']:.2f} | "
                f"{100 * (row['tflite_wer'] - row['keras_wer']):+.2f} |"
                + (f" {100 * row['audio_wer']:.2f} | {row['audio_vs_features_max_abs_delta']:.2e} |"
                   if with_audio else ""))
    report["markdown"] = "\n".join(lines)
    print(report["markdown"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


def main() -> None:
    run()


if __name__ == "__main__":
    main()
