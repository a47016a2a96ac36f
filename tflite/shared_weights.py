"""Shared-weights export: ONE copy of each pruned weight + a uint8 level code, every level from it.

The default export (`tflite.graph`) stores a dense constant copy of every weight per level (a file
of about K times one model). Nested masks make that redundant: level i keeps weight j exactly when
``code[j] > i``, where ``code`` counts the levels that keep it (`dsnn_keras.sparsity.masks`). This
module stores each weight that differs between levels once (float32, float16 or int8 with
per-output-channel scales) plus its code (uint8), and builds the level's weights in the graph.

Masking on every invoke costs time (docs/measured.md: 1.14-1.25x), so the masked weights are
*materialised* into TFLite resource variables only when the requested level differs from the one
cached in the interpreter (a builtin ``IF`` around ``ASSIGN_VARIABLE``); an invoke at the cached
level only reads the variables (``READ_VARIABLE``, a copy) and runs the fused float32 LSTM kernels
on them. A variable's initial value is stored in the file. With float32 storage it is the densest
level's stored weights: the very constant the masking reads, which the converter deduplicates
(stored once). With int8 / float16 storage the variables are a float32 *cache*: the level change
also dequantizes, so an invoke at the cached level costs what a float32-storage invoke costs; their
initial value (zeros; the cached level starts at -1, so the first invoke materialises before any
read) is computed at load by a ``FILL`` instead of being stored (`shrink_unread_initial_values`),
so no float32 copy is stored. The model body runs inside an ``IF`` as in the default export; LiteRT re-allocates the branch on every invoke,
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

from dsnn_keras.errors import DsnnError
from tflite import rewrites
from tflite.designs.registry import DESIGN_SHARED  # noqa: F401 - its old home
from tflite.errors import ExportError
from tflite.graph import RecognizerModule
from tflite.signatures import SIGNATURES

STORAGE_CHOICES = ("float32", "float16", "int8")
# Every zero initial value of a weight cache with more elements than one becomes a FILL.
CUT_MIN_ELEMENTS = 2
LSTM_GATES = 4
_UNCODED = {"float32": "float32 constants", "float16": "float16 constants (converter)",
            "int8": "int8 constants, hybrid kernels (converter's dynamic-range quantization)"}


class SharedWeightsError(DsnnError, ValueError):
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
    # Sub-layers too: an LSTM's cell, a MultiHeadAttention's EinsumDense projections.
    owners = [owner for layer in model.layers for owner in (layer, *layer.submodules)]
    for variable in model.weights:
        found = {(id(owner), attribute): (owner, attribute) for owner in owners
                 for attribute, value in vars(owner).items() if value is variable}
        if not found:
            raise SharedWeightsError(f"cannot find the layer attribute holding weight {variable.name!r}")
        if len(found) > 1:
            # Replacing one attribute would leave the other holder computing with the old weight.
            holders = sorted(f"{type(owner).__name__}.{attribute}" for owner, attribute in found.values())
            raise SharedWeightsError(f"weight {variable.name!r} is held by several attributes {holders}; "
                                     "the shared-weights design needs exactly one")
        slots.append(next(iter(found.values())))
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

    Every weight that differs between levels is read from a float32 resource variable (weights all
    levels share stay constants; for int8/float16 the converter quantizes them). On a level change
    the level's weights are written into it (``code > level``; for int8/float16 storage dequantized
    on the way: ``CAST`` and, for int8, a per-channel ``MUL``); every invoke reads the variables.
    Float32 storage: the variable's initial value is the densest level's weights, the same constant
    the masking reads (stored once). int8/float16 storage: the initial value is zeros, which
    `convert_shared` computes at load (``FILL``) instead of storing them.

    Args:
        models: K plain same-architecture models with nested masks (see `level_codes_from_models`).
        feature_config: `FeatureConfig` of the in-graph frontend.
        blank_id: CTC blank id.
        min_frames: Features shorter than this are padded with silence. Defaults to 1.
        storage: ``"float32"``, ``"float16"`` or ``"int8"`` (symmetric, per output channel) for the
            stored weights of the pruned layers, whose compute is float32 either way.
            Defaults to "float32".
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
        # (SharedTensor, transposed, [(stored values, codes or None, scale or None) per variable]),
        # in the stored layout; LSTM kernels have one variable per gate.
        self._stored = []
        self.folded_concat_splits = 0   # set by `convert_shared`
        for tensor in tensors:
            # Weights every level shares stay constants, so their ops keep the fast constant-weight
            # kernels; with int8/float16 storage the converter quantizes them (`convert_shared`).
            if tensor.codes is None:
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
            # One variable per LSTM gate: the fused kernel takes each gate's weights as its own
            # input, so a whole-kernel variable costs a SPLIT_V copy per invoke; per gate, the
            # converter's CONCATENATION -> SPLIT_V pair cancels (`fold_concat_split`).
            count = LSTM_GATES if transposed else 1
            pieces = [tuple(np.split(part, count, axis=0)) if part is not None else (None,) * count
                      for part in (values, codes, scale)]
            self._stored.append((tensor, transposed, list(zip(*pieces))))
        with tf.init_scope():
            # -1: the first invoke always materialises, so no initial value is ever read.
            self._cached_level = tf.Variable(-1, dtype=tf.int32, name="cached_level")
            self._buffers = [
                [tf.Variable(piece[0] if storage == "float32" else np.zeros(piece[0].shape, np.float32),
                             name=f"level_weights_{i}_{j}")
                 for j, piece in enumerate(pieces)]
                for i, (_, _, pieces) in enumerate(self._stored)]

    @property
    def num_levels(self) -> int:
        return self._num_shared_levels

    def summary(self) -> dict:
        """Counts for the metadata: tensors with level codes, their elements, storage."""
        coded = [t for t in self._tensors if t.codes is not None]
        return {"storage": self._storage, "pruned_weights_compute": "float32",
                "cache": "float32 variables, written on a level change",
                "shared_weights": _UNCODED[self._storage],
                "coded_tensors": len(coded),
                "coded_weights": int(sum(t.values.size for t in coded)),
                "variable_tensors": sum(len(buffers) for buffers in self._buffers),
                "folded_concat_splits": self.folded_concat_splits,
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
    def _level_float_values(values: np.ndarray, codes, scale, level, zero):
        """The float32 weights of ``level`` from int8/float16 storage (dequantized, masked)."""
        # The stored bytes are a uint8 constant sliced at a runtime offset (always 0) and bitcast
        # back, so the converter cannot fold CAST(values) * scale into a float32 constant (which
        # would store the weights as float32 again); it freezes never-assigned variables and folds
        # constants of some sizes, and an int8 SLICE does not legalize to a builtin op.
        raw = tf.slice(tf.constant(values.reshape(-1).view(np.uint8)), [zero], [-1])
        width = values.dtype.itemsize
        stored = tf.bitcast(tf.reshape(raw, [values.size, width]) if width > 1 else raw, tf.as_dtype(values.dtype))
        weights = tf.reshape(tf.cast(stored, tf.float32), values.shape)
        if scale is not None:
            weights = weights * tf.constant(scale)
        if codes is None:
            return weights
        codes_flat = tf.slice(tf.constant(codes.reshape(-1)), [zero], [-1])
        keep = tf.greater(tf.cast(codes_flat, tf.float32), tf.cast(level, tf.float32))
        return weights * tf.reshape(tf.cast(keep, tf.float32), codes.shape)

    @staticmethod
    def _float_weights(buffers, transposed: bool):
        values = [buffer.read_value() for buffer in buffers]
        value = values[0] if len(values) == 1 else tf.concat(values, axis=0)
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
            for buffers, (_, _, pieces) in zip(self._buffers, self._stored):
                for buffer, (values, codes, scale) in zip(buffers, pieces):
                    if self._storage == "float32":
                        buffer.assign(self._level_values(values, codes, level, zero))
                    else:
                        buffer.assign(self._level_float_values(values, codes, scale, level, zero))
            self._cached_level.assign(level)
            return tf.constant(True)

        changed = tf.not_equal(self._cached_level.read_value(), level)
        done = tf.cond(changed, materialise, lambda: tf.constant(False))

        def run():
            with tf.control_dependencies([done]):
                tensors = {t.index: self._float_weights(b, transposed)
                           for b, (t, transposed, _) in zip(self._buffers, self._stored)}
            return self._run_model(batch, tensors)

        # The IF re-allocates its branch on every invoke, which zeroes the fused LSTM state.
        return tf.cond(level >= 0, run, run)


def convert_shared(module: SharedWeightsModule, workdir=None) -> bytes:
    """Converts through a SavedModel (resource variables need it): builtin ops only.

    With int8/float16 storage the converter also quantizes the constants (the weights every level
    shares), and the caches' zero initial values become ``FILL`` ops (`shrink_unread_initial_values`).

    Args:
        module: The `SharedWeightsModule`.
        workdir: Scratch directory for the SavedModel. Defaults to a temporary one.

    Returns:
        The .tflite bytes.
    """
    import tempfile

    functions = module.concrete_functions()
    # Saved from a holder of the functions' variables, as `tflite.convert.convert_module` does: the
    # module itself would also serialise the Keras models inside it (every layer's call functions
    # traced, saved and loaded back by the converter: about half of the conversion time).
    holder = tf.Module(name="dsnn_shared_variables")
    variables = [*module.variables, *(v for function in functions.values() for v in function.variables)]
    holder.captured = list({id(v): v for v in variables}.values())
    with tempfile.TemporaryDirectory(dir=workdir) as scratch:
        tf.saved_model.save(holder, scratch, signatures=functions)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            scratch, signature_keys=list(SIGNATURES))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.experimental_enable_resource_variables = True
        if module._storage == "int8":      # the weights every level shares: hybrid int8 kernels
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif module._storage == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        data = converter.convert()
    # The per-gate variables come back as CONCATENATION -> SPLIT_V in front of each fused LSTM.
    data, module.folded_concat_splits = rewrites.fold_concat_split(data)
    if rewrites.split_fed_lstm_inputs(data):
        raise RuntimeError("a fused LSTM still reads its weights through SPLIT_V after fold_concat_split; "
                           "the file would copy every LSTM weight twice per invoke")
    if module._storage != "float32":
        data, _ = rewrites.shrink_unread_initial_values(data, CUT_MIN_ELEMENTS)
        left = rewrites.zero_initial_values(data, CUT_MIN_ELEMENTS)
        if left:
            raise RuntimeError(f"{left} zero initial value(s) of the float32 weight caches were not replaced; "
                               "the file would hold a float32 copy of the weights")
    return data


# The flatbuffer rewrites moved to tflite.rewrites; the old names stay importable here.
shrink_unread_initial_values = rewrites.shrink_unread_initial_values
_zero_initial_values = rewrites.zero_initial_values
_split_fed_lstm_inputs = rewrites.split_fed_lstm_inputs

STORAGE_OF_QUANTIZE = {"none": "float32", "float16": "float16", "dynamic-int8": "int8"}


def shared_module_for_export(models: Sequence, feature_config, blank_id: int, min_frames: int,
                             quantize: str) -> SharedWeightsModule:
    """The `SharedWeightsModule` of an export with ``quantize`` (`STORAGE_OF_QUANTIZE`).

    Raises:
        ExportError: the levels are not nested.
    """
    try:
        return SharedWeightsModule(models, feature_config, blank_id, min_frames=min_frames,
                                   storage=STORAGE_OF_QUANTIZE[quantize])
    except SharedWeightsError as error:
        raise ExportError(str(error)) from error


def convert_shared_for_export(module: SharedWeightsModule) -> bytes:
    """`convert_shared`, with a failure as a one-line `ExportError`."""
    try:
        return convert_shared(module)
    except Exception as error:  # noqa: BLE001 - converter errors are long; keep the first line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"TFLite conversion (shared weights) failed: {first}") from error


def export_shared_bytes(models: Sequence, feature_config, blank_id: int, min_frames: int,
                        quantize: str) -> tuple[bytes, dict]:
    """Builds and converts the shared-weights graph (what `tflite.designs.shared` does).

    Args:
        models: K plain per-level models with nested masks.
        feature_config: `FeatureConfig` of the in-graph frontend.
        blank_id: CTC blank id.
        min_frames: Fewest feature frames the model accepts.
        quantize: ``"none"`` (float32 storage), ``"float16"`` or ``"dynamic-int8"`` (int8 storage of
            the pruned weights with per-channel scales, float32 compute for them; the weights every
            level shares get the converter's int8 hybrid kernels).

    Returns:
        ``(tflite bytes, summary dict for the metadata's export.shared_weights)``.

    Raises:
        ExportError: the levels are not nested, or conversion failed.
    """
    module = shared_module_for_export(models, feature_config, blank_id, min_frames, quantize)
    return convert_shared_for_export(module), module.summary()
