"""Shared-weights export: ONE copy of each pruned weight + a uint8 level code, every level from it.

The default export (`tflite.graph`) stores a dense constant copy of every weight per level (a file
of about K times one model). Nested masks make that redundant: level i keeps weight j exactly when
``code[j] > i``, where ``code`` counts the levels that keep it (`dsnn_keras.nested_masks`). This
module stores each weight that differs between levels once (float32, float16 or int8 with
per-output-channel scales) plus its code (uint8), and builds the level's weights in the graph.

Masking on every invoke costs time (DESIGN.md §4: 1.14-1.25x), so the masked weights are
*materialised* into TFLite resource variables only when the requested level differs from the one
cached in the interpreter (a builtin ``IF`` around ``ASSIGN_VARIABLE``); an invoke at the cached
level only reads the variables (``READ_VARIABLE``, a copy) and runs the fused LSTM kernels on them.
A variable's initial value is stored in the file, so it is the densest level's stored weights: the
very constant the masking reads, which the converter deduplicates (stored once). The model body
runs inside an ``IF`` as in the default export; LiteRT re-allocates the branch on every invoke,
which zeroes the fused LSTM state, so each utterance is independent. Variables are per interpreter:
the first invoke, and every invoke after a level change, pays the materialisation.

Constant codes are protected from the converter's constant folding (which would turn a uint8
constant plus a ``CAST`` into a float32 constant, 4x larger) by slicing them with an offset that
depends on the runtime level (always 0).

Example:
    >>> module = SharedWeightsModule(models, FeatureConfig(), blank_id=128, storage="int8")
    >>> data = convert_shared(module)
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tflite.graph import RecognizerModule

STORAGE_CHOICES = ("float32", "float16", "int8")
DESIGN_SHARED = "shared_weights_cached"
# Tensors smaller than this stay float constants in int8 storage (biases, norms): negligible bytes.
INT8_MIN_ELEMENTS = 1024


class SharedWeightsError(ValueError):
    """The level models cannot be described by one set of weights and nested level codes."""


@dataclasses.dataclass(frozen=True)
class SharedTensor:
    """One weight stored once for all levels.

    Attributes:
        index: Position in ``model.get_weights()``.
        name: The variable's name (for messages).
        values: float32 weights of the densest level.
        codes: uint8 level codes (level i keeps ``codes > i``), or None when every level is identical.
    """

    index: int
    name: str
    values: np.ndarray
    codes: np.ndarray | None


def level_codes_from_models(models: Sequence) -> list[SharedTensor]:
    """Finds, per weight tensor, the densest level's values and the nested level codes.

    Args:
        models: K plain same-architecture tf_keras models, level 0 densest, whose weights are one
            set of values masked by nested masks (e.g. ``dsnn_keras.strip_nested(model, i)``).

    Returns:
        One `SharedTensor` per weight of ``models[0]`` (``codes`` None where all levels agree).

    Raises:
        SharedWeightsError: a level is not the densest level's values masked by a nested mask.

    Example:
        >>> [t.codes is not None for t in level_codes_from_models(models)][:3]
        [False, True, True]
    """
    per_level = [m.get_weights() for m in models]
    names = [w.name for w in models[0].weights]
    result = []
    for index, values in enumerate(per_level[0]):
        values = np.asarray(values, np.float32)
        levels = [np.asarray(p[index], np.float32) for p in per_level]
        if all(np.array_equal(values, other) for other in levels[1:]):
            result.append(SharedTensor(index, names[index], values, None))
            continue
        kept = np.stack([other != 0 for other in levels])
        codes = kept.sum(axis=0).astype(np.uint8)
        for level, other in enumerate(levels):
            rebuilt = np.where(codes > level, values, np.float32(0))
            if not np.array_equal(rebuilt, other):
                raise SharedWeightsError(
                    f"weight {names[index]!r}: level {level} is not level 0's weights under a nested mask "
                    "(a weight is kept at a sparser level but dropped at a denser one, or its value "
                    "differs); the shared-weights design needs nested masks")
        result.append(SharedTensor(index, names[index], values, codes))
    return result


def _weight_slots(model) -> list[tuple[object, str]]:
    """(owner object, attribute name) of each variable in ``model.weights`` order."""
    slots = []
    for variable in model.weights:
        found = None
        for layer in model.layers:
            for owner in (layer, getattr(layer, "cell", None)):
                if owner is None:
                    continue
                for attribute, value in vars(owner).items():
                    if value is variable:
                        found = (owner, attribute)
                        break
                if found:
                    break
            if found:
                break
        if found is None:
            raise SharedWeightsError(f"cannot find the layer attribute holding weight {variable.name!r}")
        slots.append(found)
    return slots


def _quantize_int8(values: np.ndarray, channel_axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8: ``values ~= q * scale`` (scale broadcastable to values)."""
    axes = tuple(a for a in range(values.ndim) if a != channel_axis % values.ndim)
    scale = np.abs(values).max(axis=axes, keepdims=True) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.round(values / scale), -127, 127).astype(np.int8)
    return q, scale


class SharedWeightsModule(RecognizerModule):
    """`RecognizerModule` whose levels share one stored copy of the weights.

    Every weight that differs between levels (and, for int8/float16 storage, every weight with at
    least `INT8_MIN_ELEMENTS` elements) lives in a resource variable of the storage dtype whose
    initial value is the densest level's stored weights; the same constant feeds the masking, so the
    converter stores it once. On a level change the level's weights are written into the variable
    (``code > level``); every invoke reads the variables and, for int8/float16, converts them to
    float32 (``CAST`` and, for int8, a per-channel ``MUL``).

    Args:
        models: K plain same-architecture models with nested masks (see `level_codes_from_models`).
        feature_config: `FeatureConfig` of the in-graph frontend.
        blank_id: CTC blank id.
        min_frames: Features shorter than this are padded with silence. Defaults to 1.
        storage: ``"float32"``, ``"float16"`` or ``"int8"`` (symmetric, per output channel) for the
            stored weights; compute is float32 either way. Defaults to "float32".
    """

    def __init__(self, models: Sequence, feature_config, blank_id: int, min_frames: int = 1,
                 storage: str = "float32"):
        if storage not in STORAGE_CHOICES:
            raise ValueError(f"storage must be one of {STORAGE_CHOICES}, got {storage!r}")
        tensors = level_codes_from_models(models)
        super().__init__([models[0]], feature_config, blank_id, min_frames=min_frames, force_if=True)
        self._num_shared_levels = len(models)
        self._storage = storage
        self._slots = _weight_slots(models[0])
        self._tensors = tensors
        # (SharedTensor, stored values, codes in the stored layout or None, scale or None, transposed)
        self._stored = []
        for tensor in tensors:
            if tensor.codes is None and (storage == "float32" or tensor.values.size < INT8_MIN_ELEMENTS):
                continue
            # LSTM kernels are stored [4 * units, inputs]: the converter transposes the Keras
            # [inputs, 4 * units] kernel of a fused LSTM, and transpose(transpose(x)) folds away, so
            # no TRANSPOSE op runs per invoke.
            transposed = isinstance(self._slots[tensor.index][0], keras.layers.LSTMCell) and tensor.values.ndim == 2
            values = tensor.values.T.copy() if transposed else tensor.values
            codes = None if tensor.codes is None else (tensor.codes.T.copy() if transposed else tensor.codes)
            scale = None
            if storage == "int8":
                values, scale = _quantize_int8(values, channel_axis=0 if transposed else -1)
            elif storage == "float16":
                values = values.astype(np.float16)
            self._stored.append((tensor, values, codes, scale, transposed))
        with tf.init_scope():
            self._cached_level = tf.Variable(-1, dtype=tf.int32, name="cached_level")
            self._buffers = [tf.Variable(entry[1], name=f"level_weights_{i}")
                             for i, entry in enumerate(self._stored)]

    @property
    def num_levels(self) -> int:
        return self._num_shared_levels

    def summary(self) -> dict:
        """Counts for the metadata: tensors with level codes, their elements, storage."""
        coded = [t for t in self._tensors if t.codes is not None]
        return {"storage": self._storage, "coded_tensors": len(coded),
                "coded_weights": int(sum(t.values.size for t in coded)),
                "variable_tensors": len(self._stored),
                "variable_weights": int(sum(entry[0].values.size for entry in self._stored))}

    # ---------------------------------------------------------------- graph pieces
    @staticmethod
    def _level_values(values: np.ndarray, codes, level, zero):
        """The stored-dtype weights of ``level``: ``values`` where ``code > level``, else 0."""
        if codes is None:
            return tf.constant(values)
        # Slicing with a runtime offset (always 0) keeps the uint8 codes from being folded into a
        # float32 constant; cost is irrelevant, this runs only on a level change.
        codes = tf.slice(tf.constant(codes.reshape(-1)), [zero], [-1])
        keep = tf.reshape(tf.greater(tf.cast(codes, tf.float32), tf.cast(level, tf.float32)), values.shape)
        return tf.where(keep, tf.constant(values), tf.zeros(values.shape, values.dtype))

    @staticmethod
    def _float_weights(buffer, scale, transposed: bool):
        value = buffer.read_value()
        if value.dtype != tf.float32:
            value = tf.cast(value, tf.float32)
        if scale is not None:
            value = value * tf.constant(scale)
        return tf.transpose(value) if transposed else value

    def _run_model(self, batch, tensors):
        model = self._models[0]
        swapped = []
        for index, value in tensors.items():
            owner, attribute = self._slots[index]
            swapped.append((owner, attribute, getattr(owner, attribute)))
            object.__setattr__(owner, attribute, value)
        try:
            return model(batch, training=False)
        finally:
            for owner, attribute, variable in swapped:
                object.__setattr__(owner, attribute, variable)

    def _select(self, level, batch):
        zero = tf.minimum(tf.abs(level), 0)   # always 0, but not a constant: blocks constant folding

        def materialise():
            for buffer, (_, values, codes, _, _) in zip(self._buffers, self._stored):
                buffer.assign(self._level_values(values, codes, level, zero))
            self._cached_level.assign(level)
            return tf.constant(True)

        changed = tf.not_equal(self._cached_level.read_value(), level)
        done = tf.cond(changed, materialise, lambda: tf.constant(False))

        def run():
            with tf.control_dependencies([done]):
                tensors = {t.index: self._float_weights(b, scale, transposed)
                           for b, (t, _, _, scale, transposed) in zip(self._buffers, self._stored)}
            return self._run_model(batch, tensors)

        # The IF re-allocates its branch on every invoke, which zeroes the fused LSTM state.
        return tf.cond(level >= 0, run, run)


def convert_shared(module: SharedWeightsModule, workdir=None) -> bytes:
    """Converts through a SavedModel (resource variables need it): builtin ops only, no quantization.

    Args:
        module: The `SharedWeightsModule`.
        workdir: Scratch directory for the SavedModel. Defaults to a temporary one.

    Returns:
        The .tflite bytes.
    """
    import tempfile

    functions = module.concrete_functions()
    with tempfile.TemporaryDirectory(dir=workdir) as scratch:
        tf.saved_model.save(module, scratch, signatures=functions)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            scratch, signature_keys=["recognize", "recognize_features"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.experimental_enable_resource_variables = True
        return converter.convert()


_STORAGE_OF_QUANTIZE = {"none": "float32", "float16": "float16", "dynamic-int8": "int8"}


def export_shared_bytes(models: Sequence, feature_config, blank_id: int, min_frames: int,
                        quantize: str) -> tuple[bytes, dict]:
    """Builds and converts the shared-weights graph (what `tflite.export` calls for ``design="shared"``).

    Args:
        models: K plain per-level models with nested masks.
        feature_config: `FeatureConfig` of the in-graph frontend.
        blank_id: CTC blank id.
        min_frames: Fewest feature frames the model accepts.
        quantize: ``"none"`` (float32 storage), ``"float16"`` or ``"dynamic-int8"`` (int8 storage with
            per-channel scales; float32 compute).

    Returns:
        ``(tflite bytes, summary dict for the metadata's export.shared_weights)``.

    Raises:
        tflite.export.ExportError: the levels are not nested, or conversion failed.
    """
    from tflite.export import ExportError

    try:
        module = SharedWeightsModule(models, feature_config, blank_id, min_frames=min_frames,
                                     storage=_STORAGE_OF_QUANTIZE[quantize])
    except SharedWeightsError as error:
        raise ExportError(str(error)) from error
    try:
        data = convert_shared(module)
    except Exception as error:  # noqa: BLE001 - converter errors are long; keep the first line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"TFLite conversion (shared weights) failed: {first}") from error
    return data, module.summary()
