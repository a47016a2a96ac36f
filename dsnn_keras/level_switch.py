"""The forward pass of a level switch mid-utterance, for training a model to survive one.

A stream may change level between any two chunks (`tflite.RecognizerStream.set_level`): the state
one level leaves (LSTM ``h`` and ``c``, the convolutions' cached input frames) is read by another.
A DSNN trained only on whole utterances at one level each never sees that state, and a stream that
flips between the densest and the sparsest level every second reads worse than either level alone
(docs/streaming.md, "Switching level every second"). `switched_logits` computes what such a stream
computes, in one batched, differentiable pass of the training model: every pruned layer at
``level_a`` for the output frames before ``cut`` and at ``level_b`` from ``cut`` on, each LSTM
continuing from the state the other level left (with the units ``level_b`` prunes zeroed, as the
runtime's narrower layer reads only its own units). `Trainer` adds its CTC loss with weight
``training.switch_weight`` (docs/training.md, "Level switches").

The model must be a chain of layers (each reading the one before), its pruned LSTMs unidirectional
and its convolutions causal in time (``model.conv_padding: causal``): the LSTM encoder. A
convolution's output frames are taken from ``level_a`` before the cut and ``level_b`` after it,
each computed over the spliced input; frames are counted at each layer's own time resolution (the
cut times the time strides still to come).

Example:
    >>> logits = switched_logits(model, features, level_a=0, level_b=3, cut=40, training=True)
    >>> # logits[:, :40] == model(features) at level 0 (causal); the rest continues at level 3
"""
from __future__ import annotations

from typing import Any, Optional

import tensorflow as tf
import tf_keras as keras

from dsnn_keras.errors import DsnnError


class LevelSwitchError(DsnnError, ValueError):
    """The model cannot be trained with level switches (not a chain, or a layer that looks ahead)."""


def _wrapped(layer) -> Optional[keras.layers.Layer]:
    from dsnn_keras.sparsity.wrapper import NestedPruneLowMagnitude

    return layer.layer if isinstance(layer, NestedPruneLowMagnitude) else None


def check_switchable(model: keras.Model) -> None:
    """Raises `LevelSwitchError` unless `switched_logits` can run ``model`` (see the module docstring)."""
    pruned = any(_wrapped(layer) is not None for layer in model.layers)
    previous = None
    for layer in model.layers:
        parents = [keras_input._keras_history.layer   # pylint: disable=protected-access
                   for keras_input in layer.inbound_nodes[0].keras_inputs] if layer.inbound_nodes else []
        names = None if previous is None else {previous.name, getattr(_wrapped(previous), "name", previous.name)}
        if previous is not None and (len(parents) != 1 or parents[0].name not in names):
            raise LevelSwitchError(f"training.switch_weight: layer {layer.name!r} does not read the layer before it "
                                   "(level switches are trained on chain models: the LSTM encoder)")
        inner = _wrapped(layer) or layer
        if isinstance(inner, keras.layers.RNN) and (not isinstance(inner, keras.layers.LSTM) or inner.go_backwards
                                                    or not inner.return_sequences):
            raise LevelSwitchError(f"training.switch_weight: {layer.name!r} is not a forward sequence LSTM")
        if isinstance(inner, (keras.layers.Conv1D, keras.layers.Conv2D)) and inner.padding != "valid":
            raise LevelSwitchError(f"training.switch_weight: {layer.name!r} pads '{inner.padding}' in time (it looks "
                                   "ahead); level switches need model.conv_padding: causal")
        if isinstance(layer, keras.layers.ZeroPadding2D) and layer.padding[0][1] != 0:
            raise LevelSwitchError(f"training.switch_weight: {layer.name!r} pads after the last frame (it looks "
                                   "ahead); level switches need model.conv_padding: causal")
        if pruned and _wrapped(layer) is None and isinstance(layer, (keras.layers.Conv2D, keras.layers.LSTM)):
            # A level's pruned channels read as 0 by a wrapped reader (its kernel masks them); an
            # unpruned reader would see the other level's values in them after a switch.
            raise LevelSwitchError(f"training.switch_weight: {layer.name!r} is not pruned; level switches are "
                                   "trained with every Conv2D and LSTM pruned (the default model.prune_layers)")
        if isinstance(layer, keras.layers.Bidirectional):
            raise LevelSwitchError(f"training.switch_weight: {layer.name!r} is bidirectional")
        previous = layer


def switch_draw(seed: int, step: Any, num_levels: int, frames: Any) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The switch a training step trains: ``(level_a, level_b, cut)``, a pure function of (seed, step).

    Args:
        seed: ``training.seed``.
        step: The step (int64 scalar).
        num_levels: The run's levels (>= 2).
        frames: Output frames to cut (int32 scalar); the cut falls in their middle half.

    Returns:
        Two different levels in ``[0, num_levels)`` and a cut in ``[1, frames - 1]`` (1 when
        ``frames < 2``: the caller skips such a step), int32 scalars.
    """
    if num_levels < 2:
        raise LevelSwitchError(f"a level switch needs two or more levels, got {num_levels}")
    draws = tf.random.stateless_uniform([3], tf.stack([tf.constant(seed + 7919, tf.int64),
                                                       tf.cast(step, tf.int64)]), dtype=tf.float32)
    level_a = tf.cast(draws[0] * num_levels, tf.int32) % num_levels
    level_b = (level_a + 1 + tf.cast(draws[1] * (num_levels - 1), tf.int32) % (num_levels - 1)) % num_levels
    frames = tf.cast(frames, tf.int32)
    cut = tf.cast(tf.cast(frames, tf.float32) * (0.25 + 0.5 * draws[2]), tf.int32)
    return level_a, level_b, tf.clip_by_value(cut, 1, tf.maximum(frames - 1, 1))


def _time_strides(model: keras.Model) -> dict[str, int]:
    """``{layer name: product of the time strides of the convolutions after it}``."""
    remaining, strides = 1, {}
    for layer in reversed(model.layers):
        strides[layer.name] = remaining
        inner = _wrapped(layer) or layer
        if isinstance(inner, keras.layers.Conv2D):
            remaining *= int(inner.strides[0])
    return strides


def _unit_mask(wrapper, level) -> Optional[tf.Tensor]:
    """The 0/1 mask ``[units]`` of the LSTM units ``level`` keeps, read from the bias's mask (gates
    i, f, c, o of every unit); None when the LSTM is not pruned by unit (weight masks keep every unit)."""
    from dsnn_keras.sparsity import masks

    units = int(wrapper.layer.units)
    if getattr(wrapper, "granularity", "weight") != "unit":
        return None
    for weight in wrapper._nested.weights:   # pylint: disable=protected-access
        if tuple(weight.variable.shape) == (4 * units,):
            return masks.mask_for_level(weight.code, level)[:units]
    return None


def switched_logits(model: keras.Model, features: Any, level_a: Any, level_b: Any, cut: Any,
                    training: bool = True) -> tf.Tensor:
    """The model's output for a stream that switches from ``level_a`` to ``level_b`` at output frame ``cut``.

    Args:
        model: A nested-wrapped chain model (`check_switchable`).
        features: ``[batch, frames, bins]``.
        level_a: The level before the switch (int or int32 scalar tensor).
        level_b: The level from the switch on.
        cut: The first output frame computed at ``level_b``, in ``[1, output frames)`` (int32 scalar).
        training: Dropout and the like on. Defaults to True.

    Returns:
        Logits ``[batch, output frames, classes]``, as ``model(features)``.
    """
    from dsnn_keras.sparsity.wrapper import NestedPruneLowMagnitude

    strides = _time_strides(model)
    cut = tf.cast(cut, tf.int32)
    x = features
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if not isinstance(layer, NestedPruneLowMagnitude):
            x = layer(x, training=training)
            continue
        inner = layer.layer
        if isinstance(inner, keras.layers.RNN):
            here = tf.minimum(cut * strides[layer.name], tf.shape(x)[1])
            # The prefix's final state: the layer's return_state is switched on for this one call
            # (traced; MirroredStrategy runs its replicas' step functions one at a time, not concurrently).
            with layer.level_scope(level_a):
                returned = inner.return_state
                inner.return_state = True
                try:
                    before, h, c = layer(x[:, :here], training=training)
                finally:
                    inner.return_state = returned
            # The units level_b prunes start from 0, as in the runtime's narrower layer (else a
            # pruned unit's state from level_a would reach the unpruned output layer).
            kept_b = _unit_mask(layer, level_b)
            if kept_b is not None:
                h, c = h * kept_b, c * kept_b
            with layer.level_scope(level_b):
                after = layer(x[:, here:], initial_state=[h, c], training=training)
            x = tf.concat([before, after], axis=1)
        else:
            # A convolution at level_b reading frames level_a made: the input channels level_b
            # prunes are masked in its kernel, so it reads them as the runtime does (tested).
            with layer.level_scope(level_a):
                at_a = layer(x, training=training)
            with layer.level_scope(level_b):
                at_b = layer(x, training=training)
            here = tf.minimum(cut * strides[layer.name], tf.shape(at_a)[1])
            x = tf.concat([at_a[:, :here], at_b[:, here:]], axis=1)
    return x


__all__ = ["LevelSwitchError", "check_switchable", "switch_draw", "switched_logits"]
