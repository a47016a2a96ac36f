"""Keras callbacks for nested-mask training: step/mask bookkeeping and per-level TensorBoard summaries.

Callbacks do bookkeeping only; the masks themselves are applied by the wrappers' `call`.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from dsnn_keras.sparsity.prune import measured_sparsities, sparsity_levels, update_nested_masks
from dsnn_keras.sparsity.wrapper import collect_nested_wrappers


class UpdateNestedPruningStep(keras.callbacks.Callback):
    """Calls `update_nested_masks(model, optimizer.iterations)` before every training batch.

    The nested counterpart of tfmot's `UpdatePruningStep`: the step comes from the optimizer, so a
    restored model resumes its schedule where it stopped.

    Example:
        >>> model.fit(x, y, epochs=2, callbacks=[UpdateNestedPruningStep()])
    """

    def __init__(self):
        super().__init__()
        self._wrappers = []

    def on_train_begin(self, logs=None):
        self._wrappers = collect_nested_wrappers(self.model)
        if not self._wrappers:
            raise ValueError(
                f"UpdateNestedPruningStep: model {self.model.name!r} has no NestedPruneLowMagnitude layers; "
                "wrap it with prune_nested first"
            )

    def on_train_batch_begin(self, batch, logs=None):
        step = int(keras.backend.get_value(self.model.optimizer.iterations))
        update_nested_masks(self.model, step)


def write_nested_summaries(model, step: int, writer: tf.summary.SummaryWriter | None = None) -> dict[str, float]:
    """Writes per-level sparsity scalars of a nested-wrapped model to TensorBoard.

    Scalars: `nested/level_<i>/sparsity` (measured over all prunable weights),
    `nested/level_<i>/target` (the schedule's sparsity at the wrappers' pruning step) and
    `nested/<weight key>/level_<i>` per prunable weight.

    Args:
        model: A nested-wrapped model.
        step: The summary step.
        writer: A summary writer. Defaults to the default writer (`with writer.as_default():`).

    Returns:
        The scalars written, by name.

    Example:
        >>> writer = tf.summary.create_file_writer("runs/x")
        >>> write_nested_summaries(model, step=100, writer=writer)["nested/level_3/sparsity"]
    """
    scalars = {}
    measured = measured_sparsities(model)
    for key, values in measured.items():
        for i, value in enumerate(values):
            name = f"nested/level_{i}/sparsity" if key == "total" else f"nested/{key}/level_{i}"
            scalars[name] = float(value)
    wrapper = collect_nested_wrappers(model)[0]
    pruning_step = max(int(wrapper.pruning_step.numpy()), 0)
    targets = wrapper.pruning_schedule.sparsities(pruning_step).numpy()
    for i, target in enumerate(targets[: len(sparsity_levels(model))]):
        scalars[f"nested/level_{i}/target"] = float(target)
    context = writer.as_default() if writer is not None else _null_context()
    with context:
        for name, value in scalars.items():
            write_scalar(name, value, int(step))
    if writer is not None:
        writer.flush()
    return scalars


def _scalar_metadata() -> bytes:
    metadata = tf.compat.v1.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"  # what TensorBoard's scalar dashboard reads
    return metadata.SerializeToString()


def write_scalar(name: str, value: float, step: int) -> bool:
    """Writes one TensorBoard scalar to the default writer with TensorFlow's core `tf.summary.write`
    (`tf.summary.scalar` needs the tensorboard package, which dsnn does not install).

    Example:
        >>> with tf.summary.create_file_writer("runs/x").as_default():
        ...     write_scalar("loss", 0.5, step=1)
    """
    return tf.summary.write(name, tf.constant(value, tf.float32), step=step, metadata=_scalar_metadata())


class _null_context:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class NestedPruningSummaries(keras.callbacks.Callback):
    """Logs the per-level sparsity of every prunable weight for TensorBoard.

    The nested counterpart of tfmot's `PruningSummaries`: at the end of each epoch it writes the
    scalars of `write_nested_summaries` to `<log_dir>/metrics`, at the optimizer's step. (It does
    not subclass `keras.callbacks.TensorBoard`, which needs the tensorboard package; add that
    callback too if tensorboard is installed.)

    Args:
        log_dir: TensorBoard directory (non-empty string).

    Example:
        >>> model.fit(x, y, callbacks=[UpdateNestedPruningStep(), NestedPruningSummaries("runs/x")])
    """

    def __init__(self, log_dir: str):
        super().__init__()
        if not isinstance(log_dir, str) or not log_dir:
            raise ValueError(f"log_dir must be a non-empty string, got {log_dir!r}")
        self.log_dir = log_dir
        self._writer = None

    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(self.log_dir + "/metrics")

    def on_epoch_end(self, epoch, logs=None):
        step = int(keras.backend.get_value(self.model.optimizer.iterations))
        write_nested_summaries(self.model, step, self._writer)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
