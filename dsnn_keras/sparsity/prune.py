"""Public entry points of nested-mask dynamic sparsity: wrap, update, select a level, strip.

Example (the five-line usage):
    >>> schedule = NestedPolynomialDecay((0.0, 0.5, 0.7, 0.9), begin_step=0, end_step=2000, frequency=100)
    >>> model = prune_nested(base_model, schedule)                 # wraps Dense/Conv/LSTM/... layers
    >>> update_nested_masks(model, step)                           # once per optimizer step
    >>> with sparsity_level_scope(model, 2): logits = model(x)     # run level 2 (70 % sparse)
    >>> plain = strip_nested(model, level=3)                       # tf_keras model, 90 % sparse
"""
from __future__ import annotations

import contextlib
import numbers
from typing import Callable, Iterable, Mapping, Sequence, Union

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

from dsnn_keras.sparsity import registry as nested_registry
from dsnn_keras.sparsity.schedule import NestedPruningSchedule
from dsnn_keras.sparsity.wrapper import NestedPruneLowMagnitude, collect_nested_wrappers

LayerFilter = Union[Callable[[keras.layers.Layer], bool], Sequence[str], None]


def _is_graph_model(model) -> bool:
    return isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)


def _all_layers(model) -> list:
    """Every layer of the model, sub-models' layers included (not the sublayers of layers)."""
    out = []
    for layer in model.layers:
        out.append(layer)
        if isinstance(layer, keras.Model) and _is_graph_model(layer):
            out.extend(_all_layers(layer))
    return out


def _make_filter(prune_layers: LayerFilter, model) -> Callable[[keras.layers.Layer], bool]:
    if prune_layers is None:
        return lambda layer: True
    if callable(prune_layers):
        return prune_layers
    if isinstance(prune_layers, str) or not isinstance(prune_layers, Iterable):
        raise TypeError(f"prune_layers must be a predicate or a list of layer names, got {prune_layers!r}")
    names = set(prune_layers)
    known = {l.name for l in _all_layers(model)} if isinstance(model, keras.Model) else {model.name}
    missing = sorted(names - known)
    if missing:
        raise ValueError(f"prune_layers names layers not in the model: {missing}; layers are {sorted(known)}")
    return lambda layer: layer.name in names


def prune_nested(
    model_or_layer,
    schedule: NestedPruningSchedule,
    block_size: Sequence[int] = (1, 1),
    prune_layers: LayerFilter = None,
    *,
    weight_paths: Mapping[str, Sequence[str]] | None = None,
    granularity: str = "weight",
):
    """Wraps every prunable layer of a Sequential/Functional model in `NestedPruneLowMagnitude`.

    Like tfmot's `prune_low_magnitude`, the wrapped model reuses the given layers (and so their
    current weights); layers without prunable weights (Dropout, LayerNormalization, Embedding, ...)
    are kept as they are. Sub-models are wrapped recursively.

    Args:
        model_or_layer: A Sequential or Functional tf_keras model (built), or a single layer.
        schedule: A `NestedPruningSchedule`, e.g. `NestedPolynomialDecay`.
        block_size: `(bh, bw)` pruning blocks. Defaults to (1, 1).
        prune_layers: A predicate on layers or a list of layer names restricting which layers are
            wrapped. Defaults to None (all prunable layers).
        weight_paths: Optional `{layer name: [attribute path, ...]}` pruning other weights than the
            registry's (e.g. `{"embed": ["embeddings"]}`, `{"out": ["kernel", "bias"]}`).
        granularity: ``"weight"`` (per weight or per `block_size` block) or ``"unit"`` (whole
            output units ranked across layers, `dsnn_keras.sparsity.units`; needs block_size (1, 1)).
            Defaults to "weight".

    Returns:
        A new model (or a wrapper, for a layer) sharing the original layers' weights.

    Raises:
        TypeError: for a subclassed model, a non-layer, or a schedule that is not nested.
        ValueError: if the model is already wrapped, or has layers that cannot be handled (all of
            them are named in one message).

    Example:
        >>> base = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
        >>> model = prune_nested(base, NestedPolynomialDecay((0.0, 0.5), end_step=100))
        >>> [l.__class__.__name__ for l in model.layers]
        ['NestedPruneLowMagnitude']
    """
    if not isinstance(schedule, NestedPruningSchedule):
        raise TypeError(
            f"schedule must be a NestedPruningSchedule (e.g. NestedPolynomialDecay), got {type(schedule).__name__}"
        )
    weight_paths = dict(weight_paths or {})
    if granularity == "unit" and tuple(block_size) != (1, 1):
        raise ValueError(f"unit granularity prunes whole units; block_size must be (1, 1), got {tuple(block_size)}")
    if isinstance(model_or_layer, keras.Model):
        if not _is_graph_model(model_or_layer):
            raise TypeError(
                f"prune_nested cannot wrap subclassed model {model_or_layer.name!r} "
                f"({model_or_layer.__class__.__name__}): build it as a Sequential or Functional model"
            )
        _check_wrappable(model_or_layer, prune_layers, weight_paths)
        return _wrap_model(model_or_layer, schedule, tuple(block_size), _make_filter(prune_layers, model_or_layer),
                           weight_paths, granularity)
    if isinstance(model_or_layer, keras.layers.Layer):
        if isinstance(model_or_layer, pruning_wrapper.PruneLowMagnitude):
            raise ValueError(f"layer {model_or_layer.name!r} is already wrapped; prune_nested it only once")
        if granularity == "unit":
            raise ValueError("unit granularity ranks units across layers; wrap a model, not a single layer")
        return NestedPruneLowMagnitude(
            model_or_layer, schedule, block_size=block_size, weight_paths=weight_paths.get(model_or_layer.name)
        )
    raise TypeError(
        "prune_nested takes a Sequential/Functional tf_keras model or a tf_keras layer, got "
        f"{type(model_or_layer).__module__}.{type(model_or_layer).__name__} (Keras 3 objects are not supported)"
    )


def _check_wrappable(model, prune_layers, weight_paths) -> None:
    layers = _all_layers(model)
    everything = model._flatten_layers(include_self=False, recursive=True)  # pylint: disable=protected-access
    wrapped = [l.name for l in everything if isinstance(l, pruning_wrapper.PruneLowMagnitude)]
    if wrapped:
        raise ValueError(f"model {model.name!r} is already wrapped (pruning wrappers: {wrapped}); wrap it only once")
    subclassed = [
        l.name for l in layers if isinstance(l, keras.Model) and not _is_graph_model(l)
    ]
    if subclassed:
        raise TypeError(f"model {model.name!r} contains subclassed models {subclassed}; tfmot cannot wrap them")
    keep = _make_filter(prune_layers, model)
    candidates = [
        l for l in layers
        if not isinstance(l, keras.Model) and keep(l) and l.name not in weight_paths
    ]
    bad = nested_registry.unsupported_layers(candidates)
    if bad:
        listing = ", ".join(f"{l.name!r} ({l.__class__.__name__})" for l in bad)
        raise ValueError(
            f"prune_nested: model {model.name!r} has {len(bad)} unsupported layer(s): {listing}. "
            f"Supported: {nested_registry.describe_supported()}; or exclude them with prune_layers"
        )


def _wrap_model(model, schedule, block_size, keep, weight_paths, granularity="weight"):
    def clone(layer):
        if isinstance(layer, keras.Model):
            return _wrap_model(layer, schedule, block_size, keep, weight_paths, granularity)
        if not keep(layer):
            return layer
        paths = weight_paths.get(layer.name)
        if paths is None and not nested_registry.has_prunable_weights(layer):
            return layer
        return NestedPruneLowMagnitude(layer, schedule, block_size=block_size, weight_paths=paths,
                                       granularity=granularity)

    wrapped = keras.models.clone_model(model, input_tensors=None, clone_function=clone)
    if granularity == "unit":
        from dsnn_keras.sparsity.units import unit_plan

        unit_plan(wrapped)  # fail now, not at the first training step, if no unit can be pruned
    return wrapped


def _wrappers_or_raise(model) -> list[NestedPruneLowMagnitude]:
    wrappers = collect_nested_wrappers(model)
    if not wrappers:
        raise ValueError(f"{getattr(model, 'name', model)!r} has no NestedPruneLowMagnitude layers; call prune_nested first")
    return wrappers


def sparsity_levels(model) -> tuple[float, ...]:
    """The final sparsity of each level of a nested-wrapped model.

    Raises:
        ValueError: if the model has no nested wrappers or its wrappers disagree.

    Example:
        >>> sparsity_levels(model)
        (0.0, 0.5, 0.7, 0.9)
    """
    levels = {w.pruning_schedule.sparsity_levels for w in _wrappers_or_raise(model)}
    if len(levels) != 1:
        raise ValueError(f"the nested wrappers of {model.name!r} have different sparsity levels: {sorted(levels)}")
    return levels.pop()


def _validate_level(model, level):
    """Checks a Python int level (or an eager tensor) against the model's K; returns it."""
    num_levels = len(sparsity_levels(model))
    if isinstance(level, bool):
        raise TypeError(f"sparsity level must be an int in [0, {num_levels - 1}], got {level!r}")
    if isinstance(level, numbers.Integral):
        if not 0 <= level < num_levels:
            raise ValueError(f"sparsity level must be in [0, {num_levels - 1}] (model has {num_levels} levels), got {level}")
        return int(level)
    if isinstance(level, (tf.Tensor, tf.Variable)):
        if not level.dtype.is_integer:
            raise TypeError(f"sparsity level tensor must be an integer tensor, got {level.dtype.name}")
        if level.shape.rank not in (None, 0):
            raise ValueError(f"sparsity level tensor must be a scalar, got shape {level.shape}")
        level = tf.cast(level, tf.int32)
        if tf.executing_eagerly():
            value = int(level.numpy())
            if not 0 <= value < num_levels:
                raise ValueError(f"sparsity level must be in [0, {num_levels - 1}], got {value}")
        return level
    raise TypeError(f"sparsity level must be an int or an int32 scalar tensor, got {type(level).__name__}")


def set_sparsity_level(model, level) -> None:
    """Stores the active level of every nested wrapper in `model` (used when no scope is active).

    Args:
        model: A nested-wrapped model or layer.
        level: A Python int in [0, K) (validated) or an integer scalar tensor (inside a
            tf.function an out-of-range value fails a `tf.debugging` assertion).

    Raises:
        ValueError/TypeError: for an out-of-range or non-integer level.

    Example:
        >>> set_sparsity_level(model, 3)   # every later call runs at 90 % sparsity
    """
    level = _validate_level(model, level)
    if isinstance(level, tf.Tensor) and not tf.executing_eagerly():
        num_levels = len(sparsity_levels(model))
        checks = [
            tf.debugging.assert_greater_equal(level, 0, message="sparsity level must be >= 0"),
            tf.debugging.assert_less(level, num_levels, message=f"sparsity level must be < {num_levels}"),
        ]
        with tf.control_dependencies(checks):
            level = tf.identity(level)
    for wrapper in _wrappers_or_raise(model):
        wrapper.active_level.assign(level)


@contextlib.contextmanager
def sparsity_level_scope(model, level):
    """Runs every nested wrapper of `model` at `level` while the context is active.

    The level is read when the layers' `call` runs (or is traced), so one traced graph can run
    several levels (sandwich rule) and a tensor level can come from a tf.function / signature
    input. Works inside `strategy.run` replica functions (scopes are per thread).

    Args:
        model: A nested-wrapped model or layer.
        level: A Python int in [0, K) (validated) or an integer scalar tensor.

    Example:
        >>> with sparsity_level_scope(model, 1):
        ...     y_half = model(x)
    """
    level = _validate_level(model, level)
    with contextlib.ExitStack() as stack:
        for wrapper in _wrappers_or_raise(model):
            stack.enter_context(wrapper.level_scope(level))
        yield


def update_nested_masks(model, step) -> None:
    """Sets every wrapper's pruning step to `step` and recomputes level codes when scheduled.

    Call once per optimizer step, before the forward passes, in cross-replica context (outside
    `strategy.run`); works eagerly and inside a tf.function.

    Args:
        model: A nested-wrapped model or layer.
        step: The optimizer step (Python int or integer tensor).

    Example:
        >>> update_nested_masks(model, optimizer.iterations)
    """
    wrappers = _wrappers_or_raise(model)
    if any(w.granularity == "unit" for w in wrappers):
        from dsnn_keras.sparsity.units import update_unit_masks

        update_unit_masks(model, step)
    for wrapper in wrappers:
        if wrapper.granularity != "unit":
            wrapper.update_masks(step)


def level_codes(model) -> dict[str, np.ndarray]:
    """Per prunable weight, the uint8 level codes (`mask of level i == codes > i`).

    Keys are "<inner layer name>/<attribute path>", e.g. "dense/kernel", "lstm/cell.kernel",
    "mha/_query_dense.kernel".

    Example:
        >>> codes = level_codes(model)
        >>> float((codes["dense/kernel"] > 3).mean())   # density of level 3
    """
    out = {}
    for wrapper in _wrappers_or_raise(model):
        for w in wrapper.nested_weights:
            out[w.key] = np.asarray(w.code.numpy(), dtype=np.uint8)
    return out


def measured_sparsities(model) -> dict[str, list[float]]:
    """Actual fraction of zeros-by-mask per level: per weight key and over all prunable weights
    ("total"; the biases that unit granularity masks are reported per key but not in the total).

    Example:
        >>> measured_sparsities(model)["total"]
        [0.0, 0.5, 0.7, 0.9]
    """
    num_levels = len(sparsity_levels(model))
    out, pruned, total = {}, np.zeros(num_levels), 0
    for wrapper in _wrappers_or_raise(model):
        for w in wrapper.nested_weights:
            c = np.asarray(w.code.numpy(), dtype=np.uint8)
            counts = np.array([(c <= i).sum() for i in range(num_levels)], dtype=np.float64)
            out[w.key] = (counts / max(c.size, 1)).tolist()
            if w.counted:
                pruned += counts
                total += c.size
    out["total"] = (pruned / max(total, 1)).tolist()
    return out


def strip_nested(model, level: int):
    """A plain tf_keras model (wrappers replaced by fresh copies of their inner layers) whose
    prunable weights are masked at `level`; every other weight is copied. Nothing is shared with
    `model`.

    Args:
        model: A nested-wrapped Sequential/Functional model, or a single wrapper.
        level: The level to bake in, a Python int in [0, K).

    Returns:
        A keras.Model (or a layer, for a wrapper) with no nested wrappers.

    Example:
        >>> plain = strip_nested(model, 3)
        >>> with sparsity_level_scope(model, 3):
        ...     np.testing.assert_allclose(plain(x), model(x), atol=1e-6)
    """
    if isinstance(level, bool) or not isinstance(level, numbers.Integral):
        raise TypeError(f"strip_nested level must be a Python int, got {level!r}")
    level = _validate_level(model, level)
    if isinstance(model, NestedPruneLowMagnitude):
        return _strip_wrapper(model, level)
    if not isinstance(model, keras.Model) or not _is_graph_model(model):
        raise TypeError(f"strip_nested takes a Sequential/Functional model or a wrapper, got {type(model).__name__}")
    return _strip_model(model, level)


def _fresh_copy(layer):
    return layer.__class__.from_config(layer.get_config())


def _masked_inner_weights(wrapper, level) -> list[np.ndarray]:
    inner = wrapper.layer
    values = [np.asarray(v) for v in keras.backend.batch_get_value(inner.weights)]
    for w in wrapper.nested_weights:
        index = next(i for i, v in enumerate(inner.weights) if v is w.variable)
        values[index] = values[index] * (w.code.numpy() > level).astype(values[index].dtype)
    return values


def _stripped_layer(wrapper, level):
    fresh = _fresh_copy(wrapper.layer)
    return fresh, (lambda: fresh.set_weights(_masked_inner_weights(wrapper, level)))


def _strip_wrapper(wrapper, level):
    """The inner layer alone, built with the wrapper's input shape and holding its masked weights."""
    shape = getattr(wrapper.layer, "_build_input_shape", None)
    if not wrapper.built or shape is None:
        raise ValueError(f"strip_nested: wrapper {wrapper.name!r} is not built; call it on an input first")
    fresh, load = _stripped_layer(wrapper, level)
    fresh.build(shape)
    load()
    return fresh


def _strip_model(model, level):
    pending = []

    def clone(layer):
        if isinstance(layer, keras.Model):
            return _strip_model(layer, level)
        if isinstance(layer, NestedPruneLowMagnitude):
            fresh, load = _stripped_layer(layer, level)
            pending.append(load)
            return fresh
        fresh = _fresh_copy(layer)
        pending.append(lambda: fresh.set_weights(layer.get_weights()) if layer.weights else None)
        return fresh

    stripped = keras.models.clone_model(model, input_tensors=None, clone_function=clone)
    for load in pending:
        load()
    return stripped
