"""The DSNN trainer: joint training of every sparsity level of one model (sandwich rule).

Each optimizer step: ``update_nested_masks(model, step)``; then, on the same batch, a forward pass
at the densest level, the sparsest level and ``n - 2`` sampled middle levels, each under
``sparsity_level_scope``; their CTC losses (plus optional in-place distillation from the densest
level; both in `dsnn_keras.losses`) are summed, each level's times its ``training.level_weights``
entry (1 by default), and applied with ONE ``apply_gradients``. Dense
warm-up, the gradual nested pruning ramp and joint fine-tuning follow ``config.pruning`` /
``config.training``.

``training.mode: single`` trains the same architecture at one sparsity: it is exactly a DSNN with
the single level ``pruning.single_sparsity`` (K = 1), so it shares this code path.

Example:
    >>> summary = train(load_config("configs/tiny.yaml"), "prepared/", "runs/tiny")
    >>> summary["step"]
    60
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Any, Optional, Sequence, TextIO

import numpy as np
import tensorflow as tf
import tf_keras as keras

import dsnn_keras
from dsnn_keras import fileio
from dsnn_keras.config import Config, ConfigError, config_from_dict, dump_config, load_config
from dsnn_keras.dataset import PreparedDataset
from dsnn_keras.distribute import input_options, make_strategy, split_global_batches, worker_role
from dsnn_keras.errors import DsnnError
from dsnn_keras.paths import exclusive_lock
from dsnn_keras.run_dir import (CHECKPOINT_NAME, list_checkpoints, no_restorable_checkpoint_message,
                                restore_newest)
from dsnn_keras.losses import ctc_loss, distillation_loss, distillation_targets
from dsnn_keras.model import build_pruned_model, output_lengths
from dsnn_keras.specaugment import spec_augment


def _scalar(name: str, value: float, step: int) -> None:
    """Writes a TensorBoard scalar with the raw summary op (no ``tensorboard`` package needed)."""
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    tf.summary.write(name, tf.constant(float(value), tf.float32), step=step, metadata=metadata)


class TrainingError(DsnnError, RuntimeError):
    """Training cannot continue (e.g. too many NaN/Inf steps in a row, a mismatched run dir)."""


LOCK_NAME = ".dsnn-train.lock"            # RUN_DIR/.dsnn-train.lock: one dsnn-train per run directory
UNREADABLE_DIR = "unreadable_checkpoints"  # RUN_DIR/unreadable_checkpoints/: set aside, never overwritten


def _checkpoint_files(checkpoints: fileio.AnyPath, prefix_name: str) -> list[str]:
    """Names of ``checkpoints/<prefix_name>.index`` and ``.data-*`` files (listed: the directory may be remote)."""
    return [entry for entry in fileio.listdir(checkpoints)
            if entry.startswith(prefix_name + ".") and (entry.endswith(".index") or ".data-" in entry)
            and fileio.isfile(fileio.join(checkpoints, entry))]


def set_aside_checkpoint(checkpoints: fileio.AnyPath, prefix_name: str, run_dir: fileio.AnyPath) -> fileio.AnyPath:
    """Moves ``checkpoints/<prefix_name>.*`` into ``RUN_DIR/unreadable_checkpoints/`` (never over a file).

    A resumed run saves its checkpoints under the same names again; moving an unreadable one aside
    keeps it (for inspection or recovery) instead of overwriting it.

    Returns:
        The directory the files went to.
    """
    target = fileio.join(run_dir, UNREADABLE_DIR)
    fileio.makedirs(target)
    files = _checkpoint_files(checkpoints, prefix_name)
    suffix, n = "", 0
    while any(fileio.exists(fileio.join(target, f + suffix)) for f in files):
        n += 1
        suffix = f".{n}"
    for f in files:
        fileio.rename(fileio.join(checkpoints, f), fileio.join(target, f + suffix))
    return target


def sync_checkpoint_index(checkpoints: fileio.AnyPath) -> None:
    """Rewrites ``checkpoints/checkpoint`` (CheckpointManager's index) from the listed checkpoints.

    The manager trusts that file; a garbled one hides every checkpoint from it (the run would start
    over and overwrite them), a stale one names missing files. Written only when it differs.
    """
    found = [fileio.name(prefix) for _, prefix in reversed(list_checkpoints(checkpoints))]  # oldest first
    index = fileio.join(checkpoints, "checkpoint")
    if not found:
        fileio.remove(index, missing_ok=True)
        return
    try:
        state = tf.train.get_checkpoint_state(str(checkpoints))  # None if the file does not parse
    except (tf.errors.OpError, ValueError):
        state = None
    if state is not None and pathlib.PurePath(state.model_checkpoint_path).name == found[-1] \
            and [pathlib.PurePath(p).name for p in state.all_model_checkpoint_paths] == found:
        return
    text = "".join([f'model_checkpoint_path: "{found[-1]}"\n'] +
                   [f'all_model_checkpoint_paths: "{name}"\n' for name in found])
    fileio.atomic_write(index, text)


# ---- pieces that are tested on their own ----------------------------------------------------
def sandwich_levels(num_levels: int, num_sampled: int, rng: np.random.Generator) -> list[int]:
    """The levels run in one step: densest (0), sparsest (K-1) and ``n - 2`` random middle levels.

    Args:
        num_levels: K, the number of levels.
        num_sampled: n, levels per step (clipped to [1, K]); n = K runs every level.
        rng: numpy Generator used to pick the middle levels.

    Returns:
        Sorted level indices, densest first.

    Example:
        >>> sandwich_levels(4, 3, np.random.default_rng(0))
        [0, 2, 3]
    """
    n = max(1, min(num_sampled, num_levels))
    if n == num_levels:
        return list(range(num_levels))
    if n == 1:
        return [0]
    middle = rng.choice(np.arange(1, num_levels - 1), size=n - 2, replace=False) if n > 2 else []
    return sorted({0, num_levels - 1, *(int(m) for m in middle)})


@keras.utils.register_keras_serializable(package="dsnn")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``peak``, an optional hold at ``peak``, then cosine decay to ``final``.

    Args:
        peak: Learning rate after the warm-up.
        warmup_steps: Steps of linear warm-up from ``peak / warmup_steps`` to ``peak``.
        total_steps: Step at which the decay reaches ``final`` (and stays there).
        final: Learning rate at and after ``total_steps``.
        decay_begin_step: Step at which the cosine decay starts; the rate is held at ``peak`` from
            ``warmup_steps`` until then (a warm-up/hold/decay schedule). None starts the decay
            right after the warm-up.
    """

    def __init__(self, peak: float, warmup_steps: int, total_steps: int, final: float,
                 decay_begin_step: Optional[int] = None):
        self.peak, self.warmup_steps, self.total_steps, self.final = peak, warmup_steps, total_steps, final
        self.decay_begin_step = decay_begin_step

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = self.peak * (step + 1.0) / float(max(self.warmup_steps, 1))
        begin = float(self.warmup_steps if self.decay_begin_step is None
                      else max(self.decay_begin_step, self.warmup_steps))
        span = float(max(self.total_steps - begin, 1))
        progress = tf.clip_by_value((step - begin) / span, 0.0, 1.0)
        cosine = self.final + 0.5 * (self.peak - self.final) * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < self.warmup_steps, warm, cosine)

    def get_config(self) -> dict[str, Any]:
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "final": self.final, "decay_begin_step": self.decay_begin_step}


class Progress:
    """A one-line progress bar with ETA on a terminal, plain log lines otherwise (stderr)."""

    def __init__(self, total: int, start: int, stream: TextIO, every: int):
        self.total, self.start, self.stream, self.every = total, start, stream, every
        self.t0 = time.monotonic()
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def update(self, step: int, text: str, force: bool = False) -> None:
        done = step - self.start
        elapsed = time.monotonic() - self.t0
        rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?"
        if self.tty:
            width = 24
            filled = int(width * step / max(self.total, 1))
            bar = "#" * filled + "." * (width - filled)
            self.stream.write(f"\r[{bar}] {step}/{self.total} {rate:.2f} step/s ETA {eta_s} {text}\x1b[K")
            self.stream.flush()
        elif force or step % self.every == 0:
            self.stream.write(f"step {step}/{self.total} ({rate:.2f} step/s, ETA {eta_s}) {text}\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


# ---- run directory ------------------------------------------------------------------------------
# How a run is executed, not what it computes: a run may resume under another value of these.
EXECUTION_KEYS = ("strategy", "tpu")


def _computed(config: Config) -> dict:
    values = config.to_dict()
    for key in EXECUTION_KEYS:
        values["training"].pop(key, None)
    return values


def prepare_run_dir(run_dir: fileio.AnyPath, config: Config, dataset: PreparedDataset) -> None:
    """Creates RUN_DIR (config.yaml, tokenizer.model, dataset.json) or checks that it matches.

    ``run_dir`` and the dataset may each be local or remote (``gs://...``; `dsnn_keras.fileio`).
    The comparison leaves out the `EXECUTION_KEYS` (``training.strategy``, ``training.tpu``):
    a run started on one device may continue on several workers and back.
    """
    fileio.makedirs(run_dir)
    saved = fileio.join(run_dir, "config.yaml")
    if fileio.exists(saved):
        previous = load_config(saved)
        if _computed(previous) != _computed(config):
            diff = _dict_diff(_computed(previous), _computed(config))
            hint = ""
            if previous.data.shuffle_buffer != config.data.shuffle_buffer and config.data.shuffle_buffer is None:
                hint = (f"; a run started before data.shuffle_buffer's default became null (the whole split, "
                        f"2026-12-06) resumes with --set data.shuffle_buffer={previous.data.shuffle_buffer}")
            raise TrainingError(f"{run_dir}: this run directory was started with a different config "
                                f"({diff}); resume with the same config or use a new --out{hint}")
        if fileio.read_bytes(fileio.join(run_dir, "tokenizer.model")) != fileio.read_bytes(dataset.tokenizer_path):
            raise TrainingError(f"{run_dir}: tokenizer.model differs from {dataset.tokenizer_path}; "
                                "resume with the same --data or use a new --out")
        return
    dump_config(config, saved)
    fileio.copy(dataset.tokenizer_path, fileio.join(run_dir, "tokenizer.model"))
    fileio.copy(fileio.join(dataset.root, "dataset.json"), fileio.join(run_dir, "dataset.json"))
    # CMVN constants are part of the model but not variables: keep them with the run (load_run).
    fileio.copy(fileio.join(dataset.root, dataset.metadata["cmvn"]), fileio.join(run_dir, "cmvn.json"))


def _dict_diff(a: dict, b: dict, prefix: str = "") -> str:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            sub = _dict_diff(va, vb, f"{prefix}{key}.")
            if sub:
                out.append(sub)
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return "; ".join(out)


# ---- the trainer --------------------------------------------------------------------------------
@dataclasses.dataclass
class _State:
    step: tf.Variable
    epoch: tf.Variable
    batch_in_epoch: tf.Variable


class Trainer:
    """Builds the model, optimizer, checkpoint and step functions for one run directory.

    Args:
        config: The validated `Config`.
        dataset: The `PreparedDataset` (its features must match ``config.features``).
        run_dir: The run directory (created if needed); local or a URL `tf.io.gfile` writes
            (``gs://...``).
        strategy: A `tf.distribute.Strategy` (`dsnn_keras.distribute.make_strategy`). Defaults
            to the current (default) strategy.
        stream: Where progress goes. Defaults to stderr.
        warm_start: A finished run directory to start from: its weights and nested masks are
            restored before step 0 and the masks stay frozen; optimizer and step counter start
            fresh (`dsnn_keras.warm_start`). A run directory started with one resumes only with
            the same one. Defaults to None.

    Under a multi-worker strategy every worker runs the same loop in lock step; only the chief
    (`dsnn_keras.distribute.worker_role`) writes RUN_DIR (config, checkpoints, train log,
    TensorBoard) and runs the dev evaluation. The other workers restore from the chief's
    ``RUN_DIR/checkpoints`` (RUN_DIR must be on storage every worker reads) and save their
    checkpoints, as `tf.distribute.MultiWorkerMirroredStrategy` requires of every worker, into a
    temporary directory of their own that is deleted after each save.
    """

    def __init__(self, config: Config, dataset: PreparedDataset, run_dir, strategy=None,
                 stream: Optional[TextIO] = None, warm_start=None):
        from dsnn_keras.warm_start import check_resume, check_warm_start

        self.config = config
        self.dataset = dataset
        self.run_dir = fileio.as_path(run_dir)
        self.stream = stream or sys.stderr
        self.strategy = strategy or tf.distribute.get_strategy()
        self.role = worker_role(self.strategy)
        dataset.check_feature_config(config.feature_config())
        # Checked before the run directory is written: a resume needs the same --warm_start, a new
        # run a source whose architecture and tokenizer match.
        self.warm_start = warm_start
        self._warm_record = check_resume(self.run_dir, warm_start,
                                         has_checkpoints=bool(list_checkpoints(fileio.join(self.run_dir, "checkpoints"))))
        self._warm_source = (check_warm_start(warm_start, config, dataset)
                             if warm_start is not None and self._warm_record is None else None)
        if self.role.is_chief:
            prepare_run_dir(self.run_dir, config, dataset)
        self.levels = tuple(config.effective_levels)
        weights = config.training.level_weights if config.training.mode == "dsnn" else None
        if weights is not None and len(weights) != len(self.levels):   # config_from_dict checks it too
            raise TrainingError(f"training.level_weights has {len(weights)} entries for {len(self.levels)} levels")
        self._level_weights = tf.constant(weights or [1.0] * len(self.levels), tf.float32)
        self.blank_id = dataset.blank_id
        self.pieces = dataset.pieces()
        self._dev_utterances = None   # loaded at the first dev evaluation
        t = config.training
        keras.utils.set_random_seed(t.seed)
        # Every op must be deterministic (an op without a deterministic kernel raises instead of
        # varying silently); with the seeded data order, level sampling and SpecAugment, a run is
        # bit-identical whatever the load. Measured cost on this CPU: none within the noise.
        tf.config.experimental.enable_op_determinism()
        with self.strategy.scope():
            self.model = build_pruned_model(config, dataset.feature_config, dataset.vocab_size,
                                            dataset.cmvn_mean, dataset.cmvn_std)
            if t.switch_weight > 0:
                from dsnn_keras.level_switch import LevelSwitchError, check_switchable

                if len(config.effective_levels) < 2:
                    raise TrainingError("training.switch_weight needs two or more levels to switch between")
                try:
                    check_switchable(self.model)
                except LevelSwitchError as error:
                    raise TrainingError(str(error)) from None
            self.lr = WarmupCosineDecay(t.learning_rate, t.warmup_steps, t.total_steps, t.final_learning_rate,
                                        t.decay_begin_step)
            self.optimizer = keras.optimizers.Adam(learning_rate=self.lr, global_clipnorm=t.clip_norm)
            self.optimizer.build(self.model.trainable_variables)
            var = lambda name: tf.Variable(0, dtype=tf.int64, trainable=False, name=name,  # noqa: E731
                                           aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self.state = _State(step=var("step"), epoch=var("epoch"), batch_in_epoch=var("batch_in_epoch"))
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, step=self.state.step, epoch=self.state.epoch,
            batch_in_epoch=self.state.batch_in_epoch)
        self.checkpoint_dir = fileio.join(self.run_dir, "checkpoints")
        self._restored = False   # set by restore()
        self._make_manager()
        self._cmvn_mean = tf.constant(dataset.cmvn_mean)
        self._cmvn_std = tf.constant(dataset.cmvn_std)
        # Traced once each: the signatures leave batch and time dimensions unknown (tracing the
        # multi-level graph costs far more than a step of a small model).
        self._compute = None  # built by batches() from the distributed dataset's element_spec
        self._compute_one = None  # the one-pass step (one_pass_before_pruning), built with it
        # autograph=False here and in _compute: every branch on a tensor is an explicit tf.cond, so
        # autograph's source rewrite (of these functions and every Keras layer they call) only
        # cost time: ~1-3 s per process that traces them (docs/training.md, "Model structure").
        self._apply = tf.function(self._apply_fn, reduce_retracing=True, autograph=False)

    def _make_manager(self) -> None:
        if not self.role.is_chief:
            # TF's multi-worker recipe: every worker saves (a save may need collectives), the
            # others into a scratch directory that is emptied after each save (`_save`).
            self._scratch = pathlib.Path(tempfile.mkdtemp(prefix=f"dsnn-{self.role.task.replace(':', '')}-"))
            self.manager = tf.train.CheckpointManager(self.checkpoint, str(self._scratch), max_to_keep=1,
                                                      checkpoint_name=CHECKPOINT_NAME)
            return
        # The manager's list comes from the index file: rebuild that from the listing first.
        fileio.makedirs(self.checkpoint_dir)
        sync_checkpoint_index(self.checkpoint_dir)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.checkpoint_dir),
                                                  max_to_keep=self.config.training.keep_checkpoints,
                                                  checkpoint_name=CHECKPOINT_NAME)

    def _save(self, step: int) -> None:
        """Saves a checkpoint of ``step`` (every worker must call it; only the chief's is kept)."""
        self.manager.save(checkpoint_number=step)
        if not self.role.is_chief:
            for path in self._scratch.iterdir():
                path.unlink()

    def restore(self, warn=None) -> int:
        """Restores the newest checkpoint that restores; returns its step (0 if there is none).

        Checkpoints are found by listing ``checkpoints/`` (not from the index file). An unreadable
        one (truncated, corrupt) is skipped with a message naming it and why, and moved to
        ``RUN_DIR/unreadable_checkpoints/`` so the resumed run never overwrites it; so is a
        checkpoint's data without its ``.index`` (an interrupted save).

        Raises:
            TrainingError: there are checkpoints but none restores (they are left untouched).
        """
        warn = warn or (lambda message: print(message, file=self.stream, flush=True))
        restored, skipped = restore_newest(self.checkpoint, self.checkpoint_dir, warn=warn)
        if restored is None and skipped:
            raise TrainingError(no_restorable_checkpoint_message(self.checkpoint_dir, skipped))
        self._restored = restored is not None
        if not self.role.is_chief:   # reads the chief's checkpoints; moving files is the chief's job
            return 0 if restored is None else int(self.state.step.numpy())
        indexed = {fileio.name(prefix) for _, prefix in list_checkpoints(self.checkpoint_dir)}
        orphans = sorted({entry.split(".data-")[0] for entry in fileio.listdir(self.checkpoint_dir)
                          if fnmatch.fnmatchcase(entry, CHECKPOINT_NAME + "-*.data-*")} - indexed)
        moved = [fileio.name(prefix) for prefix, _ in skipped] + orphans
        for name in moved:
            target = set_aside_checkpoint(self.checkpoint_dir, name, self.run_dir)
            why = "no .index file: an interrupted save" if name in orphans else "unreadable"
            warn(f"warning: moved checkpoint {name} ({why}) to {target}/; it is kept and never overwritten")
        if moved:
            self._make_manager()
        if restored is None:
            return 0
        if skipped:
            warn(f"resuming from the newest checkpoint that restores: {restored}")
        return int(self.state.step.numpy())

    def output_lengths(self, num_frames):
        """The model's output frames for ``num_frames`` input frames (its front-end's time reduction)."""
        return output_lengths(num_frames, self.config.model)

    def one_pass(self, step: int) -> bool:
        """Whether ``step`` trains the levels as one model (``training.one_pass_before_pruning``).

        True before ``pruning.begin_step`` in a ``dsnn`` run of several levels that computes its own
        masks (not warm-started): every mask is still all ones there, so every level is the dense model.
        """
        return (self.config.training.one_pass_before_pruning and self.config.training.mode == "dsnn"
                and len(self.levels) > 1 and self.warm_start is None
                and step < self.config.pruning.begin_step)

    def step_levels(self, step: int) -> tuple[list[int], Optional[float]]:
        """The levels ``step`` trains (the sandwich rule's draw) and, for a one-pass step, the scale of
        the densest level's loss that stands for them all (None for an ordinary step)."""
        chosen = self.sandwich_draw(step)
        if not self.one_pass(step):
            return chosen, None
        return [0], self.one_pass_scale(chosen)

    def sandwich_draw(self, step: int) -> list[int]:
        """The levels the sandwich rule draws for ``step`` (seeded by the training seed and the step),
        whether or not the step is a one-pass step."""
        return sandwich_levels(len(self.levels), self.config.num_sandwich_levels,
                               np.random.default_rng([self.config.training.seed, step]))

    def one_pass_scale(self, chosen: list[int]) -> float:
        """The scale of the densest level's loss when it stands alone for the levels ``chosen``: their
        summed level weights over the densest level's."""
        weights = self._level_weights.numpy()
        return float(sum(weights[chosen]) / weights[0])

    # -- step functions --
    def _replica_compute(self, batch, levels, step, loss_scale=1.0):
        # A replica's share of a global batch with fewer rows than replicas is empty. Some kernels
        # fail on an empty batch (oneDNN's Conv2D+BiasAdd on AVX-512 CPUs, tf.nn.ctc_loss), so the
        # forward pass is skipped: no loss, zero gradients.
        variables = self.model.trainable_variables
        num_levels = levels.shape[0]

        def empty():
            zeros = tf.zeros([num_levels])
            return ([tf.zeros_like(v) for v in variables], zeros, zeros, tf.constant(0.0), tf.constant(0.0),
                    tf.constant(0.0))

        return tf.cond(tf.shape(batch["features"])[0] > 0,
                       lambda: self._replica_compute_rows(batch, levels, step, loss_scale), empty)

    def _replica_compute_rows(self, batch, levels, step, loss_scale=1.0):
        cfg = self.config
        features, num_frames = batch["features"], batch["num_frames"]
        labels, label_lengths = batch["labels"], batch["label_lengths"]
        frames = tf.shape(features)[1]
        valid = tf.sequence_mask(num_frames, frames)
        # Padding frames get the value that is 0 where the convolutions read, like their own 'same'
        # padding: the CMVN mean (0 after CMVN), or with a running mean normalisation the running
        # mean at the last valid frame (which then stays constant, so every padded frame is 0).
        features = tf.where(valid[..., None], features, self._padding_value(features, valid, num_frames))
        # Tells bad data (NaN/Inf features) from a diverging loss when a step is non-finite.
        bad_inputs = 1.0 - tf.cast(tf.reduce_all(tf.math.is_finite(features)), tf.float32)
        if cfg.data.specaugment is not None:
            # Drawn for the whole global batch and sliced: the same masks whatever the replicas.
            seed = tf.stack([tf.constant(cfg.training.seed, tf.int64), step * 1024])
            rows = batch["first_row"] + tf.range(tf.shape(features)[0])
            features = spec_augment(features, num_frames, cfg.data.specaugment, seed, self._cmvn_mean,
                                    rows=rows, num_rows=batch["global_batch"])
        out_lengths = output_lengths(num_frames, cfg.model)
        global_batch = tf.maximum(tf.cast(batch["global_batch"], tf.float32), 1.0)
        weight = cfg.training.distillation_weight
        level_weights = self._level_weights
        level_losses, distill_losses = [], []
        with tf.GradientTape() as tape:
            teacher = None
            total = 0.0
            for j in range(levels.shape[0]):
                with dsnn_keras.sparsity_level_scope(self.model, levels[j]):
                    logits = self.model(features, training=True)
                loss = ctc_loss(labels, logits, label_lengths, out_lengths, self.blank_id) / global_batch
                level_losses.append(loss)
                level_weight = tf.gather(level_weights, levels[j]) * loss_scale
                total += level_weight * loss
                if weight > 0:
                    if j == 0:
                        teacher = distillation_targets(logits)
                        distill_losses.append(tf.constant(0.0))
                    else:
                        d = distillation_loss(logits, teacher, out_lengths) / global_batch
                        distill_losses.append(d)
                        total += level_weight * weight * d
            switch_loss = tf.constant(0.0)
            if cfg.training.switch_weight > 0:
                # The cut is drawn on the global batch's shortest utterance: the same switch on every
                # replica, so a step computes what a one-device step does.
                shortest = tf.reduce_min(output_lengths(tf.reshape(batch["global_min_frames"], [1]), cfg.model))
                switch_loss = self._switch_loss(features, labels, label_lengths, out_lengths, shortest, step,
                                                global_batch)
                total += cfg.training.switch_weight * switch_loss
        variables = self.model.trainable_variables
        grads = tape.gradient(total, variables)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
        finite = tf.math.is_finite(total)
        for g in grads:
            finite &= tf.reduce_all(tf.math.is_finite(g))
        nonfinite = 1.0 - tf.cast(finite, tf.float32)
        distill = tf.stack(distill_losses) if distill_losses else tf.zeros([levels.shape[0]])
        return grads, tf.stack(level_losses), distill, nonfinite, bad_inputs, switch_loss

    def _switch_loss(self, features, labels, label_lengths, out_lengths, shortest, step, global_batch):
        """CTC loss of one level switch mid-utterance (`dsnn_keras.level_switch`): an ordered pair of
        different levels and a cut in the middle half of the global batch's shortest utterance
        (``shortest`` output frames; so every utterance switches), drawn from (seed, step); 0 when
        that utterance is too short to cut."""
        from dsnn_keras.level_switch import switch_draw, switched_logits

        level_a, level_b, cut = switch_draw(self.config.training.seed, step, len(self.levels), shortest)

        def loss():
            logits = switched_logits(self.model, features, level_a, level_b, cut, training=True)
            return ctc_loss(labels, logits, label_lengths, out_lengths, self.blank_id) / global_batch

        return tf.cond(shortest >= 2, loss, lambda: tf.constant(0.0))

    def _padding_value(self, features, valid, num_frames):
        prior = self.config.model.running_mean_frames
        if not prior:
            return self._cmvn_mean
        normalised = tf.where(valid[..., None], (features - self._cmvn_mean) / self._cmvn_std, 0.0)
        mean = tf.reduce_sum(normalised, axis=1) / tf.cast(prior + num_frames, tf.float32)[:, None]
        return (self._cmvn_mean + self._cmvn_std * mean)[:, None, :]

    def _compute_fn(self, batch, levels, step, loss_scale=1.0):
        if self.warm_start is None:   # a warm-started run keeps its source's masks (dsnn_keras.warm_start)
            dsnn_keras.update_nested_masks(self.model, step)
        grads, losses, distill, nonfinite, bad_inputs, switch = self.strategy.run(
            self._replica_compute, args=(batch, levels, step, loss_scale))
        reduce = lambda x: self.strategy.reduce(tf.distribute.ReduceOp.SUM, x, axis=None)  # noqa: E731
        return grads, reduce(losses), reduce(distill), reduce(nonfinite), reduce(bad_inputs), reduce(switch)

    def _apply_fn(self, grads):
        variables = self.model.trainable_variables

        def apply(g):
            self.optimizer.apply_gradients(zip(g, variables))

        self.strategy.run(apply, args=(grads,))
        self.state.step.assign_add(1)

    # -- evaluation --
    def dev_wer(self, max_utterances: int) -> Optional[list[dict]]:
        """Greedy-decoding WER/CER on the dev split at every level (None if there is no dev split).

        The same code as ``dsnn-eval`` (`dsnn_keras.evaluate.evaluate_model`), one utterance per
        forward pass like the exported model: zero padding shifts the stride-2 convolutions'
        windows (docs/evaluation.md, "Padding").
        """
        from dsnn_keras.evaluate import evaluate_model, load_utterances

        split = self.config.data.dev_split
        if not split or split not in self.dataset.split_names:
            return None
        if self._dev_utterances is None:
            self._dev_utterances = load_utterances(self.dataset, split, max_utterances or None)
        result = evaluate_model(self.model, self._dev_utterances, levels=range(len(self.levels)),
                                sparsities=self.levels, blank_id=self.blank_id, pieces=self.pieces,
                                feature_config=self.dataset.feature_config, batch_size=1,
                                output_lengths=self.output_lengths, num_examples=0)
        return [{"level": r["level"], "sparsity": r["sparsity"], "wer": float(r["wer"]), "cer": float(r["cer"])}
                for r in result["levels"]]

    def _report_shuffle(self, progress: "Progress") -> None:
        progress.message(self.dataset.describe_shuffle(self.config.data.train_split, self.config.data))

    # -- the loop --
    def batches(self):
        """Yields (epoch, batch index in epoch, distributed batch), resuming at the saved position.

        Every input pipeline (one per worker; one per replica under a several-device
        MirroredStrategy, `dsnn_keras.distribute.input_options`) builds the same global batches and
        feeds its replicas their rows (`dsnn_keras.distribute.split_global_batches`): a step trains
        on the same global batch whatever the number of replicas.
        """
        epoch, skip = int(self.state.epoch.numpy()), int(self.state.batch_in_epoch.numpy())
        replicas = self.strategy.num_replicas_in_sync
        while True:
            def per_replica(context, epoch=epoch, skip=skip):
                ds = self.dataset.training_batches(
                    self.config.data.train_split, self.config.data, seed=self.config.training.seed,
                    epoch=epoch, skip_batches=skip, output_lengths=self.output_lengths, min_batch_size=replicas)
                local = context.num_replicas_in_sync // context.num_input_pipelines
                return split_global_batches(ds, context.num_replicas_in_sync,
                                            first_replica=context.input_pipeline_id * local, local_replicas=local)

            index = skip
            distributed = self.strategy.distribute_datasets_from_function(
                per_replica, options=input_options(self.strategy))
            if self._compute is None:
                self._compute = tf.function(self._compute_fn, autograph=False, input_signature=[
                    distributed.element_spec,
                    tf.TensorSpec([self.config.num_sandwich_levels], tf.int32),
                    tf.TensorSpec([], tf.int64)])
                # The one-pass step (`one_pass_before_pruning`): its own trace, one level and a loss scale.
                self._compute_one = tf.function(self._compute_fn, autograph=False, input_signature=[
                    distributed.element_spec, tf.TensorSpec([1], tf.int32), tf.TensorSpec([], tf.int64),
                    tf.TensorSpec([], tf.float32)])
            for batch in distributed:
                index += 1
                yield epoch, index, batch
            if index == 0:
                raise TrainingError(f"{self.dataset.root}: split {self.config.data.train_split!r} gave no "
                                    "usable batch (all utterances too long or too short for their labels)")
            epoch, skip = epoch + 1, 0

    def run(self, max_steps: Optional[int] = None) -> dict:
        """Trains until ``training.total_steps`` (or ``max_steps``); resumes from the last checkpoint.

        Returns:
            A summary dict: ``step``, ``resumed_from``, ``levels``, ``last_losses`` (level -> loss
            of the last step), ``level_visits`` (steps each level was trained in this call), ``dev``.
        """
        cfg = self.config.training
        restored_from = self.restore()
        if self.role.num_workers > 1:
            self._check_workers_agree(restored_from, max_steps)
        stop = cfg.total_steps if max_steps is None else min(max_steps, cfg.total_steps)
        step = int(self.state.step.numpy())
        log_path = fileio.join(self.run_dir, "train_log.jsonl")
        writer = (tf.summary.create_file_writer(str(fileio.join(self.run_dir, "tensorboard"))) if self.role.is_chief
                  else tf.summary.create_noop_writer())
        progress = Progress(stop, step, self.stream, cfg.log_every)
        if restored_from:
            where = self.manager.latest_checkpoint if self.role.is_chief else f"{self.checkpoint_dir} (the chief's)"
            progress.message(f"resumed from {where} at step {restored_from} "
                             f"(epoch {int(self.state.epoch.numpy())}, batch {int(self.state.batch_in_epoch.numpy())})")
        self._report_shuffle(progress)
        warm = self._warm_record
        if self._warm_source is not None and not list_checkpoints(self.checkpoint_dir):
            from dsnn_keras.warm_start import restore_warm_start, write_warm_start

            restored, source_step = restore_warm_start(
                self.model, self._warm_source, warn=lambda message: progress.message(message))
            warm = (write_warm_start(self.run_dir, self._warm_source, restored, source_step) if self.role.is_chief
                    else None)
            progress.message(f"warm start: weights and masks from {restored} (step {source_step}); masks frozen, "
                             "optimizer and step counter fresh")
        self._log(log_path, {"event": "start", "step": step, "resumed_from": restored_from,
                             "levels": list(self.levels), "stop_at": stop,
                             "replicas": self.strategy.num_replicas_in_sync, "workers": self.role.num_workers,
                             "warm_start": warm})
        saved = restored_from   # the same on every worker: each decides alike when to save
        k = len(self.levels)
        window = {"loss": np.zeros(k), "count": np.zeros(k), "distill": np.zeros(k), "switch": np.zeros(2)}
        consecutive_bad, bad_input_steps, last_losses, dev = 0, 0, None, None
        visits = [0] * k
        batches = self.batches() if step < stop else iter(())
        try:
            for epoch, index, batch in batches:
                if step >= stop:
                    break
                chosen, scale = self.step_levels(step)
                if scale is not None:
                    grads, losses, distill, nonfinite, bad_inputs, switch = self._compute_one(
                        batch, tf.constant(chosen, tf.int32), tf.constant(step, tf.int64), tf.constant(scale))
                else:
                    grads, losses, distill, nonfinite, bad_inputs, switch = self._compute(
                        batch, tf.constant(chosen, tf.int32), tf.constant(step, tf.int64))
                self.state.epoch.assign(epoch)
                self.state.batch_in_epoch.assign(index)
                losses = losses.numpy()
                if float(nonfinite.numpy()) > 0:
                    consecutive_bad += 1
                    inputs_bad = float(bad_inputs.numpy()) > 0
                    bad_input_steps += int(inputs_bad)
                    data = f"{self.dataset.root} split {self.config.data.train_split!r}"
                    self._log(log_path, {"event": "nonfinite", "step": step, "epoch": epoch, "batch": index,
                                         "losses": [float(x) for x in losses], "switch_loss": float(switch.numpy()),
                                         "consecutive": consecutive_bad,
                                         "nonfinite_inputs": inputs_bad})
                    progress.message(f"step {step}: " + (f"NaN/Inf input features in this batch of {data}"
                                                         if inputs_bad else "NaN/Inf loss or gradient")
                                     + f", step skipped ({consecutive_bad} in a row)")
                    if consecutive_bad >= cfg.max_consecutive_nonfinite:
                        limit = f"training.max_consecutive_nonfinite={cfg.max_consecutive_nonfinite}"
                        if bad_input_steps:
                            raise TrainingError(
                                f"stopping at step {step}: {consecutive_bad} consecutive steps were non-finite "
                                f"({limit}) and {bad_input_steps} of them had NaN/Inf input features: the "
                                f"data is bad, not the learning rate; check {data} (its features or "
                                "cmvn.json) and re-run dsnn-prepare on clean audio")
                        raise TrainingError(
                            f"stopping at step {step}: {consecutive_bad} consecutive steps had a NaN/Inf "
                            f"loss with finite input features ({limit}); lower training.learning_rate "
                            "or training.clip_norm")
                    continue
                consecutive_bad, bad_input_steps = 0, 0
                self._apply(grads)
                step += 1
                last_losses = {int(l): float(v) for l, v in zip(chosen, losses)}
                for l in chosen:
                    visits[l] += 1
                for l, v, d in zip(chosen, losses, distill.numpy()):
                    window["loss"][l] += v
                    window["distill"][l] += d
                    window["count"][l] += 1
                window["switch"] += (float(switch.numpy()), 1.0)
                progress.update(step, "loss " + " ".join(f"{v:.2f}" for v in losses))
                if step % cfg.log_every == 0 or step == stop:
                    self._log_window(step, window, writer, log_path, progress)
                if cfg.eval_every and step % cfg.eval_every == 0 and step != stop:
                    dev = self._evaluate(step, writer, log_path, progress)
                if step % cfg.checkpoint_every == 0 or step == stop:
                    self._save(step)
                    saved = step
        except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
                tf.errors.DeadlineExceededError) as error:
            if self.role.num_workers == 1:
                raise
            # A collective failed: another worker died or was restarted (the cluster's
            # coordination service aborts the collectives of the others).
            reason = " ".join(str(error).split())[:240]
            raise TrainingError(
                f"{self.role.task}: lost another worker after step {step} ({type(error).__name__}: {reason}); "
                f"restart every worker with the same command: training resumes from the chief's last "
                f"checkpoint (step {saved})") from None
        finally:
            progress.close()
        if saved != step or (step == 0 and not self._restored):
            self._save(step)
        if step > restored_from:
            dev = self._evaluate(step, writer, log_path, progress)
        writer.flush()
        self._log(log_path, {"event": "end", "step": step, "dev": dev})
        if self.role.num_workers > 1:
            # The others wait for the chief's last evaluation: a worker leaving early is reported
            # by the cluster's coordination service as a crash.
            self._gather_from_replicas([step])
        if not self.role.is_chief:
            shutil.rmtree(self._scratch, ignore_errors=True)
        return {"step": step, "resumed_from": restored_from, "levels": list(self.levels),
                "last_losses": last_losses, "level_visits": visits, "dev": dev, "warm_start": warm}

    def _log_window(self, step, window, writer, log_path, progress):
        counts = np.maximum(window["count"], 1)
        mean = window["loss"] / counts
        distill = window["distill"] / counts
        lr = float(self.lr(self.optimizer.iterations - 1))
        sparsity = [float(s) for s in dsnn_keras.measured_sparsities(self.model)["total"]]
        with writer.as_default(step=step):
            _scalar("learning_rate", lr, step)
            for i, s in enumerate(self.levels):
                if window["count"][i]:
                    _scalar(f"loss/level_{i}_sparsity_{s:g}", mean[i], step)
                    if self.config.training.distillation_weight > 0 and i > 0:
                        _scalar(f"distillation/level_{i}_sparsity_{s:g}", distill[i], step)
                _scalar(f"sparsity/level_{i}_target_{s:g}", sparsity[i], step)
        record = {"event": "train", "step": step, "learning_rate": lr,
                  "loss": {str(i): float(mean[i]) for i in range(len(self.levels)) if window["count"][i]},
                  "sparsity": sparsity}
        if self.config.training.distillation_weight > 0:
            record["distillation"] = {str(i): float(distill[i]) for i in range(1, len(self.levels))
                                      if window["count"][i]}
        if self.config.training.switch_weight > 0 and window["switch"][1]:
            record["switch_loss"] = float(window["switch"][0] / window["switch"][1])
            with writer.as_default(step=step):
                _scalar("loss/level_switch", record["switch_loss"], step)
        self._log(log_path, record)
        if not progress.tty:
            progress.message(f"step {step}: lr {lr:.2e} loss " +
                             " ".join(f"L{i}={mean[i]:.3f}" for i in range(len(self.levels)) if window["count"][i])
                             + (f" switch={record['switch_loss']:.3f}" if "switch_loss" in record else "")
                             + " sparsity " + " ".join(f"{s:.2f}" for s in sparsity))
        for key in window:
            window[key][:] = 0

    def _check_workers_agree(self, restored_from: int, max_steps: Optional[int]) -> None:
        """Raises on every worker unless all restored the same step and run the same config.

        A worker that cannot read the chief's checkpoints (RUN_DIR not on shared storage) or was
        started with another config would otherwise train a different model in lock step.
        """
        import hashlib

        text = json.dumps([_computed(self.config), max_steps], sort_keys=True)
        digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") >> 1
        rows = self._gather_from_replicas([restored_from, digest])
        if (rows[:, 1] != rows[0, 1]).any():
            raise TrainingError(f"{self.role.task}: the workers were started with different configs or --max_steps "
                                "(every worker must run the same dsnn-train command)")
        if (rows[:, 0] != rows[0, 0]).any():
            raise TrainingError(
                f"{self.role.task}: the workers restored different steps ({sorted(set(int(s) for s in rows[:, 0]))}); "
                f"every worker must read the chief's {self.checkpoint_dir}: put --out on storage all of them "
                "reach (e.g. gs://... or a shared volume)")

    def _gather_from_replicas(self, values: Sequence[int]) -> np.ndarray:
        """``values`` of every replica, stacked (a collective: every worker must call it)."""
        mine = tf.constant([list(values)], tf.int64)

        @tf.function
        def gather():
            return self.strategy.run(lambda: tf.distribute.get_replica_context().all_gather(tf.identity(mine), axis=0))

        return self.strategy.experimental_local_results(gather())[0].numpy()

    def _evaluate(self, step, writer, log_path, progress):
        if not self.role.is_chief:   # the chief evaluates; the others go on to the next step and wait there
            return None
        dev = self.dev_wer(self.config.training.eval_max_utterances)
        if dev is None:
            return None
        with writer.as_default(step=step):
            for r in dev:
                _scalar(f"dev_wer/level_{r['level']}_sparsity_{r['sparsity']:g}", r["wer"], step)
                _scalar(f"dev_cer/level_{r['level']}_sparsity_{r['sparsity']:g}", r["cer"], step)
        self._log(log_path, {"event": "dev", "step": step, "levels": dev})
        progress.message(f"step {step}: dev WER " + " ".join(
            f"L{r['level']}({r['sparsity']:g})={r['wer']:.3f}" for r in dev))
        return dev

    def _log(self, path: fileio.AnyPath, record: dict) -> None:
        if not self.role.is_chief:
            return
        record = {"time": time.time(), **record}
        fileio.append_text(path, json.dumps(record) + "\n")


def train(config: Config, data_dir, run_dir, max_steps: Optional[int] = None, strategy=None,
          stream: Optional[TextIO] = None, lock: bool = True, warm_start=None) -> dict:
    """Trains (or resumes) a run: see `Trainer` (``warm_start`` too). Returns `Trainer.run`'s summary.

    The chief holds ``RUN_DIR/.dsnn-train.lock`` while it runs (``lock=False``: the caller holds
    it): a second trainer on the same run directory fails at once with
    `dsnn_keras.paths.LockedError`. ``strategy`` None: the one ``config.training.strategy`` names
    (`dsnn_keras.distribute.make_strategy`).
    """
    if strategy is None:
        strategy = make_strategy(config.training.strategy, config.training.tpu)
    if lock and worker_role(strategy).is_chief:
        with exclusive_lock(run_dir, LOCK_NAME, holder="dsnn-train"):
            return train(config, data_dir, run_dir, max_steps=max_steps, strategy=strategy, stream=stream,
                         lock=False, warm_start=warm_start)
    dataset = PreparedDataset.from_dir(data_dir)
    return Trainer(config, dataset, run_dir, strategy=strategy, stream=stream,
                   warm_start=warm_start).run(max_steps=max_steps)
