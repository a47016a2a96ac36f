#!/usr/bin/env python3
"""The paper's comparison on AN4: one DSNN model against four individually trained models.

Stages (each step is a ``dsnn-job`` artifact, `dsnn_job.artifacts.run_step`: fingerprinted from its
parameters and inputs, skipped when up to date, made again, with everything after it, when they
change; re-running the same command resumes):

1. ``prepare``: ``dsnn-prepare`` on AN4's training speakers, 10 of them held out as ``dev``
   (chosen deterministically: every 7th speaker of the sorted list, see `pick_dev_speakers`), into
   ``OUT_DIR/data``.
2. ``train``: six ``dsnn-train`` runs from one base config (default ``configs/an4.yaml``), same
   architecture and step budget: ``dsnn`` (levels 0/0.5/0.7/0.9, in-place distillation),
   ``dsnn_nodistill`` (distillation weight 0), and ``single_00`` … ``single_90`` (``mode: single``
   at each sparsity), two at a time by default (``--jobs``), each resumable in ``OUT_DIR/runs/NAME``.
   The CPU time (user + system of each training process, from ``os.wait4``) and wall time of each
   training process are recorded in ``RUN_DIR/train_time.json``.
3. ``eval``: ``dsnn-eval RUN_DIR --data DATA --split dev`` for each run (``RUN_DIR/eval.json``, the
   file ``dsnn-export`` and ``bench/an4_routes.py`` read; the step's record is ``OUT_DIR/evals/NAME``).
4. ``beam``: the same split with the word 3-gram LM + lexicon beam search, each run tuned the way
   ``dsnn-job`` tunes the file it ships: ``dsnn-eval RUN_DIR --data DATA --split dev --decoder beam
   --tune --decoder_dir OUT_DIR/evals_beam/NAME/decoder --out OUT_DIR/evals_beam/NAME/eval_beam.json``
   (LM weight and word bonus grid-searched on dev at each of the run's levels, ``--tune_level all``:
   a single model's only level; each DSNN level on its own, the settings per level the shipped file
   carries).
   Tuned and reported on the same split, so the figures are optimistic, equally for every run.
   Nothing is written into the run directory.
5. ``report``: ``docs/results.md`` (per-level tables for both decoders, training CPU times) and
   ``docs/results.json``.

Training and evaluation run as child processes of the commands (thin layers over
`dsnn_keras.train_run.train_run` and `dsnn_keras.evaluate.run_evaluation`, the functions ``dsnn-job``
calls): each child's CPU time is the measurement, and ``--jobs`` runs share the cores with capped
TensorFlow thread pools. Output directories written by an older version of this script (no
``_artifact.json``) are recorded as they are (`dsnn_job.artifacts.adopt`) instead of being made again.

Example:
    .venv/bin/python bench/an4_comparison.py --an4 ../shared/data/an4 --out_dir runs/an4_comparison
    .venv/bin/python bench/an4_comparison.py --steps 200 --only prepare,train   # a quick smoke run
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import concurrent.futures
import shlex
import shutil
import subprocess
import sys
import time
from typing import Any, Callable, Mapping, Optional, Sequence

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:   # run as a script from a source checkout
    sys.path.insert(0, str(REPO_ROOT))

from dsnn_job.artifacts import (IN_PROGRESS_FILE, StepRecord, StepSpec, adopt, adopt_in_progress,  # noqa: E402
                                fingerprint_file, fingerprint_tree, read_record, run_step)
from dsnn_keras.errors import DsnnError  # noqa: E402
from dsnn_keras.eval_report import EvalReport, LevelResult  # noqa: E402

STAGES = ("prepare", "train", "eval", "beam", "report")
DEFAULT_LEVELS = (0.0, 0.5, 0.7, 0.9)
NUM_DEV_SPEAKERS = 10
WER_RATIO_GOAL = 1.10
DENSE_WER_GOAL = 0.20
BEAM_DENSE_WER_GOAL = 0.08    # issue 18, beam + LM, dense level
BEAM_SPARSEST_WER_GOAL = 0.12  # issue 18, beam + LM, 90 % level


class ComparisonError(DsnnError, RuntimeError):
    """A stage failed or an input is missing; the message says which and where its log is."""


# ---- plan ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run of the comparison.

    Args:
        name: Directory name under ``OUT_DIR/runs``.
        kind: ``"dsnn"`` (all levels jointly) or ``"single"`` (one sparsity).
        overrides: Dotted ``key=value`` config overrides applied to the base config.
        sparsity: The sparsity of a single run (None for DSNN runs).
        distillation: Whether in-place distillation is on (DSNN runs).
    """

    name: str
    kind: str
    overrides: tuple[str, ...]
    sparsity: float | None = None
    distillation: bool = False


def plan_runs(levels: Sequence[float] = DEFAULT_LEVELS, distillation_weight: float = 1.0,
              common: Sequence[str] = ()) -> list[RunSpec]:
    """The six runs: DSNN with and without distillation, and one single model per level.

    Args:
        levels: Sparsity levels (the DSNN's levels and the singles' sparsities).
        distillation_weight: In-place distillation weight of the main DSNN run (> 0).
        common: Overrides applied to every run (e.g. the step budget).
    """
    if distillation_weight <= 0:
        raise ValueError(f"distillation_weight must be > 0 for the main DSNN run, got "
                         f"{distillation_weight}")
    level_list = "[" + ", ".join(repr(float(s)) for s in levels) + "]"
    base = (*common, f"pruning.levels={level_list}")
    runs = [
        RunSpec("dsnn", "dsnn", (*base, "training.mode=dsnn",
                                 f"training.distillation_weight={distillation_weight}"),
                distillation=True),
    ]
    for sparsity in levels:
        runs.append(RunSpec(
            f"single_{round(100 * sparsity):02d}", "single",
            (*base, "training.mode=single", f"pruning.single_sparsity={float(sparsity)}",
             "training.distillation_weight=0.0"),
            sparsity=float(sparsity)))
    # Last: the ablation matters least if a time budget cuts the comparison short.
    runs.append(RunSpec("dsnn_nodistill", "dsnn", (*base, "training.mode=dsnn",
                                                   "training.distillation_weight=0.0")))
    return runs


def narrow_widths(config: Any, levels: Sequence[float]) -> dict[float, dict[str, list[int]]]:
    """Per sparse level, the layer widths its unit-granularity level keeps (the same plan the
    unit masks follow, `dsnn_keras.sparsity.units`): ``{0.5: {"conv_channels": [23, 11],
    "lstm_units": [114, 114]}, ...}``. A dense model trained alone at those widths runs at the
    latency of that level's sliced branch."""
    import numpy as np

    from dsnn_keras.config import apply_overrides
    from dsnn_keras.model import build_pruned_model
    from dsnn_keras.sparsity.units import unit_plan

    level_list = "[" + ", ".join(repr(float(s)) for s in levels) + "]"
    unit = apply_overrides(config, ["pruning.granularity=unit", "training.mode=dsnn",
                                    f"pruning.levels={level_list}"])
    bins = unit.feature_config().num_mel_bins
    model = build_pruned_model(unit, unit.feature_config(), 8, np.zeros(bins), np.ones(bins))
    plan = unit_plan(model)
    kept = plan.kept_for(list(levels)).numpy()
    names = [g.name for g in plan.groups]
    out = {}
    for sparsity, counts in zip(levels, kept):
        if sparsity == 0:
            continue
        by_name = dict(zip(names, (int(c) for c in counts)))
        out[float(sparsity)] = {
            "conv_channels": [by_name.get(f"conv_{i}", c) for i, c in enumerate(config.model.conv_channels)],
            "lstm_units": [by_name.get(f"lstm_{i}", u) for i, u in enumerate(config.model.lstm_units)]}
    return out


def narrow_runs(widths: Mapping[float, Mapping[str, Sequence[int]]], common: Sequence[str] = ()) -> list[RunSpec]:
    """Dense models trained alone at each sparse level's unit widths (``narrow_50`` ...)."""
    runs = []
    for sparsity, shape in widths.items():
        runs.append(RunSpec(
            f"narrow_{round(100 * sparsity):02d}", "narrow",
            (*common, "pruning.levels=[0.0]", "training.mode=single", "pruning.single_sparsity=0.0",
             "training.distillation_weight=0.0",
             f"model.conv_channels={list(shape['conv_channels'])}",
             f"model.lstm_units={list(shape['lstm_units'])}"),
            sparsity=float(sparsity)))
    return runs


def step_overrides(config: Any, steps: int | None) -> list[str]:
    """Overrides that change the step budget to ``steps``, scaling the schedule with it.

    The warm-up, the learning-rate hold (decay begin), the pruning ramp (begin/end step), the
    evaluation and checkpoint intervals are scaled by ``steps / total_steps`` of the base config so
    the run keeps the same shape.
    """
    if steps is None:
        return []
    if steps <= 0:
        raise ValueError(f"--steps must be > 0, got {steps}")
    training, pruning = config.training, config.pruning
    scale = steps / training.total_steps
    begin = int(round(pruning.begin_step * scale))
    end = max(begin + 1, min(steps, int(round(pruning.end_step * scale))))
    frequency = max(1, min(pruning.frequency, (end - begin) // 4 or 1))
    eval_every = int(round(training.eval_every * scale)) if training.eval_every else 0
    warmup = int(round(training.warmup_steps * scale))
    decay = ([] if training.decay_begin_step is None else
             [f"training.decay_begin_step={max(warmup, min(steps - 1, int(round(training.decay_begin_step * scale))))}"])
    return [
        f"training.total_steps={steps}",
        f"training.warmup_steps={warmup}",
        *decay,
        f"training.checkpoint_every={max(1, min(training.checkpoint_every, steps))}",
        f"training.eval_every={eval_every}",
        f"pruning.begin_step={begin}",
        f"pruning.end_step={end}",
        f"pruning.frequency={frequency}",
    ]


def pick_dev_speakers(speakers: Sequence[str], count: int = NUM_DEV_SPEAKERS) -> list[str]:
    """Deterministic held-out speakers: every ``len // count``-th of the sorted list.

    Starting at half a stride, so the picks spread over the alphabet (AN4's ids start with the
    speaker's sex, ``f…``/``m…``, so the split keeps roughly the corpus' female/male ratio).
    """
    ordered = sorted(set(speakers))
    if len(ordered) <= count:
        raise ValueError(f"need more than {count} speakers to hold out {count}, got {len(ordered)}")
    stride = len(ordered) // count
    return ordered[stride // 2::stride][:count]


def an4_speakers(an4_dir: pathlib.Path) -> list[str]:
    """Speaker ids of ``AN4/train`` (its LibriSpeech-layout speaker directories)."""
    train = an4_dir / "train"
    if not train.is_dir():
        raise ComparisonError(f"{an4_dir}: no train/ directory (expected AN4 in LibriSpeech layout)")
    return sorted(p.name for p in train.iterdir() if p.is_dir())


def write_run_config(base_config: pathlib.Path, overrides: Sequence[str],
                     path: pathlib.Path) -> None:
    """Validates ``base_config`` + ``overrides`` and writes the resolved config to ``path``."""
    from dsnn_keras.config import apply_overrides, dump_config, load_config

    config = apply_overrides(load_config(base_config), list(overrides), where=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    dump_config(config, path)


# ---- running stages -----------------------------------------------------------------------------
def tool(name: str) -> str:
    """Path of a console script: next to this Python first (the venv), else on PATH."""
    candidate = pathlib.Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _log(message: str) -> None:
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[an4_comparison {stamp}] {message}", file=sys.stderr, flush=True)


def run_logged(name: str, argv: Sequence[str], log_path: pathlib.Path,
               env: Mapping[str, str] | None = None) -> dict[str, float]:
    """Runs ``argv`` to completion with output appended to ``log_path``; measures its cost.

    Safe to call from several threads at once: the cost is that of this one child process
    (``os.wait4`` rusage), not of the whole process tree of this script.

    Returns:
        ``{"wall_s", "cpu_user_s", "cpu_system_s", "cpu_s"}`` of the child, from ``os.wait4``
        (its own and its waited-for descendants' user and system time).

    Raises:
        ComparisonError: the command exited non-zero (the message names the log file).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _log(f"{name}: {shlex.join(argv)}  (log: {log_path})")
    start = time.perf_counter()
    with log_path.open("a") as log:
        log.write(f"\n$ {shlex.join(argv)}\n")
        log.flush()
        child = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT,
                                 env=None if env is None else dict(env))
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise ComparisonError(f"stage {name} failed with exit status {child.returncode}; see {log_path}")
    user, system = usage.ru_utime, usage.ru_stime
    _log(f"{name}: done in {wall:.0f} s wall, {user + system:.0f} s CPU")
    return {"wall_s": wall, "cpu_user_s": user, "cpu_system_s": system, "cpu_s": user + system}


def job_environment(jobs: int) -> dict[str, str] | None:
    """Environment of the training/eval children: with ``jobs`` > 1 concurrent runs, each
    TensorFlow process gets ``cpu_count // jobs`` intra-op threads (and as many inter-op threads)
    so the runs share the cores instead of oversubscribing them."""
    if jobs <= 1:
        return None
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    return {**os.environ, "TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads}


# ---- the steps: dsnn-job artifacts --------------------------------------------------------------
class ComparisonSteps:
    """The comparison's steps as `dsnn_job.artifacts` steps: the job's one caching scheme.

    ``prepare`` makes ``OUT/data`` (inputs: the AN4 file listing), ``train`` makes ``OUT/runs/NAME``
    (resumable; inputs: the dataset's and the base config's fingerprints), ``eval`` writes
    ``RUN_DIR/eval.json`` and records it in ``OUT/evals/NAME`` (inputs: the training's and the
    dataset's fingerprints). A step made again forces the evaluation after it, as in ``dsnn-job``.

    Args:
        out_dir: The comparison's output directory.
        an4: AN4 in LibriSpeech layout.
        base_config: The base training config file.
        dev_speakers: Held-out speakers.
        vocab_size: ``dsnn-prepare --vocab_size``.
        tokenizer_type: ``dsnn-prepare --tokenizer_type``.
        feature_config: The features the models expect (``FeatureConfig.to_dict()``).
        jobs: Concurrent runs (recorded in train_time.json).
        speed_perturb: ``dsnn-prepare --speed_perturb`` factors (``"1.0"``: off).
        env: Environment of the training and evaluation processes (None: this one's).
        log: Progress lines.
    """

    def __init__(self, out_dir: pathlib.Path, an4: pathlib.Path, base_config: pathlib.Path,
                 dev_speakers: Sequence[str], vocab_size: int, tokenizer_type: str,
                 feature_config: Mapping[str, Any], jobs: int = 1, env: Optional[Mapping[str, str]] = None,
                 log: Callable[[str], None] = None, speed_perturb: str = "1.0"):
        self.out_dir = pathlib.Path(out_dir)
        self.an4 = pathlib.Path(an4)
        self.base_config = pathlib.Path(base_config)
        self.dev_speakers = list(dev_speakers)
        self.vocab_size = vocab_size
        self.tokenizer_type = tokenizer_type
        self.feature_config = dict(feature_config)
        self.jobs = jobs
        self.speed_perturb = speed_perturb
        self.env = env
        self.log = log or _log
        self.trained: dict[str, StepRecord] = {}

    @property
    def data_dir(self) -> pathlib.Path:
        return self.out_dir / "data"

    @property
    def logs(self) -> pathlib.Path:
        return self.out_dir / "logs"

    def run_dir(self, spec: RunSpec) -> pathlib.Path:
        return self.out_dir / "runs" / spec.name

    # prepare
    def prepare_spec(self) -> StepSpec:
        return StepSpec("prepare", self.data_dir,
                        params={"dev_speakers": self.dev_speakers, "vocab_size": self.vocab_size,
                                "tokenizer_type": self.tokenizer_type, "feature_config": self.feature_config,
                                # Only when on: datasets prepared before the flag stay up to date.
                                **({"speed_perturb": self.speed_perturb} if self.speed_perturb != "1.0" else {})},
                        inputs={"corpus": fingerprint_tree(self.an4 / "train")})

    def prepare(self) -> StepRecord:
        """Prepares (or keeps) ``OUT/data``."""
        spec = self.prepare_spec()
        if (self.data_dir / "dataset.json").is_file():
            adopt(spec, log=self.log)
        return run_step(spec, self._prepare, log=self.log)

    def _prepare(self, directory: pathlib.Path) -> None:
        # The prepared features must be the ones the models expect (dsnn-train checks).
        features_path = self.out_dir / "feature_config.json"
        features_path.write_text(json.dumps(self.feature_config, indent=2))
        # dsnn-prepare --overwrite replaces only an empty directory or an earlier dataset.
        (directory / IN_PROGRESS_FILE).unlink(missing_ok=True)
        run_logged("prepare", [tool("dsnn-prepare"), "--input", str(self.an4 / "train"),
                               "--dev_speakers", ",".join(self.dev_speakers),
                               "--vocab_size", str(self.vocab_size), "--tokenizer_type", self.tokenizer_type,
                               "--feature_config", str(features_path), "--out", str(directory), "--overwrite",
                               "--speed_perturb", self.speed_perturb],
                   self.logs / "prepare.log")

    def data_fingerprint(self) -> str:
        record = read_record(self.data_dir)
        if record is None:
            raise ComparisonError(f"{self.data_dir}: no prepared dataset recorded; run the prepare stage first")
        return record["fingerprint"]

    # train
    def train_spec(self, spec: RunSpec) -> StepSpec:
        return StepSpec(f"train {spec.name}", self.run_dir(spec), params={"overrides": list(spec.overrides)},
                        inputs={"data": self.data_fingerprint(), "config": fingerprint_file(self.base_config)},
                        resumable=True)

    def train(self, spec: RunSpec) -> StepRecord:
        """Trains (resumes, or keeps) ``OUT/runs/NAME``."""
        step = self.train_spec(spec)
        if (step.out / "train_time.json").is_file():   # finished by an older version of this script
            adopt(step, log=self.log)
        elif step.out.is_dir() and any(step.out.iterdir()):
            adopt_in_progress(step, log=self.log)
        record = run_step(step, lambda directory: self._train(spec, directory), log=self.log)
        self.trained[spec.name] = record
        return record

    def _train(self, spec: RunSpec, directory: pathlib.Path) -> None:
        config_path = self.out_dir / "configs" / f"{spec.name}.yaml"
        write_run_config(self.base_config, spec.overrides, config_path)
        resumed = (directory / "checkpoints").is_dir()
        timing = run_logged(f"train {spec.name}", [
            tool("dsnn-train"), "--data", str(self.data_dir), "--config", str(config_path),
            "--out", str(directory)], self.logs / f"train_{spec.name}.log", env=self.env)
        timing["resumed"] = resumed
        timing["concurrent_jobs"] = self.jobs
        (directory / "train_time.json").write_text(json.dumps(timing, indent=2) + "\n")

    # eval
    def eval_spec(self, spec: RunSpec) -> StepSpec:
        trained = read_record(self.run_dir(spec))
        if trained is None:
            raise ComparisonError(f"eval {spec.name}: {self.run_dir(spec)} has no finished training; "
                                  "run the train stage first")
        return StepSpec(f"eval {spec.name}", self.out_dir / "evals" / spec.name, params={"split": "dev"},
                        inputs={"run": trained["fingerprint"], "data": self.data_fingerprint()})

    def evaluate(self, spec: RunSpec) -> StepRecord:
        """Evaluates the run on dev into ``RUN_DIR/eval.json`` (or keeps it)."""
        step = self.eval_spec(spec)
        published = self.run_dir(spec) / "eval.json"
        trained = self.trained.get(spec.name)
        force = (trained is not None and trained.status != "cached") or not published.is_file()
        if not force and not step.out.exists():   # evaluated by an older version of this script
            step.out.mkdir(parents=True)
            shutil.copy2(published, step.out / "eval.json")
            adopt(step, log=self.log)
        return run_step(step, lambda directory: self._evaluate(spec, directory), log=self.log, force=force)

    # beam
    def beam_spec(self, spec: RunSpec) -> StepSpec:
        from dsnn_keras.evaluate import tune_defaults_fingerprint

        trained = read_record(self.run_dir(spec))
        if trained is None:
            raise ComparisonError(f"beam {spec.name}: {self.run_dir(spec)} has no finished training; "
                                  "run the train stage first")
        return StepSpec(f"beam {spec.name}", self.beam_dir(spec),
                        params={"split": "dev", "decoder": "beam", "tune_level": "all",
                                "tune_defaults": tune_defaults_fingerprint()},
                        inputs={"run": trained["fingerprint"], "data": self.data_fingerprint()})

    def beam_dir(self, spec: RunSpec) -> pathlib.Path:
        return self.out_dir / "evals_beam" / spec.name

    def evaluate_beam(self, spec: RunSpec) -> StepRecord:
        """Tunes the beam + LM decoder on dev and evaluates with it into
        ``OUT/evals_beam/NAME/eval_beam.json`` (or keeps it)."""
        step = self.beam_spec(spec)
        trained = self.trained.get(spec.name)
        force = trained is not None and trained.status != "cached"
        return run_step(step, lambda directory: self._evaluate_beam(spec, directory), log=self.log,
                        force=force)

    def _evaluate_beam(self, spec: RunSpec, directory: pathlib.Path) -> None:
        report = directory / "eval_beam.json"
        run_logged(f"beam {spec.name}", [
            tool("dsnn-eval"), str(self.run_dir(spec)), "--data", str(self.data_dir), "--split", "dev",
            "--decoder", "beam", "--tune", "--tune_level", "all", "--decoder_dir", str(directory / "decoder"),
            "--out", str(report)], self.logs / f"beam_{spec.name}.log", env=self.env)
        EvalReport.read(report)   # the contract: fails here, not in the report

    def _evaluate(self, spec: RunSpec, directory: pathlib.Path) -> None:
        run_dir = self.run_dir(spec)
        run_logged(f"eval {spec.name}", [tool("dsnn-eval"), str(run_dir), "--data", str(self.data_dir),
                                         "--split", "dev"], self.logs / f"eval_{spec.name}.log", env=self.env)
        EvalReport.read(run_dir / "eval.json")   # the contract: fails here, not in the report
        shutil.copy2(run_dir / "eval.json", directory / "eval.json")


# ---- results and report -------------------------------------------------------------------------
def _level_wer(eval_report: Optional[EvalReport], sparsity: float) -> Optional[LevelResult]:
    return None if eval_report is None else eval_report.at_sparsity(sparsity)


def comparison_rows(evals: Mapping[str, EvalReport], runs: Sequence[RunSpec],
                    levels: Sequence[float]) -> list[dict[str, Any]]:
    """One row per level: DSNN / no-distillation / single-model WER and CER, and their ratios.

    Args:
        evals: ``{run name: its eval.json}`` (runs without an eval are simply missing).
        runs: The planned runs (to find the single model of each sparsity).
        levels: The DSNN's sparsity levels.

    Returns:
        Dicts with ``level``, ``sparsity``, ``dsnn_wer``, ``single_wer``, ``ratio``
        (dsnn / single), ``nodistill_wer``, ``nodistill_ratio``, the matching CERs, and
        ``meets_ratio_goal`` (ratio <= 1.10); a value is None when its run has no eval.
    """
    singles = {spec.sparsity: spec.name for spec in runs if spec.kind == "single"}
    rows = []
    for index, sparsity in enumerate(levels):
        dsnn = _level_wer(evals.get("dsnn"), sparsity)
        nodistill = _level_wer(evals.get("dsnn_nodistill"), sparsity)
        single_name = singles.get(float(sparsity))
        single = _level_wer(evals.get(single_name), sparsity) if single_name else None

        def get(entry, key):
            return None if entry is None else float(getattr(entry, key))

        def ratio(numerator, denominator):
            if numerator is None or denominator is None:
                return None
            if denominator == 0:
                return 1.0 if numerator == 0 else float("inf")
            return numerator / denominator

        row = {
            "level": index, "sparsity": float(sparsity),
            "dsnn_wer": get(dsnn, "wer"), "single_wer": get(single, "wer"),
            "nodistill_wer": get(nodistill, "wer"),
            "dsnn_cer": get(dsnn, "cer"), "single_cer": get(single, "cer"),
            "nodistill_cer": get(nodistill, "cer"),
        }
        row["ratio"] = ratio(row["dsnn_wer"], row["single_wer"])
        row["nodistill_ratio"] = ratio(row["nodistill_wer"], row["single_wer"])
        row["meets_ratio_goal"] = None if row["ratio"] is None else row["ratio"] <= WER_RATIO_GOAL
        rows.append(row)
    return rows


def cpu_summary(times: Mapping[str, Mapping[str, Any]], runs: Sequence[RunSpec]) -> dict[str, Any]:
    """Training CPU/wall seconds: DSNN, DSNN without distillation, and the singles summed.

    ``singles_cpu_s`` is None unless every single run has a recorded time.
    """
    singles = [spec.name for spec in runs if spec.kind == "single"]
    single_times = [times.get(name) for name in singles]
    complete = all(t is not None for t in single_times)

    def field(name, key):
        entry = times.get(name)
        return None if entry is None else float(entry[key])

    summary = {
        "dsnn_cpu_s": field("dsnn", "cpu_s"), "dsnn_wall_s": field("dsnn", "wall_s"),
        "nodistill_cpu_s": field("dsnn_nodistill", "cpu_s"),
        "nodistill_wall_s": field("dsnn_nodistill", "wall_s"),
        "singles_cpu_s": sum(float(t["cpu_s"]) for t in single_times) if complete else None,
        "singles_wall_s": sum(float(t["wall_s"]) for t in single_times) if complete else None,
        "num_singles": len(singles),
        "resumed": sorted(name for name, t in times.items() if t.get("resumed")),
    }
    dsnn, singles_cpu = summary["dsnn_cpu_s"], summary["singles_cpu_s"]
    summary["dsnn_over_singles"] = (dsnn / singles_cpu if dsnn is not None and singles_cpu
                                    else None)
    return summary


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def _minutes(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds / 60:.1f} min"


def render_report(results: Mapping[str, Any]) -> str:
    """The Markdown of ``docs/results.md`` from the ``results.json`` dict (see `collect_results`)."""
    rows, cpu, setup = results["rows"], results["cpu"], results["setup"]
    lines = [
        "# DSNN on AN4: one model vs. individually trained models",
        "",
        f"Generated by `bench/an4_comparison.py` on {results['generated']}. Whatever it shows.",
        "",
        "## Command",
        "",
        "```",
        results["command"],
        "```",
        "",
        "## Setup",
        "",
        f"- Data: AN4 training set ({setup.get('an4_dir')}), {setup.get('train_utterances', '?')} "
        f"training / {setup.get('dev_utterances', '?')} dev utterances; dev = "
        f"{len(setup.get('dev_speakers', []))} held-out speakers: "
        f"{', '.join(setup.get('dev_speakers', []))}.",
        f"- Model: {setup.get('model_description', '?')}; "
        f"{setup.get('model_params', '?')} parameters "
        f"({setup.get('prunable_params', '?')} prunable).",
        f"- Training: {setup.get('steps', '?')} optimizer steps for every run (base config "
        f"`{setup.get('base_config')}`); levels {setup.get('levels')}; DSNN in-place distillation "
        f"weight {setup.get('distillation_weight')}.",
        "- Decoding: greedy CTC, no language model (and, where the `beam` stage ran, beam search with "
        "the word 3-gram LM: its own table below); WER/CER with jiwer (`dsnn-eval`).",
        f"- Machine: {setup.get('machine', '?')}.",
        "",
        "## Dev WER per level",
        "",
        "| level | sparsity | DSNN WER % | single-model WER % | DSNN / single | ≤ 1.10×? "
        "| DSNN w/o distillation WER % | w/o distill. / single |",
        "|---:|---:|---:|---:|---:|:---:|---:|---:|",
    ]
    for row in rows:
        goal = {True: "yes", False: "**no**", None: "—"}[row["meets_ratio_goal"]]
        lines.append(
            f"| {row['level']} | {row['sparsity']:.2f} | {_pct(row['dsnn_wer'])} | "
            f"{_pct(row['single_wer'])} | {_ratio(row['ratio'])} | {goal} | "
            f"{_pct(row['nodistill_wer'])} | {_ratio(row['nodistill_ratio'])} |")
    lines += [
        "",
        "CER % (DSNN / single / w/o distillation): " + "; ".join(
            f"level {r['level']}: {_pct(r['dsnn_cer'])} / {_pct(r['single_cer'])} / "
            f"{_pct(r['nodistill_cer'])}" for r in rows) + ".",
        "",
        *_beam_section(results),
        "## Training cost",
        "",
        "| | CPU time | wall time |",
        "|---|---:|---:|",
        f"| DSNN (one model, {len(rows)} levels) | {_minutes(cpu['dsnn_cpu_s'])} | "
        f"{_minutes(cpu['dsnn_wall_s'])} |",
        f"| DSNN without distillation | {_minutes(cpu['nodistill_cpu_s'])} | "
        f"{_minutes(cpu['nodistill_wall_s'])} |",
        f"| {cpu['num_singles']} single-level models together | {_minutes(cpu['singles_cpu_s'])} | "
        f"{_minutes(cpu['singles_wall_s'])} |",
        "",
        f"DSNN / singles CPU time: {_ratio(cpu['dsnn_over_singles'])}. CPU time is user + system "
        "time of each `dsnn-train` process (all its threads), measured with "
        "`os.wait4`; it includes the periodic dev evaluations inside training.",
    ]
    if setup.get("train_eval_wall_s") is not None:
        lines.append("")
        lines.append(f"All six trainings and evaluations: {_minutes(setup['train_eval_wall_s'])} wall, "
                     f"{setup.get('jobs')} at a time (`--jobs`), data preparation not included.")
    if cpu.get("resumed"):
        lines.append(f"Resumed runs (CPU time covers only the final attempt): "
                     f"{', '.join(cpu['resumed'])}.")
    goals = results.get("goals", {})
    lines += [
        "",
        "## Goals (issue 5)",
        "",
        f"- DSNN WER within {WER_RATIO_GOAL:.2f}× of the single model at every level: "
        f"{_ratio_goal_text(goals)}.",
        f"- Dense-level dev WER ≤ {100 * DENSE_WER_GOAL:.0f} % without an LM: "
        f"{_goal_text(goals.get('dense_goal_met'))} (DSNN level 0: {_pct(rows[0]['dsnn_wer'])} %)."
        if rows else "- Dense-level goal: no data.",
        "",
    ]
    return "\n".join(lines)


def _beam_section(results: Mapping[str, Any]) -> list[str]:
    rows = results.get("beam_rows") or []
    if not rows:
        return []
    decoders = results.get("beam_decoders") or {}

    def described(beam: Mapping[str, Any]) -> str:
        return (f"{beam.get('lm_weight', '?')} / {beam.get('word_bonus', '?')} (threshold "
                f"{beam.get('beam_threshold', '?')}, token beam {beam.get('token_beam', '?')}, blank skip "
                f"{beam.get('blank_skip') or 'off'}, token floor {beam.get('token_min_logp') or 'off'})")

    def settings(name: str) -> str:
        decoder = decoders.get(name) or {}   # decoder.json (DecoderSettings)
        per_level = decoder.get("levels") or {}
        if len(per_level) > 1:
            return f"{name} " + ", ".join(f"level {level} {described(beam)}" for level, beam in per_level.items())
        return f"{name} {described(decoder.get('beam') or {})}"

    goals = results.get("beam_goals") or {}
    lines = [
        "## Dev WER per level, beam search + word 3-gram LM",
        "",
        "Each run's decoder tuned on dev at each of its levels (`dsnn-eval --decoder beam --tune "
        "--tune_level all`: a single model's one level; every DSNN level on its own, the per-level "
        "settings the file `dsnn-job` ships carries); tuned "
        "and reported on the same split, so optimistic for every run alike. LM weight / word bonus "
        "(and the speed stage's pruning) chosen: " + "; ".join(settings(name) for name in sorted(decoders)) + ".",
        "",
        "| level | sparsity | DSNN WER % | single-model WER % | DSNN / single | ≤ 1.10×? |",
        "|---:|---:|---:|---:|---:|:---:|",
    ]
    for row in rows:
        goal = {True: "yes", False: "**no**", None: "—"}[row["meets_ratio_goal"]]
        lines.append(f"| {row['level']} | {row['sparsity']:.2f} | {_pct(row['dsnn_wer'])} | "
                     f"{_pct(row['single_wer'])} | {_ratio(row['ratio'])} | {goal} |")
    lines += [
        "",
        f"Goals (issue 18, beam + LM): ratio ≤ {WER_RATIO_GOAL:.2f}× at every level: "
        f"{_ratio_goal_text(goals)}; dense ≤ {100 * BEAM_DENSE_WER_GOAL:.0f} %: "
        f"{_goal_text(goals.get('dense_goal_met'))} ({_pct(rows[0]['dsnn_wer'])} %); "
        f"90 % level ≤ {100 * BEAM_SPARSEST_WER_GOAL:.0f} %: "
        f"{_goal_text(goals.get('sparsest_goal_met'))} ({_pct(rows[-1]['dsnn_wer'])} %).",
        "",
    ]
    return lines


def _ratio_goal_text(goals: Mapping[str, Any]) -> str:
    measured = goals.get("ratio_levels_measured") or []
    if goals.get("ratio_goal_met") is not None or not measured:
        return _goal_text(goals.get("ratio_goal_met"))
    failed = goals.get("ratio_levels_failed") or []
    verdict = (f"**not met** at level(s) {', '.join(map(str, failed))}" if failed
               else "met at every level measured")
    return f"{verdict} (levels with a single model: {', '.join(map(str, measured))}; the others not run)"


def _goal_text(value: bool | None) -> str:
    return {True: "met", False: "**not met**", None: "not measured"}[value]


def goals(rows: Sequence[Mapping[str, Any]]) -> dict[str, bool | None]:
    """Whether the issue's two goals are met (None when a number is missing)."""
    ratios = [row["meets_ratio_goal"] for row in rows]
    ratio_goal = None if not ratios or any(r is None for r in ratios) else all(ratios)
    dense = rows[0]["dsnn_wer"] if rows else None
    return {"ratio_goal_met": ratio_goal,
            "dense_goal_met": None if dense is None else dense <= DENSE_WER_GOAL,
            "ratio_levels_measured": [row["level"] for row in rows if row["meets_ratio_goal"] is not None],
            "ratio_levels_failed": [row["level"] for row in rows if row["meets_ratio_goal"] is False]}


def beam_goals(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Issue 18's beam + LM goals: the ratio at every level, dense ≤ 8 %, 90 % level ≤ 12 %."""
    result = goals(rows)
    del result["dense_goal_met"]
    dense = rows[0]["dsnn_wer"] if rows else None
    sparsest = rows[-1]["dsnn_wer"] if rows else None
    result["dense_goal_met"] = None if dense is None else dense <= BEAM_DENSE_WER_GOAL
    result["sparsest_goal_met"] = None if sparsest is None else sparsest <= BEAM_SPARSEST_WER_GOAL
    return result


def _read_json(path: pathlib.Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def machine_description() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} logical CPUs visible, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}")


def collect_results(out_dir: pathlib.Path, runs: Sequence[RunSpec], levels: Sequence[float],
                    setup: Mapping[str, Any], command: str) -> dict[str, Any]:
    """Reads every run's eval.json and train_time.json and builds the results dict."""
    evals: dict[str, EvalReport] = {}
    beam_evals: dict[str, EvalReport] = {}
    times = {}
    for spec in runs:
        run_dir = out_dir / "runs" / spec.name
        if (run_dir / "eval.json").is_file():
            evals[spec.name] = EvalReport.read(run_dir / "eval.json")
        if (beam_report := out_dir / "evals_beam" / spec.name / "eval_beam.json").is_file():
            beam_evals[spec.name] = EvalReport.read(beam_report)
        if (timing := _read_json(run_dir / "train_time.json")) is not None:
            times[spec.name] = timing
    rows = comparison_rows(evals, runs, levels)
    beam_rows = comparison_rows(beam_evals, runs, levels) if beam_evals else []
    setup = dict(setup)
    if (overall := _read_json(out_dir / "comparison_time.json")) is not None:
        setup["train_eval_wall_s"] = overall["train_eval_wall_s"]
        setup["jobs"] = overall["jobs"]
    dsnn_levels = evals["dsnn"].levels if "dsnn" in evals else ()
    if dsnn_levels:
        setup.setdefault("model_params", dsnn_levels[0].model_params)
        setup.setdefault("prunable_params", dsnn_levels[0].prunable_params)
        setup.setdefault("dev_utterances", dsnn_levels[0].num_utterances)
    return {
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "setup": setup,
        "rows": rows,
        "cpu": cpu_summary(times, runs),
        "goals": goals(rows),
        "beam_rows": beam_rows,
        "beam_goals": beam_goals(beam_rows) if beam_rows else None,
        "beam_decoders": {name: _read_json(out_dir / "evals_beam" / name / "decoder" / "decoder.json")
                          for name in beam_evals},
        "runs": {spec.name: {"kind": spec.kind, "sparsity": spec.sparsity,
                             "distillation": spec.distillation, "overrides": list(spec.overrides),
                             "eval": ([level.to_dict() for level in evals[spec.name].levels]
                                      if spec.name in evals else None),
                             "train_time": times.get(spec.name)} for spec in runs},
    }


def _model_description(config: Any) -> str:
    model = config.model
    if model.encoder == "conformer":
        c = model.conformer
        encoder = f"{c.blocks} × causal Conformer (d={c.dim}, {c.heads} heads, FF ×{c.ff_mult}, conv {c.conv_kernel})"
    else:
        encoder = " → ".join(f"LSTM-{u}" for u in model.lstm_units)
    parts = [f"2 × Conv2D {model.conv_kernel}×{model.conv_kernel}/2 ({'/'.join(map(str, model.conv_channels))} ch)",
             encoder]
    if model.projection_units:
        parts.append(f"Dense-{model.projection_units}")
    parts.append("Dense output + blank")
    return " → ".join(parts)


def write_report(path: pathlib.Path, markdown: str, results: Mapping[str, Any]) -> None:
    """Writes ``markdown`` to ``path`` and ``results`` as JSON beside it (``.json``), and prints the markdown."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown)
    path.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    _log(f"report: wrote {path} and {path.with_suffix('.json')}")
    sys.stdout.write(markdown)


# ---- main ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="The paper's comparison on AN4: one DSNN (levels 0/0.5/0.7/0.9) vs four "
                    "single-level models with the same architecture and step budget, plus DSNN "
                    "without in-place distillation. Resumable: re-run the same command.")
    default_an4 = pathlib.Path(os.environ.get("DSNN_DATA_DIR", REPO_ROOT.parent / "shared" / "data")) / "an4"
    parser.add_argument("--an4", type=pathlib.Path, default=default_an4,
                        help="AN4 in LibriSpeech layout (default: $DSNN_DATA_DIR/an4 or "
                             "../shared/data/an4).")
    parser.add_argument("--out_dir", type=pathlib.Path, default=REPO_ROOT / "runs" / "an4_comparison",
                        help="Where the prepared data, runs and logs go (default: runs/an4_comparison).")
    parser.add_argument("--config", type=pathlib.Path, default=REPO_ROOT / "configs" / "an4.yaml",
                        help="Base training config (default: configs/an4.yaml).")
    parser.add_argument("--steps", type=int, default=None,
                        help="Override the step budget of every run (the warm-up, pruning ramp and "
                             "intervals are scaled with it). Default: the config's total_steps.")
    parser.add_argument("--distillation_weight", type=float, default=None,
                        help="In-place distillation weight of the main DSNN run (default: the "
                             "config's training.distillation_weight if > 0, else 1.0).")
    parser.add_argument("--only", default=",".join(STAGES),
                        help=f"Comma-separated stages to run, of {','.join(STAGES)} (default: all).")
    parser.add_argument("--runs", default=None,
                        help="Comma-separated run names to train/evaluate (default: all six: dsnn, "
                             "dsnn_nodistill, single_00, single_50, single_70, single_90).")
    parser.add_argument("--dev_speakers", type=int, default=NUM_DEV_SPEAKERS,
                        help=f"Training speakers held out as dev (default: {NUM_DEV_SPEAKERS}).")
    parser.add_argument("--vocab_size", type=int, default=128,
                        help="SentencePiece vocabulary size passed to dsnn-prepare (default: 128).")
    parser.add_argument("--tokenizer_type", choices=("unigram", "bpe", "char"), default="char",
                        help="SentencePiece model type passed to dsnn-prepare (default: char; "
                             "character units broke the CTC blank plateau sooner in short runs).")
    parser.add_argument("--report", type=pathlib.Path, default=REPO_ROOT / "docs" / "results.md",
                        help="Markdown report path; the JSON goes next to it with .json "
                             "(default: docs/results.md).")
    parser.add_argument("--jobs", type=int, default=2,
                        help="Runs trained/evaluated at the same time (default: 2, one per core of "
                             "a 2-core machine; each gets cpu_count/jobs TensorFlow threads). CPU "
                             "times are per process either way.")
    parser.add_argument("--narrow", action="store_true",
                        help="also train dense models alone at the widths each sparse level keeps with "
                             "unit granularity (narrow_50, narrow_70, narrow_90)")
    parser.add_argument("--speed_perturb", default="0.9,1.0,1.1", metavar="F,F,...",
                        help="dsnn-prepare --speed_perturb for the training split (default "
                             "0.9,1.0,1.1: the configs/an4.yaml recipe; 1.0: off; docs/pipeline.md)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="Extra config override for every run (repeatable), e.g. "
                             "--set model.lstm_units=[160,160].")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = shlex.join([".venv/bin/python", "bench/an4_comparison.py",
                          *(sys.argv[1:] if argv is None else argv)])
    try:
        _run(args, command)
    except (DsnnError, ValueError, OSError) as error:
        print(f"an4_comparison: error: {error}", file=sys.stderr)
        return 1
    return 0


def _run(args: argparse.Namespace, command: str) -> None:
    from dsnn_keras.config import apply_overrides, load_config
    from pipeline.speed import format_factors, parse_speed_factors

    stages = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f"--only: unknown stage(s) {unknown}; expected some of {list(STAGES)}")
    out_dir = args.out_dir.resolve()
    data_dir = out_dir / "data"
    base = load_config(args.config)
    steps_overrides = step_overrides(base, args.steps)
    common = [*steps_overrides, *args.overrides]
    resolved = apply_overrides(base, common) if common else base
    weight = args.distillation_weight
    if weight is None:
        weight = base.training.distillation_weight if base.training.distillation_weight > 0 else 1.0
    runs = plan_runs(DEFAULT_LEVELS, weight, common)
    if args.narrow:
        runs += narrow_runs(narrow_widths(resolved, DEFAULT_LEVELS), common)
    if args.runs:
        wanted = [r.strip() for r in args.runs.split(",") if r.strip()]
        names = [spec.name for spec in runs]
        missing = sorted(set(wanted) - set(names))
        if missing:
            raise ValueError(f"--runs: unknown run(s) {missing}; expected some of {names}")
        selected = [spec for spec in runs if spec.name in wanted]
    else:
        selected = runs
    speakers = an4_speakers(args.an4) if args.an4.is_dir() else []
    dev_speakers = pick_dev_speakers(speakers, args.dev_speakers) if speakers else []

    env = job_environment(args.jobs)
    plan = ComparisonSteps(out_dir, args.an4, args.config, dev_speakers, args.vocab_size, args.tokenizer_type,
                           resolved.feature_config().to_dict(), args.jobs, env,
                           speed_perturb=format_factors(parse_speed_factors(args.speed_perturb)))
    if "prepare" in stages:
        if speakers:
            plan.prepare()
        elif (data_dir / "dataset.json").is_file():
            _log(f"prepare: AN4 not found at {args.an4}; keeping {data_dir}")
        else:
            raise ComparisonError(f"AN4 not found at {args.an4} (use --an4 or DSNN_DATA_DIR)")

    def train_and_eval(spec: RunSpec) -> None:
        if "train" in stages:
            plan.train(spec)
        if "eval" in stages:
            plan.evaluate(spec)
        if "beam" in stages:
            plan.evaluate_beam(spec)

    started = time.perf_counter()
    # Longest runs first (the DSNN runs cost ~3x a single run), so the pool drains evenly.
    ordered = sorted(selected, key=lambda spec: spec.kind != "dsnn")
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        failures = [f.exception() for f in [pool.submit(train_and_eval, spec) for spec in ordered]]
    failures = [error for error in failures if error is not None]
    if failures:
        raise failures[0]
    if {"train", "eval", "beam"} & set(stages):
        elapsed = time.perf_counter() - started
        _log(f"{'/'.join(s for s in stages if s in ('train', 'eval', 'beam'))} stages: {elapsed:.0f} s wall "
             f"with --jobs {args.jobs}")
        if len(selected) == len(runs) and "train" in stages:   # the figure the report quotes
            (out_dir / "comparison_time.json").write_text(json.dumps(
                {"train_eval_wall_s": elapsed, "jobs": args.jobs}, indent=2) + "\n")

    if "report" in stages:
        dataset_meta = _read_json(data_dir / "dataset.json") or {}
        splits = dataset_meta.get("splits", {})
        setup = {
            "an4_dir": str(args.an4), "dev_speakers": dev_speakers,
            "train_utterances": splits.get("train", {}).get("num_utterances"),
            "dev_utterances": splits.get("dev", {}).get("num_utterances"),
            "model_description": _model_description(resolved),
            "steps": resolved.training.total_steps, "base_config": str(args.config),
            "levels": list(DEFAULT_LEVELS), "distillation_weight": weight,
            "machine": machine_description(),
        }
        results = collect_results(out_dir, runs, DEFAULT_LEVELS, setup, command)
        write_report(args.report, render_report(results), results)


if __name__ == "__main__":
    sys.exit(main())
