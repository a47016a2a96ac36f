"""Benchmark the ``stream`` signature: per level and chunk size, what a live app pays per chunk.

For every level and chunk length (80 / 160 / 320 ms by default), each utterance is streamed
through one interpreter with explicit state, chunks in order (levels and chunk sizes interleaved
round-robin over repeats so load on a shared machine hits them alike). Reported per row:

* ``chunk_median_ms`` / ``chunk_p90_ms``: compute per chunk;
* ``rtf``: total compute / audio duration;
* ``token_latency_median_ms`` / ``_p90_ms``: from the moment the audio a token depends on has
  arrived to the token's emission (the end of the chunk that emits it plus that chunk's compute).
  When the audio an encoder frame depends on has arrived is measured, not assumed: each utterance
  is streamed once one hop at a time, recording the samples received when each frame appears.
  The token's frame is its CTC spike, the nearest observable proxy for the end of the spoken word;
* ``peak_rss_mb``: peak resident memory of a fresh process streaming 160 ms chunks at that level.

Writes ``bench_stream.json``, ``bench_stream.md`` and ``bench_stream.png``, each complete or absent.
No TensorFlow for local paths; the model, the utterances and the output directory may be URLs
`tf.io.gfile` reaches (``gs://...``: a remote model is copied to a private local temporary first,
as in `tflite.bench`).

Example:
    >>> result = run_stream_benchmark("model.tflite", utterances=None, out_dir="bench_stream")
    >>> result["rows"][0]["rtf"]
    0.021
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time
from typing import Optional, Sequence

import numpy as np

from dsnn_keras import fileio
from dsnn_keras.errors import DsnnError
from tflite.runtime import load_interpreter, zero_stream_state


class StreamBenchError(DsnnError, ValueError):
    """The file cannot be stream-benchmarked (no ``stream`` signature) or a bad argument."""

DEFAULT_CHUNK_MS = (80, 160, 320)


def stream_once(runner, audio: np.ndarray, chunk: int, level: int) -> dict:
    """Streams ``audio`` in chunks of ``chunk`` samples; per chunk its compute seconds, frames, tokens."""
    state = zero_stream_state(runner)
    seconds, frames, tokens, ends, best = [], [], [], [], []
    starts = list(range(0, max(len(audio), 1), chunk)) or [0]
    for i, start in enumerate(starts):
        end = i == len(starts) - 1
        piece = audio[start:start + chunk]
        began = time.perf_counter()
        out = runner(audio=piece, sparsity_level=np.int32(level), end_of_stream=np.int32(end), **state)
        seconds.append(time.perf_counter() - began)
        frames.append(int(out["log_probs"].shape[0]))
        tokens.append(out["tokens"].tolist())
        best.append(np.argmax(out["log_probs"], axis=-1) if out["log_probs"].shape[0] else np.zeros([0], int))
        ends.append(min(start + chunk, len(audio)))
        state = {name: out[name] for name in state}
    return {"seconds": seconds, "frames": frames, "tokens": tokens, "ends": ends, "best": best}


def frame_ready_samples(runner, audio: np.ndarray, hop: int) -> list[int]:
    """For each encoder frame, the samples received when it first appears (streaming one hop at a time)."""
    run = stream_once(runner, audio, hop, 0)
    ready = []
    for count, end in zip(run["frames"], run["ends"]):
        ready += [end] * count
    return ready


def _token_latencies(run: dict, ready: list[int], sample_rate: int, blank_id: int) -> list[float]:
    """Seconds from the arrival of the audio each token's frame needs to the token's emission.

    A token's frame is where greedy CTC emits it (its spike: the best class, not blank, differing
    from the frame before).
    """
    latencies, frame, previous = [], 0, -1
    for seconds, best, end in zip(run["seconds"], run["best"], run["ends"]):
        for label in best:
            if label != blank_id and label != previous:
                latencies.append((end - ready[min(frame, len(ready) - 1)]) / sample_rate + seconds)
            previous = label
            frame += 1
    return latencies


_MEMORY_PROBE = """
import json, sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
def high_water_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
path, level, rate, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
audio = np.random.default_rng(0).standard_normal(int(rate * seconds)).astype(np.float32) * 0.1
before = high_water_mb()
runner = Interpreter(model_path=path, num_threads=1).get_signature_runner("stream")
state = {n: np.zeros([int(d) for d in v["shape_signature"]], v["dtype"])
         for n, v in runner.get_input_details().items() if n.startswith("state_")}
chunk = rate * 160 // 1000
for start in range(0, len(audio), chunk):
    out = runner(audio=audio[start:start + chunk], sparsity_level=np.int32(level),
                 end_of_stream=np.int32(start + chunk >= len(audio)), **state)
    state = {n: out[n] for n in state}
print(json.dumps({"baseline_rss_mb": before, "peak_rss_mb": high_water_mb()}))
"""


def measure_stream_memory(path: pathlib.Path, level: int, sample_rate: int, seconds: float = 5.0) -> dict:
    """Peak RSS of a fresh process streaming ``seconds`` of audio at ``level`` in 160 ms chunks."""
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(path), str(level), str(sample_rate),
                          str(seconds)], capture_output=True, text=True)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise StreamBenchError(f"{path}: the streaming memory probe failed (exit {out.returncode}: {last})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_stream_benchmark(model_path, utterances: Optional[Sequence[str]] = None,
                         chunk_ms: Sequence[int] = DEFAULT_CHUNK_MS, repeats: int = 3, limit: int = 8,
                         memory: bool = True) -> dict:
    """Times the ``stream`` signature per level and chunk length (1 thread).

    Args:
        model_path: A .tflite with a ``stream`` signature (local, or a ``gs://``-style URL).
        utterances: Audio files or directories (first ``limit`` files); synthetic clips if None.
        chunk_ms: Chunk lengths to time. Defaults to 80, 160 and 320 ms.
        repeats: Passes over the utterances. Defaults to 3.
        limit: Most utterances used. Defaults to 8.
        memory: Measure peak memory per level in a subprocess. Defaults to True.

    Returns:
        ``{"model", "utterances", "repeats", "rows": [...]}`` (fields in the module docstring).

    Raises:
        StreamBenchError: the file has no ``stream`` signature, or a bad argument.
    """
    from tflite.bench import local_models

    with local_models([model_path]) as local:
        result = _run_stream_benchmark(local[str(model_path)], utterances, chunk_ms, repeats, limit, memory)
    result["model"] = str(fileio.as_path(model_path))   # the path or URL given, not a temporary copy
    return result


def _run_stream_benchmark(model_path: pathlib.Path, utterances, chunk_ms, repeats, limit, memory) -> dict:
    from tflite.bench import collect_utterances
    from tflite.metadata import read_metadata

    meta = read_metadata(model_path)
    interpreter = load_interpreter(model_path, 1)
    if "stream" not in interpreter.get_signature_list():
        raise StreamBenchError(f"{model_path}: no 'stream' signature; export a causal model to stream")
    if repeats < 1 or not chunk_ms or min(chunk_ms) <= 0:
        raise StreamBenchError("repeats must be >= 1 and every chunk length > 0 ms")
    runner = interpreter.get_signature_runner("stream")
    rate = meta.sample_rate
    clips = collect_utterances(utterances, rate, limit)
    ready = [frame_ready_samples(runner, audio, meta.frame_step) for _, audio in clips]
    keys = [(level, ms) for level in range(meta.num_levels) for ms in chunk_ms]
    per_chunk = {key: [] for key in keys}
    compute = {key: 0.0 for key in keys}
    latency = {key: [] for key in keys}
    order = np.random.default_rng(0)
    stream_once(runner, clips[0][1], rate * chunk_ms[0] // 1000, 0)   # warm-up
    for _ in range(repeats):
        for u, (_, audio) in enumerate(clips):
            for index in order.permutation(len(keys)):
                level, ms = keys[index]
                run = stream_once(runner, audio, rate * ms // 1000, level)
                per_chunk[(level, ms)] += run["seconds"]
                compute[(level, ms)] += sum(run["seconds"])
                latency[(level, ms)] += _token_latencies(run, ready[u], rate, meta.blank_id)
    audio_seconds = repeats * sum(len(audio) for _, audio in clips) / rate
    rows = []
    for level, ms in keys:
        times = np.asarray(per_chunk[(level, ms)]) * 1000
        tokens = np.asarray(latency[(level, ms)]) * 1000
        rows.append({"level": level, "sparsity": meta.sparsities[level], "chunk_ms": ms,
                     "chunk_median_ms": float(np.median(times)), "chunk_p90_ms": float(np.percentile(times, 90)),
                     "rtf": compute[(level, ms)] / audio_seconds,
                     "token_latency_median_ms": float(np.median(tokens)) if tokens.size else None,
                     "token_latency_p90_ms": float(np.percentile(tokens, 90)) if tokens.size else None,
                     "tokens": int(tokens.size)})
    dense = {r["chunk_ms"]: r["chunk_median_ms"] for r in rows if r["level"] == 0}
    for r in rows:
        r["ratio_to_level0"] = r["chunk_median_ms"] / dense[r["chunk_ms"]]
    if memory:
        peaks = {level: measure_stream_memory(model_path, level, rate) for level in range(meta.num_levels)}
        for r in rows:
            r["peak_rss_mb"] = peaks[r["level"]]["peak_rss_mb"]
    return {"model": str(model_path), "threads": 1, "repeats": repeats,
            "utterances": [{"name": name, "seconds": len(audio) / rate} for name, audio in clips], "rows": rows}


def to_markdown(result: dict) -> str:
    """The table of `run_stream_benchmark`'s rows."""
    lines = [f"# dsnn-bench --stream: {fileio.name(result['model'])}", "",
             f"{len(result['utterances'])} utterances ({sum(u['seconds'] for u in result['utterances']):.1f} s), "
             f"{result['repeats']} repeats, 1 thread, levels and chunk sizes interleaved; median / p90 over "
             "chunks; token latency: from the arrival of the audio a token's frame needs to its emission.", "",
             "| level | sparsity | chunk ms | median ms / chunk | p90 ms | RTF | × level 0 | token latency median ms | p90 ms | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        def fmt(value, spec=".1f"):
            return "–" if value is None else format(value, spec)
        lines.append(f"| {r['level']} | {r['sparsity']:.2f} | {r['chunk_ms']} | {r['chunk_median_ms']:.3f} | "
                     f"{r['chunk_p90_ms']:.3f} | {r['rtf']:.4f} | {r['ratio_to_level0']:.2f} | "
                     f"{fmt(r['token_latency_median_ms'])} | {fmt(r['token_latency_p90_ms'])} | "
                     f"{fmt(r.get('peak_rss_mb'))} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path) -> None:
    """Median compute per chunk against sparsity, one line per chunk length (written complete or not at all)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for ms in sorted({r["chunk_ms"] for r in result["rows"]}):
        rows = sorted((r for r in result["rows"] if r["chunk_ms"] == ms), key=lambda r: r["sparsity"])
        ax.plot([r["sparsity"] for r in rows], [r["chunk_median_ms"] for r in rows], marker="o", label=f"{ms} ms chunks")
    ax.set_xlabel("sparsity of the level")
    ax.set_ylabel("median compute per chunk (ms)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fileio.write_png(fig, path, dpi=120)
    plt.close(fig)


def write_reports(result: dict, out_dir) -> None:
    """Writes bench_stream.json, .md and .png into ``out_dir`` (local or a URL), each complete or absent."""
    fileio.makedirs(out_dir)
    fileio.atomic_write(fileio.join(out_dir, "bench_stream.json"), json.dumps(result, indent=2) + "\n")
    fileio.atomic_write(fileio.join(out_dir, "bench_stream.md"), to_markdown(result))
    plot(result, fileio.join(out_dir, "bench_stream.png"))
