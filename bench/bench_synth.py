"""Benchmark dsnn-synth: seconds of audio generated per second of wall time, overall and per core.

Usage::

    python bench/bench_synth.py [--num_utterances 100] [--repeats 3] [--jobs N]

Generates the same corpus ``--repeats`` times with 1 worker and with ``--jobs`` workers (default:
all cores) into temporary directories and prints medians. The corpus is byte-identical in every
run, so the runs differ only in time. Note the machine's load when reading the figures.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from pipeline.synth.corpus import SynthConfig, write_corpus


def _run(config: SynthConfig, jobs: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), os.times()
        manifest = write_corpus(config, os.path.join(tmp, "corpus"), jobs=jobs, progress=None)
        wall, c1 = time.perf_counter() - t0, os.times()
    cpu = (c1.user + c1.system + c1.children_user + c1.children_system) - (
        c0.user + c0.system + c0.children_user + c0.children_system)
    return manifest["seconds"], wall, cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_utterances", type=int, default=100, help="utterances per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting (median reported)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="workers for the parallel setting")
    args = parser.parse_args(argv)
    config = SynthConfig(num_utterances=args.num_utterances, seed=0)
    print(f"cores: {os.cpu_count()}  load average (1 min) at start: {os.getloadavg()[0]:.2f}")
    for jobs in sorted({1, args.jobs}):
        runs = [_run(config, jobs) for _ in range(args.repeats)]
        audio_s = runs[0][0]
        wall = statistics.median(r[1] for r in runs)
        cpu = statistics.median(r[2] for r in runs)
        print(f"jobs={jobs}: {args.num_utterances} utterances, {audio_s:.1f} s of audio, median wall {wall:.2f} s "
              f"-> {audio_s / wall:.1f} s of audio per second ({audio_s / wall / jobs:.1f} per core; "
              f"{audio_s / cpu:.1f} per CPU-second, CPU {cpu:.2f} s)")
    print(f"load average (1 min) at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
