#!/usr/bin/env python3
"""Multi-corpus training measured on speakers it never heard: FSDD's six speakers held out in folds.

FSDD has six speakers. One held-out speaker is a one-sample measurement (docs/results.md,
"Multi-corpus"), so each fold holds out a different group of them and the figure is pooled over the
folds: every FSDD speaker is decoded exactly once, by a model that never heard him. Each fold trains
one DSNN on AN4 + FSDD (`dsnn-prepare --corpus an4=... --corpus fsdd=...`, the comparison's 10 AN4
dev speakers and the fold's FSDD speakers held out) and reports both held-out splits at every level:

1. ``prepare``: ``dsnn-prepare --corpus an4=AN4/train --corpus fsdd=FSDD/manifest.tsv
   --dev_speakers <10 AN4 speakers>,<the fold's FSDD speakers>`` (+ ``--speed_perturb``,
   ``--augment``, ``--corpus_weight`` as given) into ``OUT/fold_K/data``; its splits ``dev_an4`` and
   ``dev_fsdd`` are the held-out speakers of each corpus.
2. ``train``: ``dsnn-train`` with the base config (default ``configs/an4.yaml``) and ``--set``
   overrides into ``OUT/fold_K/run`` (resumable).
3. ``eval``: ``dsnn-eval --decoder greedy`` on ``dev_an4`` and ``dev_fsdd``.
4. ``beam``: the beam decoder (word 3-gram LM + lexicon from the fold's training transcripts)
   tuned per level on ``dev_an4`` only (``--tune --tune_level all``), then ``dev_fsdd`` decoded with
   those settings: the FSDD figure is never tuned on the speakers it reports.
5. ``report``: per fold and pooled (errors summed over folds / reference words summed), per level,
   both decoders: ``--report`` (Markdown) and the JSON beside it.

Steps are ``dsnn-job`` artifacts (fingerprinted, skipped when up to date, re-made with what follows
when an input changes); re-running the same command resumes.

Example:
    .venv/bin/python bench/fsdd_folds.py --out_dir runs/fsdd_folds --folds 3 --set data.max_batch_size=64
    .venv/bin/python bench/fsdd_folds.py --out_dir runs/fsdd_smoke --steps 30 --fold 0 --report /tmp/f.md
"""
from __future__ import annotations

import argparse
import concurrent.futures
import csv
import dataclasses
import json
import os
import pathlib
import shlex
import sys
import time
from typing import Any, Mapping, Optional, Sequence

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
for _path in (REPO_ROOT, REPO_ROOT / "bench"):
    if str(_path) not in sys.path:   # run as a script from a source checkout
        sys.path.insert(0, str(_path))

import an4_comparison as cmp  # noqa: E402
from dsnn_job.artifacts import (IN_PROGRESS_FILE, StepSpec, fingerprint_file, fingerprint_of,  # noqa: E402
                                fingerprint_tree, read_record, run_step)
from dsnn_keras.errors import DsnnError  # noqa: E402
from dsnn_keras.eval_report import EvalReport  # noqa: E402

STAGES = ("prepare", "train", "eval", "beam", "report")
SPLITS = ("dev_an4", "dev_fsdd")     # the held-out speakers of each corpus (dsnn-prepare --corpus)
TUNE_SPLIT = "dev_an4"
FSDD_WER_GOAL = 0.05                 # issue 18: FSDD held-out speakers, dense level


class FoldsError(DsnnError, RuntimeError):
    """A stage failed or an input is missing; the message says which and where its log is."""


def _log(message: str) -> None:
    print(f"[fsdd_folds {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


cmp._log = _log   # the shared helpers' progress lines carry this script's name


def fsdd_speakers(manifest: pathlib.Path) -> list[str]:
    """The speaker ids of an FSDD manifest (``path<TAB>transcript<TAB>speaker``), sorted."""
    try:
        with manifest.open(newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except OSError as error:
        raise FoldsError(f"{manifest}: cannot read the FSDD manifest ({error.strerror or error})") from None
    if not rows or "speaker" not in rows[0]:
        raise FoldsError(f"{manifest}: expected a TSV with a 'speaker' column (path, transcript, speaker)")
    return sorted({row["speaker"] for row in rows if row.get("speaker")})


def assign_folds(speakers: Sequence[str], folds: int) -> list[list[str]]:
    """Round-robin over the sorted speakers: fold ``k`` holds out speakers ``k, k + folds, ...``.

    Example:
        >>> assign_folds(["a", "b", "c", "d", "e", "f"], 3)
        [['a', 'd'], ['b', 'e'], ['c', 'f']]
    """
    ordered = sorted(set(speakers))
    if not 2 <= folds <= len(ordered):
        raise ValueError(f"--folds must be in [2, {len(ordered)}] (one held-out speaker at least per fold, "
                         f"and some left to train on), got {folds}")
    return [ordered[k::folds] for k in range(folds)]


@dataclasses.dataclass(frozen=True)
class FoldPlan:
    """What every fold shares: the inputs, the recipe and where things go.

    Args:
        out_dir: Output directory (``fold_K/`` per fold, ``logs/``).
        an4: AN4 in LibriSpeech layout (``train/`` is used).
        fsdd_manifest: FSDD's ``manifest.tsv``.
        base_config: Base training config.
        overrides: ``--set`` overrides (step scaling included).
        an4_dev: The AN4 speakers every fold holds out.
        prepare_flags: Extra ``dsnn-prepare`` flags (speed perturbation, augmentation, weights).
        feature_config: The features the models expect (``FeatureConfig.to_dict()``), passed to
            ``dsnn-prepare --feature_config``.
        extra_corpora: ``(name, path)`` of further training corpora (e.g. a ``dsnn-synth`` corpus's
            ``train/``), trained on in every fold, none of their speakers held out.
        env: Environment of the child processes (None: this one's).
    """

    out_dir: pathlib.Path
    an4: pathlib.Path
    fsdd_manifest: pathlib.Path
    base_config: pathlib.Path
    overrides: tuple[str, ...]
    an4_dev: tuple[str, ...]
    prepare_flags: tuple[str, ...]
    feature_config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    extra_corpora: tuple[tuple[str, pathlib.Path], ...] = ()
    env: Optional[Mapping[str, str]] = None

    def fold_dir(self, fold: int) -> pathlib.Path:
        return self.out_dir / f"fold_{fold}"

    def logs(self, fold: int) -> pathlib.Path:
        return self.out_dir / "logs" / f"fold_{fold}"


class Fold:
    """One fold's steps (prepare, train, eval, beam) as `dsnn_job.artifacts` steps."""

    def __init__(self, plan: FoldPlan, index: int, held_out: Sequence[str]):
        self.plan = plan
        self.index = index
        self.held_out = list(held_out)
        self.root = plan.fold_dir(index)
        self.logs = plan.logs(index)

    @property
    def data_dir(self) -> pathlib.Path:
        return self.root / "data"

    @property
    def run_dir(self) -> pathlib.Path:
        return self.root / "run"

    def _record(self, directory: pathlib.Path, stage: str) -> dict[str, Any]:
        record = read_record(directory)
        if record is None:
            raise FoldsError(f"fold {self.index}: {directory} has no finished {stage}; run that stage first")
        return record

    def prepare_argv(self, out: pathlib.Path, features: pathlib.Path) -> list[str]:
        return [cmp.tool("dsnn-prepare"), "--corpus", f"an4={self.plan.an4 / 'train'}",
                "--corpus", f"fsdd={self.plan.fsdd_manifest}",
                *(arg for name, path in self.plan.extra_corpora for arg in ("--corpus", f"{name}={path}")),
                "--dev_speakers", ",".join([*self.plan.an4_dev, *self.held_out]),
                "--tokenizer_type", "char", "--feature_config", str(features), "--out", str(out), "--overwrite",
                *self.plan.prepare_flags]

    def prepare_spec(self) -> StepSpec:
        return StepSpec(f"prepare fold {self.index}", self.data_dir,
                        params={"held_out": [*self.plan.an4_dev, *self.held_out],
                                "flags": list(self.plan.prepare_flags), "feature_config": dict(self.plan.feature_config)},
                        inputs={"an4": fingerprint_tree(self.plan.an4 / "train"),
                                "fsdd": fingerprint_tree(self.plan.fsdd_manifest.parent),
                                "manifest": fingerprint_file(self.plan.fsdd_manifest),
                                **{f"corpus {name}": fingerprint_tree(path) for name, path in self.plan.extra_corpora}})

    def train_spec(self) -> StepSpec:
        return StepSpec(f"train fold {self.index}", self.run_dir, params={"overrides": list(self.plan.overrides)},
                        inputs={"data": self._record(self.data_dir, "prepare")["fingerprint"],
                                "config": fingerprint_file(self.plan.base_config)}, resumable=True)

    def _eval_inputs(self) -> dict[str, str]:
        # The whole training record (its finish time and duration too), not only its spec: a training
        # made again from the same spec (after a lost checkpoint, say) is another model, and its
        # evaluations must follow it.
        return {"run": fingerprint_of(self._record(self.run_dir, "training")),
                "data": self._record(self.data_dir, "prepare")["fingerprint"]}

    def eval_spec(self) -> StepSpec:
        return StepSpec(f"eval fold {self.index}", self.root / "eval", params={"splits": list(SPLITS)},
                        inputs=self._eval_inputs())

    def beam_spec(self) -> StepSpec:
        from dsnn_keras.evaluate import tune_defaults_fingerprint

        return StepSpec(f"beam fold {self.index}", self.root / "beam",
                        params={"splits": list(SPLITS), "tuned_on": TUNE_SPLIT, "tune_level": "all",
                                "tune_defaults": tune_defaults_fingerprint()},
                        inputs=self._eval_inputs())

    def is_current(self, stage: str) -> bool:
        """Whether ``stage``'s output (``eval`` or ``beam``) and everything before it were made with
        this plan: the report pools only such folds."""
        try:
            specs = [self.prepare_spec(), self.train_spec(), {"eval": self.eval_spec, "beam": self.beam_spec}[stage]()]
        except FoldsError:
            return False
        return all((read_record(spec.out) or {}).get("fingerprint") == spec.fingerprint for spec in specs)

    def prepare(self) -> None:
        def action(directory: pathlib.Path) -> None:
            # The prepared features must be the ones the models expect (dsnn-train checks).
            features = self.root / "feature_config.json"
            features.write_text(json.dumps(dict(self.plan.feature_config), indent=2))
            # dsnn-prepare --overwrite replaces only an empty directory or an earlier dataset.
            (directory / IN_PROGRESS_FILE).unlink(missing_ok=True)
            cmp.run_logged(f"prepare fold {self.index}", self.prepare_argv(directory, features),
                           self.logs / "prepare.log")

        self.root.mkdir(parents=True, exist_ok=True)
        run_step(self.prepare_spec(), action, log=_log)

    def train(self) -> None:
        def action(directory: pathlib.Path) -> None:
            config_path = self.root / "config.yaml"
            cmp.write_run_config(self.plan.base_config, self.plan.overrides, config_path)
            timing = cmp.run_logged(f"train fold {self.index}", [
                cmp.tool("dsnn-train"), "--data", str(self.data_dir), "--config", str(config_path),
                "--out", str(directory)], self.logs / "train.log", env=self.plan.env)
            (directory / "train_time.json").write_text(json.dumps(timing, indent=2) + "\n")

        run_step(self.train_spec(), action, log=_log)

    def evaluate(self) -> None:
        def action(directory: pathlib.Path) -> None:
            for split in SPLITS:
                report = directory / f"{split}.json"
                cmp.run_logged(f"eval fold {self.index} {split}", [
                    cmp.tool("dsnn-eval"), str(self.run_dir), "--data", str(self.data_dir), "--split", split,
                    "--out", str(report)], self.logs / f"eval_{split}.log", env=self.plan.env)
                EvalReport.read(report)

        run_step(self.eval_spec(), action, log=_log)

    def evaluate_beam(self) -> None:
        def action(directory: pathlib.Path) -> None:
            decoder = directory / "decoder"
            for split in sorted(SPLITS, key=lambda s: s != TUNE_SPLIT):   # tune first, then reuse its settings
                report = directory / f"{split}.json"
                tune = ["--tune", "--tune_level", "all"] if split == TUNE_SPLIT else []
                cmp.run_logged(f"beam fold {self.index} {split}", [
                    cmp.tool("dsnn-eval"), str(self.run_dir), "--data", str(self.data_dir), "--split", split,
                    "--decoder", "beam", *tune, "--decoder_dir", str(decoder), "--out", str(report)],
                    self.logs / f"beam_{split}.log", env=self.plan.env)
                EvalReport.read(report)

        run_step(self.beam_spec(), action, log=_log)


# ---- results ------------------------------------------------------------------------------------
def _errors(level: Any) -> tuple[int, int]:
    if None in (level.substitutions, level.deletions, level.insertions, level.reference_words):
        raise FoldsError(f"level {level.level}: the evaluation report has no error counts (an older dsnn-eval?)")
    return level.substitutions + level.deletions + level.insertions, level.reference_words


def pooled_wer(reports: Sequence[EvalReport]) -> list[dict[str, Any]]:
    """Per level, word errors summed over ``reports`` / reference words summed (each fold's
    held-out speakers counted once), with each report's own WER beside it."""
    if not reports:
        return []
    sparsities = [level.sparsity for level in reports[0].levels]
    rows = []
    for sparsity in sparsities:
        errors = words = 0
        per_report = []
        for report in reports:
            level = report.at_sparsity(sparsity)
            if level is None:
                raise FoldsError(f"a fold has no level at sparsity {sparsity:g} (the folds differ in levels)")
            e, w = _errors(level)
            errors, words = errors + e, words + w
            per_report.append(level.wer)
        rows.append({"sparsity": sparsity, "wer": errors / words if words else None, "errors": errors,
                     "reference_words": words, "per_fold": per_report})
    return rows


def collect(plan: FoldPlan, folds: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Reads the reports of every fold finished with this plan (`Fold.is_current`; one made with
    other folds, flags or overrides is left out and named in ``stale``):
    ``{"folds": [...], "pooled": {decoder: {split: rows}}, "folds_reported": ..., "stale": [...]}``."""
    out_dir = plan.out_dir
    found: dict[str, dict[str, list[EvalReport]]] = {"greedy": {s: [] for s in SPLITS}, "beam": {s: [] for s in SPLITS}}
    fold_rows, stale = [], []
    for index, held_out in enumerate(folds):
        row: dict[str, Any] = {"fold": index, "held_out_fsdd": list(held_out)}
        fold = Fold(plan, index, held_out)
        for decoder, sub in (("greedy", "eval"), ("beam", "beam")):
            if (out_dir / f"fold_{index}" / sub).exists() and not fold.is_current(sub):
                stale.append(f"fold {index} {sub}")
                continue
            for split in SPLITS:
                path = out_dir / f"fold_{index}" / sub / f"{split}.json"
                if path.is_file():
                    report = EvalReport.read(path)
                    found[decoder][split].append(report)
                    row.setdefault(decoder, {})[split] = {
                        "num_utterances": report.levels[0].num_utterances,
                        "wer": [level.wer for level in report.levels]}
        timing = out_dir / f"fold_{index}" / "run" / "train_time.json"
        if timing.is_file():
            row["train_time"] = json.loads(timing.read_text())
        fold_rows.append(row)
    pooled = {decoder: {split: pooled_wer(reports) for split, reports in by_split.items()}
              for decoder, by_split in found.items()}
    counts = {decoder: {split: len(reports) for split, reports in by_split.items()}
              for decoder, by_split in found.items()}
    return {"folds": fold_rows, "pooled": pooled, "folds_reported": counts, "stale": stale}


def _pct(value: Optional[float]) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _counts(by_split: Mapping[str, int]) -> str:
    return ", ".join(f"{split} {count}" for split, count in by_split.items())


def render_report(results: Mapping[str, Any]) -> str:
    setup = results["setup"]
    lines = [
        "# Multi-corpus model on held-out FSDD speakers (folds)", "",
        f"Generated by `{results['command']}` on {results['date']}.", "",
        f"Each fold trains one DSNN on AN4 + FSDD with the fold's FSDD speakers and AN4's {len(setup['an4_dev'])} "
        f"dev speakers held out, then decodes both held-out splits at every level. Pooled = word errors "
        f"summed over the folds / reference words summed: FSDD's figure covers every speaker once, each "
        f"decoded by a model that never heard him; AN4's held-out speakers are the same in every fold (so "
        f"its pooled figure is the folds' mean). The beam decoder is tuned per level on `{TUNE_SPLIT}` "
        f"only, never on FSDD.", "",
        f"- Base config: `{setup['base_config']}`, overrides: `{' '.join(setup['overrides']) or 'none'}`",
        f"- dsnn-prepare flags: `{' '.join(setup['prepare_flags']) or 'none'}`",
        f"- Folds (held-out FSDD speakers): "
        + "; ".join(f"{i}: {', '.join(s)}" for i, s in enumerate(setup["folds"])), "",
    ]
    pooled = results["pooled"]
    greedy_rows = pooled["greedy"].get("dev_fsdd") or pooled["greedy"].get("dev_an4") or []
    sparsities = [row["sparsity"] for row in greedy_rows] or [
        row["sparsity"] for row in (pooled["beam"].get("dev_fsdd") or pooled["beam"].get("dev_an4") or [])]
    lines += ["| level | AN4 held-out, greedy | AN4 held-out, beam + LM | FSDD held-out, greedy | "
              "FSDD held-out, beam + LM |", "|---|---|---|---|---|"]
    for i, sparsity in enumerate(sparsities):
        cells = []
        for split in SPLITS:
            for decoder in ("greedy", "beam"):
                rows = pooled[decoder].get(split) or []
                cells.append(_pct(rows[i]["wer"]) if i < len(rows) else "–")
        lines.append(f"| {100 * sparsity:.0f} % | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} |")
    counts = results["folds_reported"]
    lines += ["", f"WER in %. Folds reported: greedy {_counts(counts['greedy'])}, beam {_counts(counts['beam'])} "
                  f"(of {len(setup['folds'])}). Goal (issue 18): FSDD held-out ≤ {100 * FSDD_WER_GOAL:.0f} % "
                  f"at the dense level."]
    if results.get("stale"):
        lines += ["", f"Left out, made with other folds, flags or overrides than this command's (re-run them): "
                      f"{', '.join(results['stale'])}."]
    lines += ["", "Per fold (FSDD held-out WER per level, greedy / beam):", ""]
    for row in results["folds"]:
        greedy = row.get("greedy", {}).get("dev_fsdd", {}).get("wer")
        beam = row.get("beam", {}).get("dev_fsdd", {}).get("wer")
        show = lambda values: " / ".join(_pct(v) for v in values) if values else "–"  # noqa: E731
        minutes = row.get("train_time", {}).get("wall_s")
        lines.append(f"- fold {row['fold']} ({', '.join(row['held_out_fsdd'])}): {show(greedy)} | {show(beam)}"
                     + (f" (training {minutes / 60:.0f} min wall)" if minutes else ""))
    return "\n".join(lines) + "\n"


# ---- main ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    data = pathlib.Path(os.environ.get("DSNN_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
    parser = argparse.ArgumentParser(
        description="AN4 + FSDD DSNN models, FSDD's speakers held out in folds; WER per level on each "
                    "corpus's held-out speakers with both decoders. Resumable: re-run the same command.")
    parser.add_argument("--an4", type=pathlib.Path, default=data / "an4", help="AN4 in LibriSpeech layout")
    parser.add_argument("--fsdd", type=pathlib.Path, default=data / "fsdd" / "manifest.tsv",
                        help="FSDD's manifest.tsv (path, transcript, speaker)")
    parser.add_argument("--out_dir", type=pathlib.Path, default=REPO_ROOT / "runs" / "fsdd_folds")
    parser.add_argument("--config", type=pathlib.Path, default=REPO_ROOT / "configs" / "an4.yaml",
                        help="base training config (default: configs/an4.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every fold (repeatable)")
    parser.add_argument("--steps", type=int, default=None,
                        help="step budget (the schedule scaled with it, as bench/an4_comparison.py does)")
    parser.add_argument("--folds", type=int, default=3, help="FSDD speaker folds (default 3: two speakers each)")
    parser.add_argument("--fold", default=None, metavar="K,K",
                        help="train/evaluate only these folds (default: all); the report uses what is finished")
    parser.add_argument("--speed_perturb", default="0.9,1.0,1.1", help="dsnn-prepare --speed_perturb")
    parser.add_argument("--augment", default=None, help="dsnn-prepare --augment (default: none)")
    parser.add_argument("--augment_copies", type=int, default=None, help="dsnn-prepare --augment_copies")
    parser.add_argument("--corpus", dest="extra_corpora", action="append", default=[], metavar="NAME=DIR",
                        help="a further training corpus in every fold (LibriSpeech layout, e.g. the train/ of a "
                             "dsnn-synth corpus), none of its speakers held out (repeatable)")
    parser.add_argument("--corpus_weight", action="append", default=[], metavar="NAME=W",
                        help="dsnn-prepare --corpus_weight (repeatable)")
    parser.add_argument("--only", default=",".join(STAGES), help=f"stages to run, of {','.join(STAGES)}")
    parser.add_argument("--jobs", type=int, default=1,
                        help="folds trained at the same time (each gets cpu_count/jobs TensorFlow threads)")
    parser.add_argument("--report", type=pathlib.Path, default=REPO_ROOT / "docs" / "results_fsdd_folds.md",
                        help="Markdown report; the JSON goes beside it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = shlex.join([".venv/bin/python", "bench/fsdd_folds.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        run(args, command)
    except (DsnnError, ValueError, OSError) as error:
        print(f"fsdd_folds: error: {error}", file=sys.stderr)
        return 1
    return 0


def _selected_folds(text: Optional[str], count: int) -> list[int]:
    if text is None:
        return list(range(count))
    try:
        chosen = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"--fold {text!r}: expected fold numbers, e.g. 0,2") from None
    if not chosen or any(not 0 <= k < count for k in chosen):
        raise ValueError(f"--fold {text!r}: folds are 0..{count - 1}")
    return chosen


def run(args: argparse.Namespace, command: str) -> None:
    from dsnn_keras.config import apply_overrides, load_config
    from dsnn_keras.paths import check_disjoint
    from pipeline.speed import format_factors, parse_speed_factors

    stages = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f"--only: unknown stage(s) {unknown}; expected some of {list(STAGES)}")
    folds = assign_folds(fsdd_speakers(args.fsdd), args.folds)
    chosen = _selected_folds(args.fold, len(folds))
    an4_dev = tuple(cmp.pick_dev_speakers(cmp.an4_speakers(args.an4)))
    base = load_config(args.config)
    overrides = (*cmp.step_overrides(base, args.steps), *args.overrides)
    prepare_flags = ["--speed_perturb", format_factors(parse_speed_factors(args.speed_perturb))]
    if args.augment:
        prepare_flags += ["--augment", args.augment]
    if args.augment_copies is not None:
        prepare_flags += ["--augment_copies", str(args.augment_copies)]
    for weight in args.corpus_weight:
        prepare_flags += ["--corpus_weight", weight]
    out_dir = args.out_dir.resolve()
    resolved = apply_overrides(base, list(overrides)) if overrides else base
    extra = []
    for text in args.extra_corpora:
        name, sep, path = text.partition("=")
        if not sep or not name or name in ("an4", "fsdd") or not pathlib.Path(path).is_dir():
            raise ValueError(f"--corpus {text!r}: expected NAME=DIR with an existing directory and a name other "
                             "than an4 and fsdd")
        extra.append((name, pathlib.Path(path).resolve()))
    # Before anything is written: the steps replace their directories, and a corpus written into
    # would change its fingerprint with every run.
    inputs = {"--an4": args.an4, "--fsdd": args.fsdd.parent, "--config": args.config,
              **{f"--corpus {name}": path for name, path in extra}}
    check_disjoint(args.out_dir, inputs, out_flag="--out_dir")
    for report in (args.report, args.report.with_suffix(".json")):
        check_disjoint(report, inputs, out_flag="--report")
    plan = FoldPlan(out_dir, args.an4.resolve(), args.fsdd.resolve(), args.config.resolve(), tuple(overrides),
                    an4_dev, tuple(prepare_flags), resolved.feature_config().to_dict(), tuple(extra), cmp.job_environment(args.jobs))

    def one_fold(index: int) -> None:
        fold = Fold(plan, index, folds[index])
        for stage, action in (("prepare", fold.prepare), ("train", fold.train), ("eval", fold.evaluate),
                              ("beam", fold.evaluate_beam)):
            if stage in stages:
                action()

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        errors = [f.exception() for f in [pool.submit(one_fold, k) for k in chosen]]
    errors = [e for e in errors if e is not None]
    if errors:
        raise errors[0]
    if "report" in stages:
        results = collect(plan, folds)
        results.update(command=command, date=time.strftime("%Y-%m-%d"), setup={
            "base_config": str(args.config), "overrides": list(overrides), "prepare_flags": prepare_flags,
            "folds": folds, "an4_dev": list(an4_dev), "machine": cmp.machine_description()})
        cmp.write_report(args.report, render_report(results), results)


if __name__ == "__main__":
    sys.exit(main())
