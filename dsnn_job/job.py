"""The main job end to end: synthesize or read speech -> prepare -> train -> tune the beam decoder ->
evaluate -> export -> transcribe -> benchmark -> summary.

Each step writes one directory under ``JobConfig.out`` (its artifact, see `dsnn_job.artifacts`) by
calling, in this process, the typed function behind the ``dsnn-*`` command of that name (the
command's ``main`` only parses its arguments and calls the same function):

============  ================  ==============================================  ==================
step          artifact          function                                        command
============  ================  ==============================================  ==================
synth         ``corpus/``       `pipeline.synth.corpus.write_corpus`            ``dsnn-synth``
prepare       ``data/``         `pipeline.prepare.main` (Beam: argv options)    ``dsnn-prepare``
train         ``run/``          `dsnn_keras.train_run.train_run`                ``dsnn-train``
tune          ``decoder/``      `dsnn_keras.evaluate.tune_decoder`              ``dsnn-eval --tune``
eval          ``eval/``         `dsnn_keras.evaluate.run_evaluation`            ``dsnn-eval``
export        ``export/``       `tflite.cli.export_model`                       ``dsnn-export``
transcribe    ``transcribe/``   `tflite.runtime.Recognizer`                     ``dsnn-transcribe``
bench         ``bench/``        `tflite.cli.benchmark`                          ``dsnn-bench``
push          ``push/``         `dsnn_job.push.push_model`                      (``--push_dir``)
============  ================  ==============================================  ==================

synth runs only when ``corpus`` is ``"synth"``; prepare runs Apache Beam (DirectRunner) and stays
behind its command line, Beam's convention for pipeline options (it also builds the word 3-gram LM
and lexicon from the training transcripts, ``data/lm/``); tune (``decoder="beam"``, the default)
grid-searches the beam decoder's LM weight and word bonus on the ``dev`` split at level 0 into
``decoder/decoder.json`` + ``decoder/lm/`` (the run directory stays as training left it); eval
decodes the held-out speakers greedily into ``eval/eval.json`` and, with the tuned decoder, into
``eval/eval_beam.json``; export writes ``model.tflite`` (carrying the tuned decoder, LM and lexicon)
and ``single/level_<i>.tflite``; transcribe decodes one held-out file at every level (greedy and
beam); bench times the levels against the single-level files, and the file's beam decoder;
push (only with ``push_dir``) copies ``model.tflite``, ``eval.json`` and a model card into
``push_dir/<version>/`` if every level's WER is no worse than the latest pushed version's by more
than ``push_tolerance`` (`dsnn_job.push`), and records the decision in ``push/decision.json``.
A `DsnnError` (or an I/O error) raised by a step's function fails the step with a `StepError`
naming the command.

then ``summary.json``, ``summary.md`` and ``plots/*.png`` in ``out`` (always rewritten; cheap).

``out``, ``corpus``, ``warm_start`` and ``push_dir`` may be URLs (``gs://...``; anything
`dsnn_keras.fileio` reaches): every step reads and writes them through `tf.io.gfile` / Beam's
FileSystems. The steps whose libraries need local files (the synthesiser, the LiteRT interpreter,
matplotlib) work in a local scratch directory that the job copies to or from the URL; a remote
``out`` cannot be locked (a note says so), so only one job may run on it at a time.

Example:
    >>> result = run_job(JobConfig(out=pathlib.Path("demo")))
    >>> result["summary"]["levels"][0]["wer"]
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import sys
import tempfile
import time
from typing import Any, Callable, Iterator, Optional, Sequence

from dsnn_keras import fileio
from dsnn_keras.errors import DsnnError
from dsnn_keras.fileio import AnyPath

from dsnn_job.artifacts import IN_PROGRESS_FILE, StepError, StepRecord, StepSpec, fingerprint_file, fingerprint_tree, run_step

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "demo.yaml"
SYNTH = "synth"
SYNTH_SPLITS = ("train", "dev", "test")   # the splits dsnn-synth writes
AUDIO_SUFFIXES = (".flac", ".wav", ".ogg")
VERIFY_UTTERANCES = 8   # held-out files the export verifies every level of the .tflite with
STEPS = ("synth", "prepare", "train", "tune", "eval", "export", "transcribe", "bench", "push")
DECODERS = ("beam", "greedy")
TUNE_SPLIT = "dev"   # the held-out speakers of a real corpus; the synthetic corpus's dev voices


def _speed_grid() -> dict:
    """The speed stage `tune_decoder` runs and the search's version (part of the tune step's
    fingerprint: a new grid or search re-tunes)."""
    from dsnn_keras.evaluate import tune_defaults_fingerprint

    return tune_defaults_fingerprint()


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """Everything the job's output depends on (besides the code and the input files).

    Args:
        out: Output directory; one sub-directory per step.
        corpus: ``"synth"`` (generate the built-in espeak corpus) or a LibriSpeech-layout directory
            (e.g. ``../shared/data/an4/train``) whose speakers are split into train and held-out dev.
        config: Training config file (YAML/JSON). Defaults to ``configs/demo.yaml``.
        overrides: ``KEY=VALUE`` training config overrides (``dsnn-train --set``).
        num_utterances: Synthetic corpus size (``corpus="synth"`` only).
        seed: Synthetic corpus seed.
        dev_speakers: Held-out speakers of a real corpus (``dsnn-prepare --dev_speakers``: a fraction
            or a comma-separated list).
        tokenizer_type: ``unigram``, ``bpe`` or ``char`` (``dsnn-prepare --tokenizer_type``).
        vocab_size: SentencePiece vocabulary size.
        speed_perturb: ``dsnn-prepare --speed_perturb`` factors, e.g. ``"0.9,1.0,1.1"``; ``"1.0"`` = off
            (then neither passed nor part of the prepare step's fingerprint, so earlier jobs stay cached).
        eval_split: Split to evaluate, transcribe and benchmark on; None: ``test`` for the synthetic
            corpus (held-out voices), ``dev`` (held-out speakers) for a real one.
        decoder: ``"beam"`` (default): add the tune step, evaluate with both decoders, and carry the
            tuned beam decoder with its LM in the file; ``"greedy"``: no tune step, greedy only, no LM
            in the file. The decoder is tuned on ``dev``: for a real corpus that is also the
            evaluated split, so its beam WER is optimistic by the tuning (the summary says so).
        quantize: ``dsnn-export --quantize``.
        design: ``dsnn-export --design``.
        max_wer: ``dsnn-export --max_wer`` gate (fraction), or None.
        baselines: ``"all"`` exports every level alone for the benchmark, ``"dense"`` only level 0.
        bench_threads: Interpreter thread counts to benchmark.
        bench_repeats: Benchmark passes over the utterances.
        bench_utterances: Held-out utterances the benchmark times.
        force: Step names to re-run even if up to date (their downstream steps follow).
        warm_start: A finished run directory the training starts from (weights and nested masks;
            ``dsnn-train --warm_start``), or None.
        push_dir: Directory of pushed versions (``DIR/1/``, ``DIR/2/``, ...): adds the push step.
            None: no push step.
        push_tolerance: How much worse (absolute WER fraction, 0.01 = one point) a level may be
            than the latest pushed version's and still be pushed.
        push_force: Push even if not blessed (worse, or evaluated on other data or levels).
        strategy: ``dsnn-train --strategy`` for the train step (None: the config's
            ``training.strategy``): ``default``, ``mirrored`` or ``tpu``. ``multi_worker`` is
            refused: the job runs every step in this one process, while a multi-worker training
            needs ``dsnn-train`` started on every worker (docs/training.md). Not part of the train
            step's fingerprint: it does not change what a step computes.
        tpu: ``dsnn-train --tpu`` (with ``strategy="tpu"``).
    """

    out: AnyPath
    corpus: str = SYNTH
    config: pathlib.Path = DEFAULT_CONFIG
    overrides: tuple[str, ...] = ()
    num_utterances: int = 3600
    seed: int = 1
    dev_speakers: str = "0.1"
    tokenizer_type: str = "char"
    vocab_size: int = 128
    speed_perturb: str = "1.0"
    eval_split: Optional[str] = None
    decoder: str = "beam"
    quantize: str = "none"
    design: str = "if_tree"
    max_wer: Optional[float] = None
    baselines: str = "all"
    bench_threads: tuple[int, ...] = (1, 2)
    bench_repeats: int = 5
    bench_utterances: int = 8
    force: tuple[str, ...] = ()
    warm_start: Optional[AnyPath] = None
    push_dir: Optional[AnyPath] = None
    push_tolerance: float = 0.0
    push_force: bool = False
    strategy: Optional[str] = None
    tpu: Optional[str] = None

    def __post_init__(self):
        from dsnn_job.push import check_tolerance
        from dsnn_keras.paths import check_disjoint

        if self.corpus != SYNTH and not fileio.isdir(self.corpus):
            raise StepError(f"--corpus: no such directory: {self.corpus} (or use 'synth')")
        if not fileio.isfile(self.config):
            hint = ("" if pathlib.Path(self.config) != DEFAULT_CONFIG else
                    " (the default config ships in the source checkout's configs/; outside it, pass --config)")
            raise StepError(f"--config: no such file: {self.config}{hint}")
        if self.num_utterances < 10:
            raise StepError(f"--num_utterances must be >= 10, got {self.num_utterances}")
        if self.decoder not in DECODERS:
            raise StepError(f"--decoder must be one of {list(DECODERS)}, got {self.decoder!r}")
        if self.decoder == "greedy" and "tune" in self.force:
            raise StepError("--force tune: there is no tune step with --decoder greedy")
        if self.baselines not in ("all", "dense"):
            raise StepError(f"--baselines must be 'all' or 'dense', got {self.baselines!r}")
        if self.bench_repeats < 1 or self.bench_utterances < 1 or not self.bench_threads \
                or min(self.bench_threads) < 1:
            raise StepError("--bench_repeats, --bench_utterances and --bench_threads must be >= 1")
        unknown = sorted(set(self.force) - set(STEPS))
        if unknown:
            raise StepError(f"--force: unknown step(s) {unknown}; steps are {list(STEPS)}")
        if "synth" in self.force and self.corpus != SYNTH:
            raise StepError("--force synth: there is no synth step with a real --corpus; use --force prepare")
        if self.push_dir is None and ("push" in self.force or self.push_force):
            raise StepError("--force push and --push_force need --push_dir")
        check_tolerance(self.push_tolerance)
        from pipeline.speed import format_factors, parse_speed_factors

        try:
            object.__setattr__(self, "speed_perturb", format_factors(parse_speed_factors(self.speed_perturb)))
        except ValueError as error:
            raise StepError(str(error)) from None
        if self.warm_start is not None and not fileio.isdir(self.warm_start):
            raise StepError(f"--warm_start: no such run directory: {self.warm_start}")
        for item in self.overrides:
            if "=" not in item:
                raise StepError(f"--set {item!r}: expected KEY=VALUE")
        from dsnn_keras.config import ConfigError, apply_overrides, load_config
        from dsnn_keras.train_run import with_strategy

        try:  # a bad config or --set fails now, not after synthesis and preparation
            training = apply_overrides(load_config(self.config), self.overrides, where=f"{self.config} with --set")
            training = with_strategy(training, self.strategy, self.tpu, where=f"{self.config} with --strategy/--tpu")
        except ConfigError as error:
            raise StepError(str(error)) from None
        if training.training.strategy == "multi_worker":
            raise StepError("--strategy multi_worker: dsnn-job runs every step in this one process; start "
                            "dsnn-train --strategy multi_worker on every worker instead (docs/training.md, "
                            "'Distributed training'), then evaluate and export its run directory")
        if self.corpus != SYNTH:
            # Raises PathOverlapError (a ValueError): an --out inside the corpus would change the
            # corpus fingerprint with every run (nothing ever cached, an interrupted training
            # discarded), and one holding it could be replaced by a step.
            check_disjoint(self.out, {"--corpus": self.corpus}, out_flag="--out")
        # The source run must outlive the training step (which replaces OUT/run), and pushing must
        # not write into the job's own directories or the corpus.
        check_disjoint(self.out, {"--warm_start": self.warm_start}, out_flag="--out")
        if self.push_dir is not None:
            check_disjoint(self.push_dir, {"--out": self.out,
                                           "--corpus": None if self.corpus == SYNTH else self.corpus},
                           out_flag="--push_dir")

    @property
    def split(self) -> str:
        return self.eval_split or ("test" if self.corpus == SYNTH else "dev")

    @property
    def beam(self) -> bool:
        return self.decoder == "beam"


def _check(name: str, code: int) -> None:
    """Maps the exit status of a command run through its ``main`` (only ``dsnn-prepare``) to the job."""
    if code in (130, 143):   # the step was interrupted (SIGINT / SIGTERM): so is the job
        raise KeyboardInterrupt(f"{name} interrupted")
    if code:
        raise StepError(f"{name} failed (exit status {code}); see the messages above")


# What the commands' ``main``s report as one error line instead of a traceback (dsnn-eval: KeyError too).
STEP_FAILURES = (DsnnError, OSError, ValueError, RuntimeError, KeyError)


@contextlib.contextmanager
def failing_as(command: str) -> Iterator[None]:
    """Turns an error a step's function raises into a `StepError` naming ``command``.

    A `StepError` passes unchanged; KeyboardInterrupt and programming errors (TypeError, ...) propagate.
    """
    try:
        yield
    except StepError:
        raise
    except STEP_FAILURES as error:
        text = error.args[0] if isinstance(error, KeyError) and error.args else error
        message = " ".join(str(text).split()) or type(error).__name__
        raise StepError(f"{command} failed: {message}") from error


class Job:
    """Runs the steps of one `JobConfig` in order; see the module docstring."""

    def __init__(self, config: JobConfig, log: Callable[[str], None] = None):
        self.config = config
        self.out = fileio.as_path(config.out)
        self._scratch: Optional[tempfile.TemporaryDirectory] = None
        self._local_files: dict[str, pathlib.Path] = {}
        self.records: dict[str, StepRecord] = {}
        self._log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self._forced = False  # once a step is forced, everything after it re-runs too
        self._start = time.monotonic()

    def log(self, message: str) -> None:
        elapsed = time.monotonic() - self._start
        self._log(f"[dsnn-job {int(elapsed // 60):02d}:{int(elapsed % 60):02d}] {message}")

    def _run(self, index: int, total: int, spec: StepSpec, action: Callable[[pathlib.Path], None]) -> StepRecord:
        self._forced = self._forced or spec.name in self.config.force
        self.log(f"==> step {index}/{total}: {spec.name} -> {spec.out}")
        record = run_step(spec, action, log=self.log, force=self._forced)
        if record.status != "cached":
            self.log(f"{spec.name}: {record.status} in {record.seconds:.1f} s")
            # A step made again (resumed, forced, or its files were missing) may have a new output
            # under the same fingerprint: everything after it is made again too.
            self._forced = True
        self.records[spec.name] = record
        return record

    # Paths of the artifacts.
    @property
    def corpus_dir(self) -> AnyPath:
        return fileio.join(self.out, "corpus") if self.config.corpus == SYNTH else fileio.as_path(self.config.corpus)

    @property
    def eval_json(self) -> AnyPath:
        return fileio.join(self.out, "eval", "eval.json")

    @property
    def eval_beam_json(self) -> AnyPath:
        return fileio.join(self.out, "eval", "eval_beam.json")

    @property
    def decoder_dir(self) -> AnyPath:
        return fileio.join(self.out, "decoder")

    @property
    def model_path(self) -> AnyPath:
        return fileio.join(self.out, "export", "model.tflite")

    def scratch(self, *parts: str) -> pathlib.Path:
        """A local directory (removed when the job ends) for steps whose libraries need local files."""
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="dsnn-job-")
        path = pathlib.Path(self._scratch.name).joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def local(self, path: AnyPath) -> pathlib.Path:
        """``path`` itself if local; else a local copy in the scratch directory (made once per job)."""
        if fileio.is_local(path):
            return pathlib.Path(path)
        key = os.fspath(path)
        if key not in self._local_files:
            target = self.scratch("inputs", str(len(self._local_files))) / fileio.name(path)
            target.write_bytes(fileio.read_bytes(path))
            self._local_files[key] = target
        return self._local_files[key]

    @contextlib.contextmanager
    def writing_locally(self, directory: AnyPath) -> Iterator[pathlib.Path]:
        """``directory`` itself if local; else a local scratch directory copied into it afterwards."""
        if fileio.is_local(directory):
            yield pathlib.Path(directory)
            return
        local = self.scratch("outputs", fileio.name(directory))
        yield local
        fileio.copy_tree(local, directory)

    def run(self) -> dict[str, Any]:
        """Runs every step (skipping up-to-date ones) and writes the summary; returns it.

        Holds an exclusive lock on ``OUT/.dsnn-job.lock``: a second job on the same directory fails.
        """
        from dsnn_keras.paths import LockedError, exclusive_lock

        if fileio.isfile(self.out):
            raise StepError(f"--out {self.out} exists and is not a directory")
        try:
            with exclusive_lock(self.out, ".dsnn-job.lock", holder="dsnn-job"):
                # A summary of an earlier run must not outlive a failed re-run next to new artifacts.
                for name in ("summary.json", "summary.md"):
                    fileio.remove(fileio.join(self.out, name), missing_ok=True)
                return self._run_steps()
        except LockedError as error:  # raised only on entering: the steps report their own errors
            raise StepError(str(error)) from None
        finally:
            if self._scratch is not None:
                self._scratch.cleanup()
                self._scratch, self._local_files = None, {}

    def _run_steps(self) -> dict[str, Any]:
        c = self.config
        total = len(STEPS) - (c.corpus != SYNTH) - (c.push_dir is None) - (not c.beam)
        index = 0

        def step(spec, action):
            nonlocal index
            index += 1
            return self._run(index, total, spec, action)

        if c.corpus == SYNTH:
            corpus = step(StepSpec("synth", fileio.join(self.out, "corpus"),
                                   params={"num_utterances": c.num_utterances, "seed": c.seed}),
                          self._synth).fingerprint
            prepare_params = {"splits": list(SYNTH_SPLITS)}
        else:
            self.log(f"reading corpus {c.corpus} (file listing fingerprint)")
            corpus = fingerprint_tree(c.corpus)
            prepare_params = {"dev_speakers": c.dev_speakers}
        prepare_params.update(tokenizer_type=c.tokenizer_type, vocab_size=c.vocab_size)
        if c.speed_perturb != "1.0":
            prepare_params["speed_perturb"] = c.speed_perturb
        data = step(StepSpec("prepare", fileio.join(self.out, "data"), params=prepare_params,
                             inputs={"corpus": corpus}), self._prepare).fingerprint
        train_inputs = {"data": data, "config": fingerprint_file(c.config)}
        if c.warm_start is not None:
            from dsnn_keras.warm_start import source_fingerprint

            # None (no checkpoint yet) fails in the step with the trainer's message.
            train_inputs["warm_start"] = source_fingerprint(c.warm_start) or str(c.warm_start)
        run = step(StepSpec("train", fileio.join(self.out, "run"), params={"overrides": list(c.overrides)},
                            inputs=train_inputs, resumable=True), self._train).fingerprint
        eval_inputs = {"run": run, "data": data}
        if c.beam:
            eval_inputs["decoder"] = step(StepSpec("tune", self.decoder_dir,
                                                   params={"split": TUNE_SPLIT, "level": "all",
                                                           "speed_grid": _speed_grid()},
                                                   inputs={"run": run, "data": data}), self._tune).fingerprint
        # Without a decoder the eval step's spec is what it was before the tune step existed.
        evaluation = step(StepSpec("eval", fileio.join(self.out, "eval"), params={"split": c.split},
                                   inputs=eval_inputs), self._eval).fingerprint
        export = step(StepSpec("export", fileio.join(self.out, "export"),
                               params={"quantize": c.quantize, "design": c.design, "max_wer": c.max_wer,
                                       "baselines": c.baselines},
                               inputs={"run": run, "eval": evaluation}), self._export).fingerprint
        step(StepSpec("transcribe", fileio.join(self.out, "transcribe"), params={"split": c.split},
                      inputs={"export": export, "eval": evaluation, "corpus": corpus}), self._transcribe)
        bench = step(StepSpec("bench", fileio.join(self.out, "bench"),
                              params={"threads": list(c.bench_threads), "repeats": c.bench_repeats,
                                      "utterances": c.bench_utterances, "split": c.split},
                              inputs={"export": export, "eval": evaluation, "corpus": corpus}), self._bench).fingerprint
        if c.push_dir is not None:
            from dsnn_job.push import push_dir_fingerprint

            # The push directory's versions are an input: the step is re-made when they change, and
            # a model already pushed is recognised by its SHA-256 (never pushed twice).
            push_dir = pathlib.Path(c.push_dir).resolve() if fileio.is_local(c.push_dir) else c.push_dir
            step(StepSpec("push", fileio.join(self.out, "push"),
                          params={"push_dir": str(push_dir),
                                  "tolerance": c.push_tolerance, "force": c.push_force},
                          inputs={"export": export, "eval": evaluation, "bench": bench,
                                  "pushed": push_dir_fingerprint(c.push_dir)}), self._push)
        from dsnn_job.summary import write_summary

        summary = write_summary(self.out, config=c, steps=list(self.records.values()),
                                wall_seconds=time.monotonic() - self._start)
        self.log(f"summary written to {fileio.join(self.out, 'summary.json')} and {fileio.join(self.out, 'summary.md')}")
        return {"summary": summary, "records": self.records}

    # The steps' actions.
    def _synth(self, directory: pathlib.Path) -> None:
        from pipeline.synth.corpus import SynthConfig, log_progress, write_corpus

        c = self.config
        with failing_as("dsnn-synth"), self.writing_locally(directory) as local:
            manifest = write_corpus(SynthConfig(num_utterances=c.num_utterances, seed=c.seed), local,
                                    overwrite=True, progress=log_progress)
        self.log(f"dsnn-synth: wrote {manifest['num_utterances']} utterances ({manifest['seconds']:.1f} s of audio)")

    def _prepare(self, directory: pathlib.Path) -> None:
        # Beam's convention: the pipeline options are a command line, so the step runs dsnn-prepare's
        # main (which also removes a partial output on SIGINT/SIGTERM and maps them to 130/143).
        from pipeline.prepare import main

        c = self.config
        if c.corpus == SYNTH:
            inputs = [arg for split in SYNTH_SPLITS
                      for arg in ("--input", f"{split}={fileio.join(self.corpus_dir, split)}")]
        else:
            inputs = ["--input", str(self.corpus_dir), "--dev_speakers", c.dev_speakers]
        # dsnn-prepare --overwrite replaces only an empty directory or an earlier dataset: the job's
        # staging directory holds nothing but its step marker, which the prepared dataset replaces.
        fileio.remove(fileio.join(directory, IN_PROGRESS_FILE), missing_ok=True)
        if c.speed_perturb != "1.0":
            inputs += ["--speed_perturb", c.speed_perturb]
        _check("dsnn-prepare", main([*inputs, "--out", str(directory), "--overwrite",
                                     "--tokenizer_type", c.tokenizer_type, "--vocab_size", str(c.vocab_size)]))

    def _train(self, directory: pathlib.Path) -> None:
        from dsnn_keras.train_run import train_run

        with failing_as("dsnn-train"):
            # Passed only when set, so the config's training.strategy applies otherwise.
            options = {key: value for key, value in (("strategy", self.config.strategy), ("tpu", self.config.tpu))
                       if value is not None}
            summary = train_run(fileio.join(self.out, "data"), self.config.config, directory,
                                overrides=self.config.overrides,
                                warm_start=self.config.warm_start, **options)
        dev = " ".join(f"{r['sparsity']:g}:{r['wer']:.3f}" for r in summary.get("dev") or [])
        self.log(f"dsnn-train: done, step {summary['step']}" + (f" dev WER {dev}" if dev else ""))

    def _tune(self, directory: pathlib.Path) -> None:
        from dsnn_keras.evaluate import tune_decoder

        run, data = fileio.join(self.out, "run"), fileio.join(self.out, "data")
        with failing_as("dsnn-eval --tune"):
            result = tune_decoder(run, data, split=TUNE_SPLIT, level="all", out_dir=directory)
        for level, tuned in sorted(result["levels"].items()):
            best, speed = tuned["best"], tuned.get("speed") or {}
            self.log(f"dsnn-eval --tune: level {level}: lm_weight {best['lm_weight']:g}, word_bonus "
                     f"{best['word_bonus']:g}: {TUNE_SPLIT} WER {best['wer']:.1%} (greedy {tuned['greedy_wer']:.1%}); "
                     f"beam_width {speed.get('beam_width', '?')}, beam_threshold {speed.get('beam_threshold', '?')}, "
                     f"token_beam {speed.get('token_beam', '?')}, "
                     f"blank_skip {speed.get('blank_skip', '?')}, token_min_logp {speed.get('token_min_logp', '?')}")

    def _eval(self, directory: pathlib.Path) -> None:
        from dsnn_keras.evaluate import DecoderChoice, markdown_table, run_evaluation

        run, data = fileio.join(self.out, "run"), fileio.join(self.out, "data")
        decoders = [("greedy", self.eval_json, DecoderChoice(decoder="greedy"), [])]
        if self.config.beam:
            decoders.append(("beam", self.eval_beam_json,
                             DecoderChoice(decoder="beam", settings_dir=str(self.decoder_dir)),
                             ["--decoder", "beam", "--decoder_dir", str(self.decoder_dir)]))
        for _, path, choice, flags in decoders:
            out = fileio.join(directory, fileio.name(path))
            with failing_as("dsnn-eval"):
                report = run_evaluation(run, data, split=self.config.split, out=out, decoder=choice,
                                        command=["dsnn-eval", str(run), "--data", str(data),
                                                 "--split", self.config.split, *flags, "--out", str(out)])
            sys.stdout.write(markdown_table(report.to_dict()))

    def _export(self, directory: pathlib.Path) -> None:
        from tflite.cli import export_model
        from tflite.export import ExportOptions

        c = self.config
        with failing_as("dsnn-export"):
            report = export_model(
                fileio.join(self.out, "run"), fileio.join(directory, fileio.name(self.model_path)),
                options=ExportOptions(quantize=c.quantize, design=c.design), max_wer=c.max_wer,
                eval_path=self.eval_json, single_level_dir=fileio.join(directory, "single"),
                single_levels=[0] if c.baselines == "dense" else None,
                with_decoder=c.beam, decoder_dir=self.decoder_dir if c.beam else None,
                # Verify every level of the file on held-out real speech too, through both signatures
                # (a quantized frontend once passed verification on synthetic clips alone).
                verify_audio=[str(self.local(u["path"])) for u in self.held_out()[:VERIFY_UTTERANCES]])
        self.log(f"dsnn-export: wrote {report.path} ({report.size_bytes} bytes, "
                 f"{len(report.metadata['levels'])} levels, {len(report.verification)} verified)")

    def held_out(self) -> list[dict[str, str]]:
        """The evaluated split's utterances (sorted by id) with their audio files and references."""
        hypotheses = fileio.join(self.out, "eval", "eval_hypotheses.jsonl")
        if not fileio.isfile(hypotheses):
            raise StepError(f"{hypotheses}: missing; the eval step did not finish")
        audio = {}
        for relative in fileio.walk_files(self.corpus_dir):
            stem, suffix = os.path.splitext(fileio.name(relative))
            if suffix.lower() in AUDIO_SUFFIXES:
                audio[stem] = fileio.join(self.corpus_dir, relative)
        result = []
        for line in fileio.read_text(hypotheses).splitlines():
            entry = json.loads(line)
            path = audio.get(entry["utt_id"])
            if path is not None:
                result.append({"utt_id": entry["utt_id"], "path": str(path), "reference": entry["reference"]})
        if not result:
            raise StepError(f"no audio file in {self.corpus_dir} matches the utterances of {hypotheses}")
        return sorted(result, key=lambda e: e["utt_id"])

    def _transcribe(self, directory: pathlib.Path) -> None:
        from tflite.metadata import read_metadata
        from tflite.runtime import Recognizer

        utterance = self.held_out()[0]
        self.log(f"dsnn-transcribe {utterance['path']} at every level (reference: {utterance['reference']!r})")
        levels = []
        model, audio = self.local(self.model_path), str(self.local(utterance["path"]))
        metadata = read_metadata(model)
        for level, sparsity in enumerate(metadata.sparsities):
            start = time.perf_counter()   # load + transcribe: what one dsnn-transcribe call costs
            with failing_as("dsnn-transcribe"):
                recognizer = Recognizer(model, num_threads=1, decoder="greedy")
                text = recognizer.transcribe(audio, level=recognizer.check_level(level))
            seconds = time.perf_counter() - start
            entry = {"level": level, "sparsity": sparsity, "text": text, "seconds": round(seconds, 3)}
            if self.config.beam:   # the decoder the file carries (dsnn-transcribe --decoder beam)
                with failing_as("dsnn-transcribe --decoder beam"):
                    entry["beam_text"] = Recognizer(model, num_threads=1, decoder="beam").transcribe(
                        audio, level=level)
            levels.append(entry)
            self.log(f"level {level} (sparsity {sparsity:g}): {text!r}"
                     + (f", beam: {entry['beam_text']!r}" if "beam_text" in entry else ""))
        fileio.atomic_write(fileio.join(directory, "transcripts.json"), json.dumps(
            {"audio": utterance["path"], "utt_id": utterance["utt_id"], "reference": utterance["reference"],
             "model": str(self.model_path), "levels": levels}, indent=1) + "\n")

    def _bench(self, directory: pathlib.Path) -> None:
        from tflite.bench import to_markdown
        from tflite.cli import benchmark

        c = self.config
        files = [str(self.local(u["path"])) for u in self.held_out()[:c.bench_utterances]]
        singles = fileio.join(self.out, "export", "single")
        if not fileio.is_local(singles):   # LiteRT loads files: the baselines come to the scratch directory
            local_singles = self.scratch("inputs", "single")
            fileio.copy_tree(singles, local_singles)
            singles = local_singles
        with failing_as("dsnn-bench"), self.writing_locally(directory) as local_out:
            result = benchmark(self.local(self.model_path), baseline_dir=singles, utterances=files,
                               limit=c.bench_utterances, threads=c.bench_threads, repeats=c.bench_repeats,
                               out_dir=local_out)
        print(to_markdown(result), end="")

    def _push(self, directory: pathlib.Path) -> None:
        from dsnn_job.push import eval_set_fingerprint, model_card, push_model
        from dsnn_keras.config import load_config
        from dsnn_keras.eval_report import EvalReport
        from dsnn_keras.warm_start import read_warm_start
        from tflite.metadata import read_metadata

        c = self.config
        run = fileio.join(self.out, "run")
        with failing_as("push"):
            report = EvalReport.read(self.eval_json)
            metadata = read_metadata(self.local(self.model_path)).raw
            bench = json.loads(fileio.read_text(fileio.join(self.out, "bench", "bench.json")))
            one_thread = min(bench["threads"])
            latency = {int(r["level"]): r["median_ms"] for r in bench["rows"]
                       if r["kind"] == "multi" and r["file"] == fileio.name(self.model_path)
                       and r["threads"] == one_thread}
            warm = read_warm_start(run)
            job_directory = self.out.resolve() if fileio.is_local(self.out) else self.out
            source = {"job_directory": str(job_directory), "corpus": c.corpus, "config": str(c.config),
                      "overrides": " ".join(c.overrides) or "none"}

            def card(version: int, reason: str) -> str:
                return model_card(version, report=report, model_path=self.model_path, metadata=metadata,
                                  config=load_config(fileio.join(run, "config.yaml")).to_dict(),
                                  data=json.loads(fileio.read_text(fileio.join(self.out, "data", "dataset.json"))),
                                  blessing=reason, warm_start=warm, latency=latency,
                                  versions=(report.created_by or {}).get("versions"), source=source)

            decision = push_model(c.push_dir, self.model_path, self.eval_json, card=card,
                                  tolerance=c.push_tolerance, force=c.push_force,
                                  eval_set=eval_set_fingerprint(fileio.join(self.out, "eval", "eval_hypotheses.jsonl")),
                                  extra={"source": source, "warm_start": warm})
        fileio.atomic_write(fileio.join(directory, "decision.json"), json.dumps(decision.to_dict(), indent=1) + "\n")
        self.log(f"push: {decision.reason}")
        print(f"push: {decision.reason}")


def run_job(config: JobConfig, log: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Runs the whole job for ``config``; returns ``{"summary": ..., "records": ...}``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    return Job(config, log=log).run()


