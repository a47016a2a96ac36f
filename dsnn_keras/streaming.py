"""Streaming inference of a causal recognizer: one chunk of features in, the frames it completes out.

A plain tf_keras recognizer that is a chain of layers (CMVN, a running mean normalisation,
reshapes, zero-padded ``valid`` Conv2D subsampling, LSTMs, Dense layers) and residual blocks of
frame-wise layers, causal convolutions and bounded self-attention (the Conformer's) is run chunk by
chunk with explicit state: a `RunningMeanNorm` keeps the sum and count of the frames so far, each
convolution keeps its last ``kernel - 1`` input frames (a Conv2D also a count of frames it has
seen), each LSTM keeps ``h`` and ``c``, each self-attention the keys and values of the last
``left_context`` frames and how many of them exist yet. All-zero state is the start of a stream
(the zeros are exactly the convolutions' left padding; no cached frame is valid), every state
tensor has a fixed shape, and the concatenated outputs of any chunking equal the whole-utterance
model's output, because a ``valid`` convolution over left-padded input emits a frame only once its
window is complete and a frame's attention reads itself and the ``left_context`` frames before it
only (`dsnn_keras.encoders.conformer.LocalAttentionMask`). A front-end that pads ``same`` in time
looks ahead by an amount that depends on the utterance's length, and attention over the whole past
needs a cache that grows with the utterance: both are refused with the reason.

Residual blocks are found from the graph: the model is cut wherever one tensor alone carries
everything later layers read; a piece of more than one layer (or a layer with several inputs) is a
block, run layer by layer in graph order on the chunk's frames.

State can be kept in a wider layout than the model's own (``state_units``): a level of a
unit-granularity run is a narrower model whose units are a subset (``kept_units``) of the dense
level's, so every level reads and writes the same full-width state: its own units at their dense
positions, zeros elsewhere (what the masked dense model holds in a pruned unit). That is what lets
a stream switch level between chunks.

Example:
    >>> stream = StreamingModel(model)
    >>> state = stream.initial_state()
    >>> logits_a, state = stream.step(features[:37], state)
    >>> logits_b, state = stream.step(features[37:], state)   # concat == model(features)
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tensorflow.compiler.tf2xla.python import xla

from dsnn_keras.encoders.conformer import GatedLinearUnit, LocalAttentionMask
from dsnn_keras.errors import DsnnError
from dsnn_keras.subsampling import running_mean_step

# Layers that act on each frame alone (given a [1, frames, ...] input) and so stream as they are.
_FRAMEWISE = (keras.layers.Dense, keras.layers.Dropout, keras.layers.Activation, keras.layers.Rescaling,
              keras.layers.LayerNormalization, keras.layers.Reshape)


# Convolutions over time that stream inside a block (stride 1, after a causal ZeroPadding1D).
_CONV1D = (keras.layers.Conv1D, keras.layers.DepthwiseConv1D)
# Element-wise merges of frame-aligned inputs (residual connections).
_MERGES = (keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply, keras.layers.Average,
           keras.layers.Maximum, keras.layers.Minimum)


class StreamingError(DsnnError, ValueError):
    """The model cannot be run chunk by chunk (a layer that looks ahead or is not supported)."""


@dataclasses.dataclass(frozen=True)
class StateTensor:
    """One state tensor of a stream.

    Attributes:
        name: Its name, ``state_<layer>_<part>`` (e.g. ``state_lstm_0_h``).
        shape: Its fixed shape.
        dtype: ``"float32"`` or ``"int32"``.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str

    def zeros(self) -> np.ndarray:
        return np.zeros(self.shape, self.dtype)

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclasses.dataclass(frozen=True)
class _ConvStage:
    layer: keras.layers.Conv2D
    time_padding: int      # zero frames the whole-utterance model puts before the first input frame
    end_padding: int       # ... and after the last one: flushed through the convolution at the end
    width_padding: tuple[int, int]
    buffer: StateTensor    # the last kernel - 1 (padded) input frames
    seen: StateTensor      # input frames seen so far
    kept: Optional[np.ndarray]   # the input's channels at these positions of the buffer


@dataclasses.dataclass(frozen=True)
class _LstmStage:
    layer: keras.layers.LSTM
    gates: tuple   # per gate (i, f, g, o): (input kernel [in, u], recurrent kernel [u, u], bias [u])
    h: StateTensor
    c: StateTensor
    kept: Optional[np.ndarray]   # the model's units at these positions of the state


@dataclasses.dataclass(frozen=True)
class _RunningMeanStage:
    layer: keras.layers.Layer   # a `RunningMeanNorm`
    total: StateTensor          # [bins]: the sum of the frames seen so far
    count: StateTensor          # []: how many frames that is (float32: a count, exact to 2**24 frames)


@dataclasses.dataclass(frozen=True)
class _AttentionCache:
    layer: keras.layers.MultiHeadAttention
    query: str             # the layer whose output is the query, key and value (self-attention)
    left_context: int
    keys: StateTensor      # [left_context, heads, key_dim]: the last left_context frames' keys
    values: StateTensor    # [left_context, heads, value_dim]
    valid: StateTensor     # how many of them exist yet (the newest sit at the end)


@dataclasses.dataclass(frozen=True)
class _ConvCache:
    layer: keras.layers.Layer    # (Depthwise)Conv1D, stride 1, valid, after a ZeroPadding1D((kernel - 1, 0))
    source: str                  # the layer whose (unpadded) output the convolution reads
    frames: Optional[StateTensor]   # the last kernel - 1 input frames (None for kernel 1)


@dataclasses.dataclass(frozen=True)
class _BlockStage:
    source: str                  # the layer (or model input) whose output enters the block
    nodes: tuple                 # (layer, args, kwargs) in graph order; Keras inputs as _Ref
    output: str                  # the layer whose output leaves the block
    caches: tuple                # _AttentionCache and _ConvCache entries, in graph order


@dataclasses.dataclass(frozen=True)
class _Ref:
    """A reference, in a block's recorded call arguments, to another layer's output."""

    name: str


def _producer(tensor) -> keras.layers.Layer:
    """The layer that produced a Keras (symbolic) tensor."""
    return tensor._keras_history.layer   # pylint: disable=protected-access


def _parents(layer) -> list[str]:
    return [_producer(kt).name for kt in layer.inbound_nodes[0].keras_inputs]


def _chain_link(layer) -> bool:
    """Whether the chain code runs this layer (else it is a one-layer block)."""
    return isinstance(layer, (keras.layers.ZeroPadding2D, keras.layers.Conv2D, keras.layers.LSTM) + _FRAMEWISE) or \
        type(layer).__name__ in ("CMVN", "RunningMeanNorm")


def _segments(model: keras.Model) -> list[list]:
    """The model's layers in graph order, cut wherever one layer's output is all that later layers read.

    A one-layer piece with one input is a chain link; longer pieces are residual or multi-input blocks.
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise StreamingError(f"model {model.name!r}: only single-input, single-output models stream")
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    for layer in layers:
        if len(layer.inbound_nodes) != 1:
            raise StreamingError(f"layer {layer.name!r} ({type(layer).__name__}) is called more than once "
                                 "(shared layers do not stream)")
        if len(tf.nest.flatten(layer.inbound_nodes[0].outputs)) != 1:
            raise StreamingError(f"layer {layer.name!r} ({type(layer).__name__}) has several outputs")
    if layers and _producer(model.outputs[0]) is not layers[-1]:
        raise StreamingError(f"model {model.name!r}: its output must be its last layer's")
    last_use = {}
    for index, layer in enumerate(layers):
        for parent in _parents(layer):
            last_use[parent] = index
    produced = {_producer(model.inputs[0]).name}
    segments, current = [], []
    for index, layer in enumerate(layers):
        current.append(layer)
        produced.add(layer.name)
        live = {name for name in produced if last_use.get(name, -1) > index}
        if live <= {layer.name}:
            segments.append(current)
            current = []
    if current:
        segments.append(current)
    return segments


def _lstm_loop(gates, x, h, c):
    """Keras' LSTM (gates i, f, g, o; tanh / sigmoid) over ``x [frames, in]`` from state ``h, c [1, u]``.

    One matrix product per gate (input projections for every frame at once, then per frame the
    recurrent ones), so the converted ``FULLY_CONNECTED`` weights are each gate's ``[u, in]`` and
    ``[u, u]`` matrices: byte for byte the tensors of TFLite's fused LSTM kernel, which the
    converter stores once when the ``recognize`` signature's fused LSTM holds the same weights. A
    chunk without frames leaves the state as it is (the loop does not run).

    Returns:
        ``(outputs [frames, u], h [1, u], c [1, u])``.
    """
    units = int(gates[0][2].shape[0])
    projected = [tf.matmul(x, tf.constant(kernel)) + tf.constant(bias) for kernel, _, bias in gates]
    recurrent = [tf.constant(matrix) for _, matrix, _ in gates]
    steps = tf.shape(x)[0]

    def body(t, h, c, outputs):
        z = [tf.slice(p, tf.stack([t, 0]), [1, units]) + tf.matmul(h, r) for p, r in zip(projected, recurrent)]
        c = tf.sigmoid(z[1]) * c + tf.sigmoid(z[0]) * tf.tanh(z[2])
        h = tf.sigmoid(z[3]) * tf.tanh(c)
        return t + 1, h, c, xla.dynamic_update_slice(outputs, h, tf.stack([t, 0]))   # a builtin op

    # At least one row: LiteRT prepares the loop body even when it runs 0 times, and a
    # DYNAMIC_UPDATE_SLICE into 0 rows fails to prepare; the extra row is dropped by GATHER.
    rows = tf.maximum(steps, 1)
    _, h, c, outputs = tf.while_loop(
        lambda t, *_: t < steps, body, [tf.constant(0), h, c, tf.zeros(tf.stack([rows, units]))],
        shape_invariants=[tf.TensorShape([]), tf.TensorShape([1, units]), tf.TensorShape([1, units]),
                          tf.TensorShape([None, units])])
    return tf.gather(outputs, tf.range(steps)), h, c


def _keeps_frames(layer: keras.layers.Reshape) -> bool:
    """Whether a Reshape only regroups each frame's values (frames stay on axis 1, one for one)."""
    target, source = layer.target_shape, layer.input_shape[2:]
    if target[0] not in (-1, None) or None in source or any(d in (-1, None) for d in target[1:]):
        return False
    return int(np.prod(target[1:])) == int(np.prod(source))


def _state_layout(name: str, units: int, state_width: Optional[int],
                  kept: Optional[np.ndarray]) -> tuple[int, Optional[np.ndarray]]:
    """The state width and where the layer's ``units`` sit in it (None: the first ``units``, all)."""
    width = int(state_width or units)
    if width < units:
        raise StreamingError(f"{name}: state width {width} < the layer's {units} units")
    if kept is None:
        if width != units:
            raise StreamingError(f"{name}: state width {width} but {units} units and no kept units given")
        return width, None
    if len(kept) != units or (len(kept) and (kept.min() < 0 or kept.max() >= width)) or (np.diff(kept) <= 0).any():
        raise StreamingError(f"{name}: kept units must be {units} increasing positions in [0, {width})")
    return width, (None if width == units else kept)


def _time_kernel(layer) -> tuple[int, int]:
    kernel, strides = layer.kernel_size[0], layer.strides[0]
    if strides > kernel:
        raise StreamingError(f"{layer.name}: time stride {strides} > kernel {kernel} skips frames")
    return kernel, strides


class StreamingModel:
    """Runs a causal recognizer on chunks of features with explicit state.

    Args:
        model: A plain tf_keras model ``[1, frames, bins] -> [1, out_frames, classes]``: a chain of
            layers and residual blocks. Its Conv2D layers must be ``valid`` in time (left padding
            by a ``ZeroPadding2D``); inside a block, convolutions must be stride-1 ``valid`` Conv1D
            (or DepthwiseConv1D) after a ``ZeroPadding1D`` of ``kernel - 1`` frames on the left, and
            self-attention must be masked by a `LocalAttentionMask` (a bounded left context).
        state_units: Per producer layer (Conv2D, LSTM), the width of its state if wider than the
            layer (a unit run's dense width). Defaults to each layer's own width.
        kept_units: Per producer layer, the state positions of the layer's units (sorted, one per
            unit; `dsnn_keras.sparsity.kept_unit_indices`); required for a layer narrower than its
            ``state_units``.

    Raises:
        StreamingError: a layer that looks ahead (``same`` time padding, attention without a
            causal mask), needs unbounded state (causal attention over the whole past: set
            ``model.conformer.left_context``), is shared, or is of an unsupported kind, naming it.
    """

    def __init__(self, model: keras.Model, state_units: Optional[Mapping[str, int]] = None,
                 kept_units: Optional[Mapping[str, Sequence[int]]] = None):
        self.model = model
        state_units = dict(state_units or {})
        kept_units = {name: np.asarray(v, np.int64) for name, v in (kept_units or {}).items()}
        self._stages: list = []
        pending_padding = None
        channels_from = None   # the Conv2D whose output channels the next Conv2D reads
        source = _producer(model.inputs[0]).name
        for segment in _segments(model):
            if len(segment) > 1 or len(_parents(segment[0])) != 1 or not _chain_link(segment[0]):
                if pending_padding is not None:
                    raise StreamingError(f"a ZeroPadding2D must feed a Conv2D; {segment[0].name!r} follows one")
                self._stages.append(self._block_stage(segment, source))
                source = segment[-1].name
                continue
            layer = segment[0]
            source = layer.name
            if isinstance(layer, keras.layers.ZeroPadding2D):
                (top, bottom), (left, right) = layer.padding
                pending_padding = (top, bottom, (left, right))
                continue
            if isinstance(layer, keras.layers.Conv2D) and type(layer) is keras.layers.Conv2D:
                self._stages.append(self._conv_stage(
                    layer, pending_padding, state_units.get(channels_from), kept_units.get(channels_from)))
                pending_padding = None
                channels_from = layer.name
                continue
            if pending_padding is not None:
                raise StreamingError(f"a ZeroPadding2D must feed a Conv2D; {layer.name!r} follows one")
            if type(layer) is keras.layers.LSTM:
                self._stages.append(self._lstm_stage(layer, state_units.get(layer.name), kept_units.get(layer.name)))
            elif type(layer).__name__ == "RunningMeanNorm":
                bins = int(layer.input_shape[-1])
                self._stages.append(_RunningMeanStage(
                    layer=layer, total=StateTensor(f"state_{layer.name}_sum", (bins,), "float32"),
                    count=StateTensor(f"state_{layer.name}_count", (), "float32")))
            elif isinstance(layer, _FRAMEWISE) or type(layer).__name__ == "CMVN":
                if isinstance(layer, keras.layers.Reshape) and not _keeps_frames(layer):
                    raise StreamingError(f"{layer.name}: reshape {layer.target_shape} mixes frames")
                self._stages.append(layer)
            else:
                raise StreamingError(f"layer {layer.name!r} ({type(layer).__name__}) cannot be run chunk by chunk")

    @staticmethod
    def _conv_stage(layer, padding, state_width: Optional[int], kept: Optional[np.ndarray]) -> _ConvStage:
        if layer.padding != "valid":
            raise StreamingError(
                f"{layer.name}: Conv2D pads {layer.padding!r} in time, which looks ahead by an amount that "
                "depends on the utterance's length; build the model causal (model.conv_padding: causal)")
        if layer.dilation_rate[0] != 1:
            raise StreamingError(f"{layer.name}: dilation in time is not supported")
        kernel, _ = _time_kernel(layer)
        top, bottom, width_padding = padding if padding is not None else (0, 0, (0, 0))
        if top > kernel - 1:
            raise StreamingError(f"{layer.name}: {top} frames of left padding exceed kernel - 1 = {kernel - 1}")
        if bottom > kernel - 1:
            raise StreamingError(f"{layer.name}: {bottom} frames of right padding exceed kernel - 1 = {kernel - 1}")
        _, _, width, channels = layer.input_shape   # already padded in width
        channels, kept = _state_layout(layer.name, int(channels), state_width, kept)
        return _ConvStage(layer=layer, time_padding=top, end_padding=bottom, width_padding=width_padding, kept=kept,
                          buffer=StateTensor(f"state_{layer.name}_frames", (kernel - 1, width, channels), "float32"),
                          seen=StateTensor(f"state_{layer.name}_seen", (), "int32"))

    @staticmethod
    def _block_stage(layers: list, source: str) -> _BlockStage:
        names = {layer.name for layer in layers}
        masks = {layer.name for layer in layers if isinstance(layer, LocalAttentionMask)}
        paddings = {layer.name: layer for layer in layers if isinstance(layer, keras.layers.ZeroPadding1D)}
        consumed = {}   # which layers read each mask or padding
        for layer in layers:
            for parent in _parents(layer):
                consumed.setdefault(parent, []).append(layer)
        nodes, caches = [], []
        for layer in layers:
            node = layer.inbound_nodes[0]
            parents = _parents(layer)
            if any(parent not in names and parent != source for parent in parents):
                raise StreamingError(f"layer {layer.name!r} reads a tensor from outside its block")
            if layer.name in masks or layer.name in paddings:
                readers = consumed.get(layer.name, [])
                if layer.name in paddings:
                    _check_causal_padding(layer, readers)
                continue   # run as part of the attention or convolution that reads it
            if isinstance(layer, keras.layers.MultiHeadAttention):
                caches.append(_attention_cache(layer, masks))
            elif isinstance(layer, _CONV1D):
                caches.append(_conv_cache(layer, paddings))
            elif isinstance(layer, (keras.layers.LSTM, keras.layers.Conv2D, keras.layers.ZeroPadding2D)):
                raise StreamingError(f"layer {layer.name!r} ({type(layer).__name__}) inside a residual or "
                                     "multi-input block does not stream")
            elif not (isinstance(layer, _FRAMEWISE + _MERGES + (GatedLinearUnit,)) or type(layer).__name__ == "CMVN"):
                raise StreamingError(f"layer {layer.name!r} ({type(layer).__name__}) cannot be run chunk by chunk")
            elif isinstance(layer, keras.layers.Reshape) and not _keeps_frames(layer):
                raise StreamingError(f"{layer.name}: reshape {layer.target_shape} mixes frames")
            elif any(parent in masks or parent in paddings for parent in parents):
                raise StreamingError(f"layer {layer.name!r} reads an attention mask or padding that only an "
                                     "attention or a convolution may read")
            args, kwargs = tf.nest.map_structure(
                lambda t: _Ref(_producer(t).name) if keras.backend.is_keras_tensor(t) else t,
                (tuple(node.call_args), dict(node.call_kwargs)))
            nodes.append((layer, args, kwargs))
        return _BlockStage(source=source, nodes=tuple(nodes), output=layers[-1].name, caches=tuple(caches))

    @staticmethod
    def _lstm_stage(layer, state_width: Optional[int], kept: Optional[np.ndarray]) -> _LstmStage:
        cell = layer.cell
        if layer.go_backwards or not layer.return_sequences:
            raise StreamingError(f"{layer.name}: only forward LSTMs returning sequences stream")
        width, kept = _state_layout(layer.name, int(cell.units), state_width, kept)
        if keras.activations.serialize(cell.activation) != "tanh" or \
                keras.activations.serialize(cell.recurrent_activation) != "sigmoid":
            raise StreamingError(f"{layer.name}: only tanh / sigmoid LSTMs stream")
        kernel, recurrent, *rest = [np.asarray(w, np.float32) for w in layer.get_weights()]
        units = int(cell.units)
        bias = rest[0] if rest else np.zeros([4 * units], np.float32)
        gates = tuple((np.ascontiguousarray(kernel[:, g * units:(g + 1) * units]),
                       np.ascontiguousarray(recurrent[:, g * units:(g + 1) * units]),
                       np.ascontiguousarray(bias[g * units:(g + 1) * units])) for g in range(4))
        return _LstmStage(layer=layer, gates=gates, kept=kept,
                          h=StateTensor(f"state_{layer.name}_h", (width,), "float32"),
                          c=StateTensor(f"state_{layer.name}_c", (width,), "float32"))

    @property
    def state_specs(self) -> list[StateTensor]:
        """Every state tensor, in a fixed order."""
        specs = []
        for stage in self._stages:
            if isinstance(stage, _RunningMeanStage):
                specs += [stage.total, stage.count]
            elif isinstance(stage, _ConvStage):
                specs += [stage.buffer, stage.seen]
            elif isinstance(stage, _LstmStage):
                specs += [stage.h, stage.c]
            elif isinstance(stage, _BlockStage):
                for cache in stage.caches:
                    if isinstance(cache, _AttentionCache):
                        specs += [cache.keys, cache.values, cache.valid]
                    elif cache.frames is not None:
                        specs.append(cache.frames)
        return specs

    def initial_state(self) -> dict[str, np.ndarray]:
        """All-zero state: the start of a stream."""
        return {spec.name: spec.zeros() for spec in self.state_specs}

    def step(self, features, state: Mapping[str, tf.Tensor],
             end_of_stream=False) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """Runs one chunk.

        Args:
            features: float32 ``[frames, bins]`` (``frames`` may be 0).
            state: ``{name: tensor}`` for every `state_specs` entry.
            end_of_stream: bool (tensor or Python) ``[]``: the last chunk; a convolution padded on
                the right in time (a fixed look-ahead) then flushes that padding, giving the frames
                the whole utterance ends with. Defaults to False.

        Returns:
            ``(outputs [new_frames, classes], next state)``.
        """
        x = tf.convert_to_tensor(features, tf.float32)[tf.newaxis]
        new_state = {}
        for stage in self._stages:
            if isinstance(stage, _RunningMeanStage):
                x, total, count = running_mean_step(x, state[stage.total.name][tf.newaxis],
                                                    state[stage.count.name], stage.layer.prior_frames)
                new_state[stage.total.name], new_state[stage.count.name] = total[0], count
            elif isinstance(stage, _ConvStage):
                x, new_state[stage.buffer.name], new_state[stage.seen.name] = self._conv_step(
                    stage, x, state[stage.buffer.name], state[stage.seen.name], end_of_stream)
            elif isinstance(stage, _LstmStage):
                x, new_state[stage.h.name], new_state[stage.c.name] = self._lstm_step(
                    stage, x, state[stage.h.name], state[stage.c.name])
            elif isinstance(stage, _BlockStage):
                x = self._block_step(stage, x, state, new_state)
            else:
                x = stage(x, training=False)
        return x[0], new_state

    @staticmethod
    def _conv_step(stage: _ConvStage, x, buffer, seen, end_of_stream=False):
        layer = stage.layer
        kernel, stride = _time_kernel(layer)
        left, right = stage.width_padding
        flush = tf.where(tf.cast(end_of_stream, tf.bool), stage.end_padding, 0) if stage.end_padding else 0
        x = tf.pad(x, [[0, 0], [0, flush], [left, right], [0, 0]])[0]
        new = tf.shape(x)[0]
        seen = tf.cast(seen, tf.int32)
        buffer = tf.cast(buffer, tf.float32)
        if stage.kept is not None:
            buffer = tf.gather(buffer, stage.kept, axis=2)
        frames = tf.concat([buffer, x], axis=0)   # padded positions a+seen-(k-1) ...
        padded_before = stage.time_padding + seen
        padded_after = padded_before + new

        def outputs_for(padded_length):
            return tf.where(padded_length >= kernel, (padded_length - kernel) // stride + 1, 0)

        done = outputs_for(padded_before)
        count = outputs_for(padded_after) - done
        offset = stride * done - (padded_before - (kernel - 1))
        needed = tf.maximum((count - 1) * stride + kernel, kernel)
        window = frames[offset:]
        window = tf.pad(window, [[0, tf.maximum(needed - tf.shape(window)[0], 0)], [0, 0], [0, 0]])[:needed]
        # A dynamic pad loses the static width and channels, which the TFLite CONV_2D needs.
        window = tf.reshape(window, [-1, *layer.input_shape[2:]])
        out = layer(window[tf.newaxis], training=False)
        # GATHER, not a slice, so a chunk with no output frame reads back from LiteRT (docs/measured.md).
        out = tf.gather(out, tf.range(count), axis=1)
        buffer = frames[tf.shape(frames)[0] - (kernel - 1):]
        if stage.kept is not None:
            full = stage.buffer.shape
            buffer = tf.transpose(tf.scatter_nd(stage.kept[:, np.newaxis], tf.transpose(buffer, [2, 0, 1]),
                                                [full[2], full[0], full[1]]), [1, 2, 0])
        return out, buffer, seen + new

    @staticmethod
    def _lstm_step(stage: _LstmStage, x, h, c):
        h = tf.reshape(tf.cast(h, tf.float32), [1, -1])
        c = tf.reshape(tf.cast(c, tf.float32), [1, -1])
        if stage.kept is not None:
            h_in, c_in = tf.gather(h, stage.kept, axis=1), tf.gather(c, stage.kept, axis=1)
        else:
            h_in, c_in = h, c
        out, h_out, c_out = _lstm_loop(stage.gates, x[0], h_in, c_in)
        out = out[tf.newaxis]
        if stage.kept is not None:
            width = stage.h.shape[0]
            index = stage.kept[:, np.newaxis]
            h_out = tf.scatter_nd(index, h_out[0], [width])
            c_out = tf.scatter_nd(index, c_out[0], [width])
        else:
            h_out, c_out = h_out[0], c_out[0]
        return out, h_out, c_out

    @staticmethod
    def _block_step(stage: _BlockStage, x, state, new_state):
        """Runs a residual block on ``x [1, n, ...]``, writing its caches' next state into ``new_state``."""
        n = tf.shape(x)[1]
        # At least one frame: a convolution needs a full window, and LiteRT handles 0-row tensors
        # poorly (docs/streaming.md). The extra zero frame is dropped below and never cached.
        rows = tf.maximum(n, 1)
        x = tf.concat([x, tf.zeros(tf.concat([[1, rows - n], tf.shape(x)[2:]], 0), x.dtype)], axis=1)
        values = {stage.source: x}
        caches = {cache.layer.name: cache for cache in stage.caches}
        for layer, args, kwargs in stage.nodes:
            cache = caches.get(layer.name)
            if isinstance(cache, _AttentionCache):
                out = _attention_step(cache, values[cache.query], n, rows, state, new_state)
            elif isinstance(cache, _ConvCache):
                out = _conv1d_step(cache, values[cache.source], n, state, new_state)
            else:
                args, kwargs = tf.nest.map_structure(lambda v: values[v.name] if isinstance(v, _Ref) else v,
                                                     (args, kwargs))
                out = layer(*args, **{**kwargs, "training": False})
            values[layer.name] = out
        return tf.gather(values[stage.output], tf.range(n), axis=1)


def _check_causal_padding(layer: keras.layers.ZeroPadding1D, readers: list) -> None:
    left, right = layer.padding
    if len(readers) != 1 or not isinstance(readers[0], _CONV1D):
        raise StreamingError(f"{layer.name}: a ZeroPadding1D inside a block must feed one Conv1D")
    kernel = readers[0].kernel_size[0]
    if right or left != kernel - 1:
        raise StreamingError(f"{layer.name}: pads ({left}, {right}) frames; a streaming convolution of kernel "
                             f"{kernel} needs exactly ({kernel - 1}, 0) (causal)")


def _conv_cache(layer, paddings: Mapping[str, keras.layers.ZeroPadding1D]) -> _ConvCache:
    (parent,) = _parents(layer)
    kernel = layer.kernel_size[0]
    if layer.strides[0] != 1 or layer.dilation_rate[0] != 1 or layer.padding != "valid":
        raise StreamingError(f"{layer.name}: only stride-1, undilated, 'valid' convolutions after a causal "
                             f"ZeroPadding1D stream inside a block (got strides {layer.strides}, dilation "
                             f"{layer.dilation_rate}, padding {layer.padding!r})")
    if parent not in paddings and kernel > 1:
        raise StreamingError(f"{layer.name}: a convolution of kernel {kernel} inside a block must be fed by a "
                             f"ZeroPadding1D of ({kernel - 1}, 0) frames (causal)")
    source = _parents(paddings[parent])[0] if parent in paddings else parent
    channels = int(layer.input_shape[-1])
    frames = StateTensor(f"state_{layer.name}_frames", (kernel - 1, channels), "float32") if kernel > 1 else None
    return _ConvCache(layer=layer, source=source, frames=frames)


def _attention_cache(layer: keras.layers.MultiHeadAttention, masks: set) -> _AttentionCache:
    node = layer.inbound_nodes[0]
    args, kwargs = list(node.call_args), dict(node.call_kwargs)
    query = args[0]
    value = args[1] if len(args) > 1 else kwargs.get("value")
    key = args[2] if len(args) > 2 else kwargs.get("key")
    if value is not query or (key is not None and key is not query):
        raise StreamingError(f"{layer.name}: only self-attention (query, key and value the same tensor) streams")
    if (len(args) > 3 and args[3] is not None) or kwargs.get("return_attention_scores") or \
            tuple(layer._attention_axes) != (1,):   # pylint: disable=protected-access
        raise StreamingError(f"{layer.name}: attention over axes other than time, or returning its scores, "
                             "does not stream")
    mask = kwargs.get("attention_mask")
    mask_layer = _producer(mask) if mask is not None else None
    if mask_layer is None:
        if kwargs.get("use_causal_mask"):
            raise StreamingError(
                f"{layer.name}: causal attention over the whole past needs a cache that grows with the utterance, "
                "which cannot be a fixed-shape state; bound it with model.conformer.left_context (frames after "
                "subsampling) and retrain")
        raise StreamingError(f"{layer.name}: attention without a causal mask reads future frames")
    if mask_layer.name not in masks or _parents(mask_layer) != [_producer(query).name]:
        raise StreamingError(f"{layer.name}: its attention mask must be a LocalAttentionMask of its own query")
    context = int(mask_layer.left_context)
    # pylint: disable-next=protected-access
    heads, key_dim, value_dim = int(layer._num_heads), int(layer._key_dim), int(layer._value_dim)
    return _AttentionCache(
        layer=layer, query=_producer(query).name, left_context=context,
        keys=StateTensor(f"state_{layer.name}_keys", (context, heads, key_dim), "float32"),
        values=StateTensor(f"state_{layer.name}_values", (context, heads, value_dim), "float32"),
        valid=StateTensor(f"state_{layer.name}_valid", (), "int32"))


def _attention_step(cache: _AttentionCache, x, n, rows, state, new_state):
    """Self-attention of ``x [1, rows, dim]`` (the first ``n`` rows real) over the cache and itself.

    Query ``t`` sits at position ``L + t`` of the cache-and-chunk sequence (``L`` = left context) and
    reads positions ``t .. L + t`` that hold a frame: exactly the whole-utterance band mask. The
    MultiHeadAttention layer's own projections and attention computation do the arithmetic.
    """
    layer, context = cache.layer, cache.left_context
    keys = tf.reshape(tf.cast(state[cache.keys.name], tf.float32), (1, *cache.keys.shape))
    values = tf.reshape(tf.cast(state[cache.values.name], tf.float32), (1, *cache.values.shape))
    valid = tf.cast(state[cache.valid.name], tf.int32)
    # pylint: disable=protected-access
    query = layer._query_dense(x)
    keys = tf.concat([keys, layer._key_dense(x)], axis=1)
    values = tf.concat([values, layer._value_dense(x)], axis=1)
    t = tf.range(rows)[:, tf.newaxis]
    position = tf.range(context + rows)[tf.newaxis, :]
    mask = (position >= t) & (position <= t + context) & (position >= context - valid)
    out, _ = layer._compute_attention(query, keys, values, mask[tf.newaxis], training=False)
    out = layer._output_dense(out)
    # pylint: enable=protected-access
    new_state[cache.keys.name] = tf.slice(keys[0], [n, 0, 0], cache.keys.shape)
    new_state[cache.values.name] = tf.slice(values[0], [n, 0, 0], cache.values.shape)
    new_state[cache.valid.name] = tf.minimum(valid + n, context)
    return out


def _conv1d_step(cache: _ConvCache, x, n, state, new_state):
    """The causal convolution of ``x [1, rows, channels]`` after its last ``kernel - 1`` input frames."""
    if cache.frames is None:
        return cache.layer(x, training=False)
    frames = tf.concat([tf.reshape(tf.cast(state[cache.frames.name], tf.float32), (1, *cache.frames.shape)), x],
                       axis=1)
    new_state[cache.frames.name] = tf.slice(frames[0], [n, 0], cache.frames.shape)
    return cache.layer(frames, training=False)
