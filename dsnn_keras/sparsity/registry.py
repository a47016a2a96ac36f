"""Which weights of which layer are prunable, built on tfmot's `PruneRegistry` and `PrunableLayer`.

Defaults: tfmot's table (Dense/Conv* `kernel`, LSTM/GRU/SimpleRNN cell `kernel` and
`recurrent_kernel`, MultiHeadAttention's four projection kernels, ...) plus `EinsumDense.kernel`,
minus `Embedding` (embeddings, biases and norms are pruned only when asked through explicit
`weight_paths`). Custom layers take part by implementing tfmot's `PrunableLayer`
(`get_prunable_weights()`).

A prunable weight is addressed by its attribute path relative to the layer: "kernel",
"cell.recurrent_kernel", "_query_dense.kernel", "cell.cells.1.kernel".
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf
import tf_keras as keras
from tensorflow_model_optimization.python.core.sparsity.keras import prunable_layer
from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry

# Layer classes dsnn adds to (or removes from) tfmot's table. Exact-class lookup, like tfmot.
_EXTRA_LAYERS = {keras.layers.EinsumDense: ["kernel"]}
_NOT_PRUNED_BY_DEFAULT = {keras.layers.Embedding}


def is_custom_prunable(layer) -> bool:
    """True for layers that declare their own prunable weights (tfmot `PrunableLayer`)."""
    return isinstance(layer, prunable_layer.PrunableLayer) or (
        hasattr(layer, "get_prunable_weights") and not getattr(layer, "_dsnn_registry_attached", False)
    )


def supports(layer) -> bool:
    """Whether dsnn knows which weights of `layer` to prune (possibly none).

    Example:
        >>> supports(keras.layers.Dense(3)), supports(keras.layers.Bidirectional(keras.layers.LSTM(2)))
        (True, False)
    """
    if isinstance(layer, keras.Model):
        return False
    return (
        is_custom_prunable(layer)
        or layer.__class__ in _EXTRA_LAYERS
        or PruneRegistry.supports(layer)
    )


def default_weight_paths(layer) -> list[str] | None:
    """Attribute paths pruned by default for a supported built-in layer.

    Returns:
        A list of paths (possibly empty), or None for custom `PrunableLayer`s (whose weights are
        known only from `get_prunable_weights()` once built).

    Raises:
        ValueError: if the layer is not supported.

    Example:
        >>> default_weight_paths(keras.layers.LSTM(4))
        ['cell.kernel', 'cell.recurrent_kernel']
    """
    if is_custom_prunable(layer):
        return None
    cls = layer.__class__
    if cls in _EXTRA_LAYERS:
        return list(_EXTRA_LAYERS[cls])
    if not PruneRegistry.supports(layer):
        raise ValueError(f"layer {layer.name!r} ({cls.__name__}) is not supported by the prune registry")
    if cls in _NOT_PRUNED_BY_DEFAULT:
        return []
    if PruneRegistry._is_rnn_layer(layer):  # pylint: disable=protected-access
        cells = PruneRegistry._get_rnn_cells(layer)  # pylint: disable=protected-access
        stacked = isinstance(layer.cell, keras.layers.StackedRNNCells)
        paths = []
        for i, cell in enumerate(cells):
            prefix = f"cell.cells.{i}." if stacked else "cell."
            names = PruneRegistry._RNN_CELLS_WEIGHTS_MAP.get(cell.__class__)  # pylint: disable=protected-access
            if names is None:
                return None  # a PrunableLayer cell: ask it once built
            paths.extend(prefix + n for n in names)
        return paths
    return list(PruneRegistry._weight_names(layer))  # pylint: disable=protected-access


def has_prunable_weights(layer) -> bool:
    """Whether wrapping `layer` would prune at least one weight by default."""
    if not supports(layer):
        return False
    paths = default_weight_paths(layer)
    if paths is None:
        if not layer.built:
            return True
        return bool(layer.get_prunable_weights())
    return bool(paths)


def resolve_path(layer, path: str):
    """The object at attribute path `path` of `layer` ("cell.kernel", "cell.cells.0.kernel")."""
    obj = layer
    for part in path.split("."):
        if part.isdigit():
            obj = obj[int(part)]
        else:
            if not hasattr(obj, part):
                raise ValueError(f"layer {layer.name!r} ({layer.__class__.__name__}) has no weight {path!r}")
            obj = getattr(obj, part)
    return obj


def locate_variable(layer, variable) -> tuple[object, str, str]:
    """Finds which (sub)layer attribute holds `variable`.

    Returns:
        `(owner, attribute_name, path)` such that `getattr(owner, attribute_name) is variable`.

    Raises:
        TypeError: if no attribute of the layer or its sublayers holds it (the nested wrapper
            must be able to hand the layer a masked copy through that attribute).
    """
    seen = set()
    queue = [("", layer)]
    while queue:
        prefix, obj = queue.pop(0)
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        items = [(n, v) for n, v in vars(obj).items() if not n.startswith(("_self_", "_obj_"))]
        items.sort(key=lambda item: item[0].startswith("_"))  # public attribute names first
        for name, value in items:
            if value is variable:
                return obj, name, prefix + name
        for name, value in items:
            if isinstance(value, keras.layers.Layer):
                queue.append((f"{prefix}{name}.", value))
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, keras.layers.Layer):
                        queue.append((f"{prefix}{name}.{i}.", item))
    raise TypeError(
        f"prunable weight {getattr(variable, 'name', variable)!r} of layer {layer.name!r} is not held in "
        "an attribute of the layer or its sublayers; store each prunable weight as an attribute "
        "(e.g. self.kernel = self.add_weight(...)) so it can be masked for the call"
    )


def prunable_variables(layer, weight_paths: Sequence[str] | None = None) -> list:
    """The prunable variables of a built layer.

    Args:
        layer: A built Keras layer.
        weight_paths: Explicit attribute paths overriding the registry (e.g. ["embeddings"] or
            ["kernel", "bias"]). Defaults to the registry's choice.

    Returns:
        The list of variables, in a stable order.

    Example:
        >>> d = keras.layers.Dense(2); d.build((None, 3))
        >>> [v.shape.as_list() for v in prunable_variables(d)]
        [[3, 2]]
    """
    if weight_paths is not None:
        return [resolve_path(layer, p) for p in weight_paths]
    paths = default_weight_paths(layer)
    if paths is None:
        if is_custom_prunable(layer):
            return list(layer.get_prunable_weights())
        cells = PruneRegistry._get_rnn_cells(layer)  # pylint: disable=protected-access
        variables = []
        for cell in cells:
            names = PruneRegistry._RNN_CELLS_WEIGHTS_MAP.get(cell.__class__)  # pylint: disable=protected-access
            if names is None:
                variables.extend(cell.get_prunable_weights())
            else:
                variables.extend(getattr(cell, n) for n in names)
        return variables
    return [resolve_path(layer, p) for p in paths]


def unsupported_layers(layers) -> list:
    """Layers with trainable weights that dsnn does not know how to prune (nor to leave alone)."""
    bad = []
    for layer in layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if not supports(layer) and layer.trainable_weights:
            bad.append(layer)
    return bad


def describe_supported() -> str:
    """A one-line summary of what can be wrapped, for error messages."""
    return (
        "Dense, Conv1D/2D/3D, LSTM, GRU, SimpleRNN, MultiHeadAttention, EinsumDense and the rest of "
        "tfmot's prune registry, or any layer implementing "
        "tensorflow_model_optimization.sparsity.keras.PrunableLayer"
    )


def variable_dtype(variable) -> tf.DType:
    """The storage dtype of a (possibly autocast) variable."""
    return getattr(variable, "true_dtype", variable.dtype)
