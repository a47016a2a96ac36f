"""Training a run from files: what ``dsnn-train`` does, as a typed function.

`train_run` takes the paths and ``--set`` overrides the command takes, checks them before anything is
written, holds the run directory's lock and trains (or resumes) through `dsnn_keras.trainer.train`.
``dsnn-train`` (`dsnn_keras.cli.train_main`) only parses its arguments and calls it; ``dsnn-job``
calls it directly.

Example:
    >>> summary = train_run("data/an4", "configs/an4.yaml", "runs/an4_dsnn",
    ...                     overrides=["training.total_steps=200"])  # doctest: +SKIP
    >>> summary["step"]
    200
"""
from __future__ import annotations

import os
import pathlib
from typing import TYPE_CHECKING, Any, Optional, Sequence, TextIO

from dsnn_keras.errors import DsnnUsageError

if TYPE_CHECKING:   # the config module is light, but keep this module's import free of it
    from dsnn_keras.config import Config


class TrainArgumentError(DsnnUsageError, ValueError):
    """An argument of `train_run` is wrong and nothing was written (``dsnn-train`` exits 2)."""


def with_strategy(config: Config, strategy: Optional[str] = None, tpu: Optional[str] = None,
                  where: str = "--strategy/--tpu") -> Config:
    """``config`` with ``training.strategy`` / ``training.tpu`` replaced by the flags that are set.

    Args:
        config: A validated `dsnn_keras.config.Config`.
        strategy: ``--strategy``, or None to keep the config's.
        tpu: ``--tpu``, or None to keep the config's.
        where: Names the source in error messages.

    Returns:
        The validated config.

    Raises:
        ConfigError: an unknown strategy, or a TPU name without ``strategy: tpu``.
    """
    from dsnn_keras.config import config_from_dict

    if strategy is None and tpu is None:
        return config
    values = config.to_dict()
    values["training"].update({key: value for key, value in (("strategy", strategy), ("tpu", tpu))
                               if value is not None})
    return config_from_dict(values, where=where)


def train_run(data_dir: str | os.PathLike, config_path: str | os.PathLike, run_dir: str | os.PathLike, *,
              overrides: Sequence[str] = (), max_steps: Optional[int] = None,
              strategy: Optional[str] = None, tpu: Optional[str] = None,
              stream: Optional[TextIO] = None,
              warm_start: Optional[str | os.PathLike] = None) -> dict[str, Any]:
    """Trains (or resumes) the run in ``run_dir`` on a prepared dataset.

    Every path may be local or a URL `tf.io.gfile` reaches (``gs://...``; `dsnn_keras.fileio`). A
    remote ``run_dir`` is not locked (`dsnn_keras.paths.exclusive_lock`).

    Args:
        data_dir: Prepared dataset directory (``dsnn-prepare`` output).
        config_path: Training config file (YAML/JSON, ``version: 1``).
        run_dir: The run directory; an existing one is resumed (its config must match).
        overrides: ``KEY=VALUE`` config overrides (``dsnn-train --set``). Defaults to none.
        max_steps: Stop (with a checkpoint) at this step; the schedules still follow
            ``training.total_steps``. Defaults to None (train to the end).
        strategy: ``dsnn-train --strategy``: overrides ``training.strategy`` (one of
            `dsnn_keras.distribute.STRATEGIES`). Defaults to None (the config's).
        tpu: ``dsnn-train --tpu``: overrides ``training.tpu``. Defaults to None (the config's).
        stream: Where the trainer's progress lines go. Defaults to stderr.
        warm_start: A finished run directory whose weights and nested masks the new run starts
            from (``dsnn-train --warm_start``; optimizer and step counter start fresh, the masks
            stay frozen: `dsnn_keras.warm_start`). Defaults to None.

    Returns:
        `dsnn_keras.trainer.Trainer.run`'s summary (``step``, ``dev`` rows, ...).

    Raises:
        PathOverlapError: ``run_dir`` is (inside) ``data_dir`` or ``warm_start``, or holds one of them.
        TrainArgumentError: ``max_steps`` < 0, ``run_dir`` is a file, or ``run_dir`` is an average of
            checkpoints (``dsnn-average``), which holds no optimizer state.
        WarmStartError: ``warm_start`` is not a trained run, or its model or tokenizer differs.
        ConfigError: a bad config file or override.
        DatasetError: a bad prepared dataset (checked before ``run_dir`` is created).
        LockedError: another ``dsnn-train`` is using ``run_dir``.
        StrategyError: a malformed ``TF_CONFIG``, or no reachable TPU.
        DsnnError: any other condition the trainer reports (e.g. a run that cannot continue).
    """
    from dsnn_keras import fileio
    from dsnn_keras.paths import check_disjoint, exclusive_lock

    if max_steps is not None and max_steps < 0:
        raise TrainArgumentError("--max_steps must be >= 0")
    # Before anything is written: the run directory must not be (in) the dataset or hold it.
    check_disjoint(run_dir, {"--data": data_dir, "--warm_start": warm_start}, out_flag="--out")
    if fileio.exists(run_dir) and not fileio.isdir(run_dir):
        raise TrainArgumentError(f"--out {run_dir} exists and is not a directory")
    from dsnn_keras.checkpoint_average import read_averaged

    averaged = read_averaged(run_dir) if fileio.isdir(run_dir) else None
    if averaged is not None:
        raise TrainArgumentError(f"--out {run_dir} holds averaged weights (dsnn-average; no optimizer state), not a "
                                 f"run to train on; resume its source {averaged.get('source')} instead")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from dsnn_keras.config import apply_overrides, load_config
    from dsnn_keras.dataset import PreparedDataset

    config = load_config(config_path)
    if overrides:
        config = apply_overrides(config, list(overrides), where=f"{config_path} with --set")
    config = with_strategy(config, strategy, tpu, where=f"{config_path} with --strategy/--tpu")
    PreparedDataset.from_dir(data_dir)  # a bad --data is refused before --out is created
    from dsnn_keras.distribute import make_strategy, worker_role

    # Before any other TensorFlow op: multi_worker configures the collectives at start-up.
    dist = make_strategy(config.training.strategy, config.training.tpu)
    from dsnn_keras.trainer import train

    if not worker_role(dist).is_chief:   # the chief alone writes (and locks) the run directory
        return train(config, data_dir, run_dir, max_steps=max_steps, strategy=dist, stream=stream, lock=False,
                     warm_start=warm_start)
    # One writer per run directory: a second dsnn-train on it fails at once.
    with exclusive_lock(run_dir, ".dsnn-train.lock", holder="dsnn-train"):
        return train(config, data_dir, run_dir, max_steps=max_steps, strategy=dist, stream=stream, lock=False,
                     warm_start=warm_start)
