"""What the in-graph log-mel frontend costs next to each level of a sliced `.tflite` (issue 16).

Times, on one LiteRT interpreter each, 1 thread: the float32 frontend alone (`tflite.export.
frontend_tflite`) for several FeatureConfigs, and a multi-level file's `recognize_features` per
level, on the same clips (AN4 utterances). Interleaved rounds, medians. Prints a Markdown table and
the end-to-end ratio each frontend would give each level (frontend + model) / (default frontend +
dense level) — a projection: a model trained on other features would differ in accuracy.

Example:
    python bench/frontend_cost.py runs/an4_unit/export/unit_float.tflite --audio_dir ../shared/data/an4/train
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import statistics
import time

import numpy as np

VARIANTS = {
    "default (512-pt FFT, 25 ms, 80 mel)": {},
    "256-pt FFT, 16 ms window, 80 mel": {"fft_length": 256, "frame_length_ms": 16.0},
    "512-pt FFT, 25 ms, 40 mel": {"num_mel_bins": 40},
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=pathlib.Path)
    parser.add_argument("--audio_dir", type=pathlib.Path, required=True)
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)

    from ai_edge_litert.interpreter import Interpreter

    from dsnn_keras.frontend import FeatureConfig, log_mel_spectrogram
    from tflite.audio import load_audio
    from tflite.export import frontend_tflite
    from tflite.metadata import read_metadata

    meta = read_metadata(args.model)
    config = FeatureConfig.from_dict(meta.feature_config)
    files = sorted(args.audio_dir.rglob("*.flac"))[:: max(1, len(sorted(args.audio_dir.rglob("*.flac"))) // args.clips)]
    clips = [load_audio(f, config.sample_rate) for f in files[: args.clips]]
    features = [log_mel_spectrogram(__import__("tensorflow").constant(c), config).numpy() for c in clips]

    frontends = {}
    for name, change in VARIANTS.items():
        variant = dataclasses.replace(config, **change)
        interpreter = Interpreter(model_content=frontend_tflite(variant), num_threads=1)
        frontends[name] = interpreter
    model = Interpreter(model_path=str(args.model), num_threads=1)
    runner = model.get_signature_runner("recognize_features")
    levels = list(range(len(meta.levels)))

    def run_frontend(interpreter, audio):
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, [audio.shape[0]])
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, audio)
        interpreter.invoke()

    times: dict[str, list[float]] = {key: [] for key in list(frontends) + [f"level {i}" for i in levels]}
    for _ in range(args.rounds):
        for audio, feats in zip(clips, features):
            for name, interpreter in frontends.items():
                start = time.perf_counter()
                run_frontend(interpreter, audio)
                times[name].append(time.perf_counter() - start)
            for level in levels:
                start = time.perf_counter()
                runner(features=feats, sparsity_level=np.array(level, np.int32))
                times[f"level {level}"].append(time.perf_counter() - start)
    ms = {key: 1000 * statistics.median(values) for key, values in times.items()}
    seconds = sum(len(c) for c in clips) / config.sample_rate
    print(f"{len(clips)} AN4 clips ({seconds:.1f} s of audio) x {args.rounds} rounds, 1 thread, median ms per clip\n")
    print("| part | ms |\n|---|---:|")
    for key, value in ms.items():
        print(f"| {key} | {value:.2f} |")
    default = next(iter(VARIANTS))
    dense = ms[default] + ms["level 0"]
    print("\n| frontend | " + " | ".join(f"level {i} ({meta.levels[i]['sparsity']:.0%})" for i in levels) + " |")
    print("|---|" + "---:|" * len(levels))
    for name in VARIANTS:
        print(f"| {name} | " + " | ".join(f"{(ms[name] + ms[f'level {i}']) / dense:.2f}×" for i in levels) + " |")
    print("| none (app computes features) | " + " | ".join(f"{ms[f'level {i}'] / ms['level 0']:.2f}×" for i in levels) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
