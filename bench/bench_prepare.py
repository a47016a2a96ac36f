"""Throughput of feature preparation, in seconds of audio per second of wall time.

Measures, on one corpus (default: the whole AN4 training set):
  (a) the frontend alone (pre-decoded audio, traced tf.function),
  (b) a bare Python loop: decode + resample + features + tokenize + tf.train.Example + TFRecord write,
  (c) the Beam pipeline (`dsnn-prepare`) on the in-process runner,
  (d) the Beam pipeline with --direct_running_mode=multi_processing --direct_num_workers=2,
and prints the ratio Beam / bare loop (goal >= 0.7). Beam's wall time includes pipeline
construction, the tokenizer and CMVN; (d) includes starting the worker processes.

Usage:
    .venv/bin/python bench/bench_prepare.py [--data ../shared/data/an4] [--repeats 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _utterances(root: str):
    from pipeline.sources import InputSpec, read_source

    return [u for u in read_source(InputSpec("train", root, "librispeech"))]


def bench_frontend(waves, featurizer) -> float:
    start = time.perf_counter()
    for w in waves:
        featurizer(w)
    return time.perf_counter() - start


def bench_bare_loop(utts, featurizer, out_path: str) -> float:
    import tensorflow as tf

    from pipeline.audio import load_audio
    from pipeline.examples import make_example
    from pipeline.text import normalize_transcript
    from pipeline.tokenizer import load_tokenizer, train_tokenizer

    start = time.perf_counter()
    texts = [normalize_transcript(u.transcript) for u in utts]
    sp = load_tokenizer(train_tokenizer(texts, 128))
    with tf.io.TFRecordWriter(out_path) as writer:
        for u, text in zip(utts, texts):
            feats = featurizer(load_audio(u.path))
            writer.write(make_example(u.utt_id, u.speaker, text, feats, sp.encode(text)))
    return time.perf_counter() - start


def bench_beam(root: str, extra: list[str]) -> float:
    from pipeline.prepare import run

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run(["--input", root, "--out", os.path.join(tmp, "out"), "--progress_every", "1e9", *extra])
        return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--data", default=os.path.join(here, "..", "..", "shared", "data", "an4"),
                        help="LibriSpeech-layout corpus (default: ../shared/data/an4)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per measurement (median reported)")
    parser.add_argument("--skip_multiprocess", action="store_true", help="skip (d)")
    args = parser.parse_args(argv)

    from pipeline.audio import load_audio
    from pipeline.featurize import Featurizer

    utts = _utterances(args.data)
    waves = [load_audio(u.path) for u in utts]
    audio_s = sum(w.size for w in waves) / 16000.0
    featurizer = Featurizer()
    featurizer(waves[0])  # trace once
    print(f"corpus: {args.data}: {len(utts)} utterances, {audio_s:.0f} s of audio; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", file=sys.stderr)

    results = {}

    def measure(name, fn):
        times = [fn() for _ in range(args.repeats)]
        results[name] = audio_s / statistics.median(times)
        print(f"{name:<34} {results[name]:8.0f} s/s   (median of {len(times)}: "
              f"{statistics.median(times):.2f} s)", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        measure("(a) frontend alone", lambda: bench_frontend(waves, featurizer))
        measure("(b) bare decode+features+write", lambda: bench_bare_loop(
            utts, featurizer, os.path.join(tmp, "bare.tfrecord")))
    measure("(c) Beam in-process", lambda: bench_beam(args.data, []))
    if not args.skip_multiprocess:
        measure("(d) Beam multi_processing x2", lambda: bench_beam(
            args.data, ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]))
    print(f"ratio Beam in-process / bare loop: {results['(c) Beam in-process'] / results['(b) bare decode+features+write']:.2f} (goal >= 0.7)")
    if "(d) Beam multi_processing x2" in results:
        print(f"ratio Beam multi_processing / bare loop: "
              f"{results['(d) Beam multi_processing x2'] / results['(b) bare decode+features+write']:.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
