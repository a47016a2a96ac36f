"""Training steps/s with 1 vs N local CPU workers (MultiWorkerMirroredStrategy), same global batch.

Usage: python bench/multi_worker_scaling.py [--workers 1,2] [--steps 30] [--config configs/tiny.yaml]

Builds a small synthetic prepared dataset (tests/fixtures_data.py), then for each worker count runs
``dsnn-train`` as that many processes on localhost (``--strategy multi_worker``, one ``TF_CONFIG``
each; one worker = the default strategy, one process), every process limited to ``--threads``
TensorFlow threads, dev evaluation off. Steps/s is measured from the chief's ``train_log.jsonl``
(one record per step) between step ``--warmup`` and the last step, so process start-up and
tracing are left out. Every run trains on the same global batches (the bucketing is the same;
each worker computes its share of the rows), so the ideal speed-up with N workers on N free cores
is N. Prints one JSON object on stdout, then one line of text; progress on stderr.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from dsnn_keras.distribute import free_local_ports

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, "-c", "import sys; from dsnn_keras.cli import train_main; sys.exit(train_main())"]


def _run(workers, data, out, args):
    """Trains with ``workers`` processes; returns the chief's (step, time) of every train record."""
    command = TRAIN + ["--data", str(data), "--out", str(out), "--config", args.config,
                       "--set", f"training.total_steps={args.steps}", "--set", "training.log_every=1",
                       "--set", "training.eval_every=0", "--set", "data.dev_split=''",
                       "--set", f"training.checkpoint_every={args.steps}"]
    for item in args.overrides:
        command += ["--set", item]
    env = dict(os.environ, TF_NUM_INTRAOP_THREADS=str(args.threads), TF_NUM_INTEROP_THREADS=str(args.threads),
               OMP_NUM_THREADS=str(args.threads), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    addresses = [f"localhost:{p}" for p in free_local_ports(workers)]
    procs = []
    for index in range(workers):
        extra, worker_env = [], dict(env)
        if workers > 1:
            extra = ["--strategy", "multi_worker"]
            worker_env["TF_CONFIG"] = json.dumps({"cluster": {"worker": addresses},
                                                  "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(command + extra, env=worker_env, cwd=REPO, stdout=subprocess.DEVNULL,
                                      stderr=open(f"{out}.worker{index}.log", "w")))
    codes = [p.wait() for p in procs]
    if codes != [0] * workers:
        raise SystemExit(f"{workers} worker(s) failed with exit codes {codes}; see {out}.worker*.log")
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [(r["step"], r["time"]) for r in records if r["event"] == "train"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "tiny.yaml"), help="training config")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="config override (repeatable), as dsnn-train --set")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default: 1,2)")
    parser.add_argument("--steps", type=int, default=30, help="training steps per run (default: 30)")
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the rate (default: 5)")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads per worker (default: 1)")
    parser.add_argument("--num_train", type=int, default=64, help="synthetic training utterances (default: 64)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if not 1 <= args.warmup < args.steps:
        parser.error("--warmup must be >= 1 and < --steps")
    sys.path.insert(0, str(REPO / "tests"))
    from fixtures_data import build_prepared_dataset

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="dsnn-scaling-"))
    data = build_prepared_dataset(tmp / "data", num_train=args.num_train, num_dev=2)
    results = []
    for workers in [int(w) for w in args.workers.split(",")]:
        print(f"training with {workers} worker(s)...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        marks = dict(_run(workers, data, tmp / f"run{workers}", args))
        first, last = args.warmup, max(marks)
        rate = (last - first) / (marks[last] - marks[first])
        results.append({"workers": workers, "steps_per_s": round(rate, 3), "timed_steps": last - first,
                        "wall_s": round(time.monotonic() - t0, 1)})
        print(f"{workers} worker(s): {rate:.3f} steps/s", file=sys.stderr, flush=True)
    base = results[0]["steps_per_s"]
    for r in results:
        r["speedup"] = round(r["steps_per_s"] / base * results[0]["workers"], 3)
        r["efficiency"] = round(r["speedup"] / r["workers"], 3)
    report = {"config": args.config, "overrides": args.overrides, "steps": args.steps, "warmup": args.warmup,
              "threads_per_worker": args.threads, "num_train": args.num_train, "cpus": os.cpu_count(),
              "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()], "results": results}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")
    print("; ".join(f"{r['workers']} worker(s): {r['steps_per_s']:.3f} steps/s (speed-up {r['speedup']:.2f}x, "
                    f"efficiency {r['efficiency']:.2f})" for r in results)
          + f" on {os.cpu_count()} CPUs, load average {report['load_average_1_5_15'][0]}")


if __name__ == "__main__":
    main()
