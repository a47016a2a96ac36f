"""Throughput of feature preparation, in seconds of audio per second of wall time.

Measures, on one corpus (default: the whole AN4 training set):
  (a) the frontend alone (pre-decoded audio, traced tf.function),
  (b) a bare Python loop doing the same work as the pipeline: tokenizer training, decode + resample +
      features + tokenize + tf.train.Example + TFRecord write, and the CMVN statistics (written to
      cmvn.json); it reuses the featurizer traced before timing (Beam traces its own in DoFn.setup),
  (c) the Beam pipeline (`dsnn-prepare`) on the in-process runner,
  (d) the Beam pipeline with --direct_running_mode=multi_processing --direct_num_workers=2,
and prints the ratio Beam / bare loop (goal >= 0.7). Beam's wall time includes pipeline
construction, the tokenizer and CMVN; (d) includes starting the worker processes.

Each figure is printed twice: per second of wall time (the goal's measure) and per CPU second of
this process and its reaped children (``time.process_time`` + ``RUSAGE_CHILDREN``). On a shared,
oversubscribed machine the wall figures mostly measure the other jobs; the CPU figures measure the
work done and stay comparable between runs.

Usage:
    .venv/bin/python bench/bench_prepare.py [--data ../shared/data/an4] [--repeats 1]
"""
from __future__ import annotations

import argparse
import os
import resource
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

    import json

    from pipeline.audio import load_audio
    from pipeline.cmvn import CmvnCombineFn
    from pipeline.examples import make_example
    from pipeline.text import normalize_transcript
    from pipeline.tokenizer import load_tokenizer, train_tokenizer

    start = time.perf_counter()
    texts = [normalize_transcript(u.transcript) for u in utts]
    sp = load_tokenizer(train_tokenizer(texts, 128))
    cmvn = CmvnCombineFn()
    stats = cmvn.create_accumulator()
    with tf.io.TFRecordWriter(out_path) as writer:
        for u, text in zip(utts, texts):
            feats = featurizer(load_audio(u.path))
            stats = cmvn.add_input(stats, feats)
            writer.write(make_example(u.utt_id, u.speaker, text, feats, sp.encode(text)))
    with open(out_path + ".cmvn.json", "w") as f:
        json.dump(cmvn.extract_output(stats).to_dict(), f)
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

    results, cpu_results = {}, {}

    def cpu_seconds() -> float:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    def measure(name, fn):
        times, cpus = [], []
        for _ in range(args.repeats):
            cpu = cpu_seconds()
            times.append(fn())
            cpus.append(cpu_seconds() - cpu)
        results[name] = audio_s / statistics.median(times)
        cpu_results[name] = audio_s / statistics.median(cpus)
        print(f"{name:<34} {results[name]:8.0f} s/s wall  {cpu_results[name]:6.0f} s/CPU-s   "
              f"(median of {len(times)}: {statistics.median(times):.2f} s wall, "
              f"{statistics.median(cpus):.2f} CPU-s; load {os.getloadavg()[0]:.2f})", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        measure("(a) frontend alone", lambda: bench_frontend(waves, featurizer))
        measure("(b) bare decode+features+write", lambda: bench_bare_loop(
            utts, featurizer, os.path.join(tmp, "bare.tfrecord")))
    measure("(c) Beam in-process", lambda: bench_beam(args.data, []))
    if not args.skip_multiprocess:
        measure("(d) Beam multi_processing x2", lambda: bench_beam(
            args.data, ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]))
    bare = "(b) bare decode+features+write"
    for name, label in (("(c) Beam in-process", "in-process"), ("(d) Beam multi_processing x2", "multi_processing")):
        if name in results:
            goal = " (goal >= 0.7)" if name.startswith("(c)") else ""
            print(f"ratio Beam {label} / bare loop: {results[name] / results[bare]:.2f} wall, "
                  f"{cpu_results[name] / cpu_results[bare]:.2f} CPU{goal}")
    print(f"load average after: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
