"""`NestedPruneLowMagnitude`: tfmot's pruning wrapper with K nested masks applied in the forward pass.

Unlike tfmot's `PruneLowMagnitude`, which assigns `weight = weight * mask` in place on every training
call, this wrapper never writes the weights: like tfmot's `QuantizeWrapper` it hands the inner layer a
masked copy of each prunable weight for the duration of one call. So the dense weights survive while
any level trains, and gradients to weights masked at the active level are exactly zero.

Per prunable weight it owns a uint8 level-code variable (mask of level i is `code > i`); per layer an
int64 `pruning_step`, the step of the last mask update and the stored active level (int32). Nothing
changes in `call`: training loops update the codes with `update_nested_masks` (or the
`UpdateNestedPruningStep` callback) once per optimizer step.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import itertools
import threading
from dataclasses import dataclass
from typing import Any, Sequence

import tensorflow as tf
import tf_keras as keras
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper
from tf_keras.src.utils import tf_utils

from dsnn_keras.sparsity import masks as nested_masks
from dsnn_keras.sparsity import registry as nested_registry
from dsnn_keras.sparsity.schedule import NestedPruningSchedule, deserialize_schedule, update_if_scheduled

GRANULARITIES = ("weight", "unit")   # "block" is "weight" with a block_size (config.py)
UNIT_BIAS_PATHS = ("bias", "cell.bias")

_SYNC = dict(
    trainable=False,
    synchronization=tf.VariableSynchronization.ON_WRITE,
    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
)


@dataclass(frozen=True)
class NestedWeight:
    """One prunable weight of a wrapped layer.

    Attributes:
        key: "<inner layer name>/<attribute path>", e.g. "lstm/cell.recurrent_kernel"; the key of
            `level_codes(model)`.
        owner: The (sub)layer object whose attribute holds the weight.
        attribute: The attribute name on `owner` ("kernel").
        variable: The weight variable (never modified by the wrapper).
        code: The uint8 level-code variable shaped like `variable`.
        counted: Whether the weight counts as prunable when a level's sparsity is measured (False
            for the biases that unit granularity masks only so a pruned unit outputs exactly 0).
    """

    key: str
    owner: Any
    attribute: str
    variable: Any
    code: Any
    counted: bool = True


class _NoInPlaceMasking:
    """Stands in for tfmot's `Pruning` object so tfmot callbacks that find this wrapper (it is a
    `PruneLowMagnitude`) do nothing instead of writing `weight * mask` into the weights."""

    def weight_mask_op(self):
        return tf.no_op()

    def conditional_mask_update(self):
        return tf.no_op()


class _LevelScopes:
    """Levels set by `sparsity_level_scope`, per thread (MirroredStrategy traces each replica in its
    own thread); a thread that set none sees the newest level set by any thread."""

    def __init__(self):
        self._entries: list[tuple[int, int, Any]] = []
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def push(self, level) -> int:
        token = next(self._counter)
        with self._lock:
            self._entries.append((token, threading.get_ident(), level))
        return token

    def pop(self, token: int) -> None:
        with self._lock:
            self._entries = [e for e in self._entries if e[0] != token]

    def current(self):
        tid = threading.get_ident()
        with self._lock:
            entries = list(self._entries)
        for _, thread, level in reversed(entries):
            if thread == tid:
                return level
        return entries[-1][2] if entries else None


class _SwappedAttributes:
    """Puts masked tensors in the weights' attributes for one call, then puts the variables back.
    (A class, not a generator, so autograph leaves it alone.)"""

    def __init__(self, weights, tensors):
        self._weights = weights
        self._tensors = tensors

    def __enter__(self):
        for w, tensor in zip(self._weights, self._tensors):
            object.__setattr__(w.owner, w.attribute, tensor)
        return self

    def __exit__(self, *exc):
        for w in self._weights:
            object.__setattr__(w.owner, w.attribute, w.variable)
        return False


class _NestedState:
    """Plain (untracked) holder for the wrapper's Python-side state, so Keras does not track the
    owner layers and variables a second time."""

    def __init__(self):
        self.weights: list[NestedWeight] = []
        self.codes_built = False
        self.scopes = _LevelScopes()


def _short_name(variable) -> str:
    return variable.name.split(":")[0].split("/")[-1]


@keras.utils.register_keras_serializable(package="dsnn")
class NestedPruneLowMagnitude(pruning_wrapper.PruneLowMagnitude):
    """Wraps a Keras layer so its prunable weights carry K nested magnitude masks.

    The active level is, in order: the level of an enclosing `sparsity_level_scope` (a Python int
    or an int32 tensor, read when `call` is traced), else the stored `active_level` variable
    (`set_sparsity_level`). The mask is applied once per call (for an LSTM: once per sequence,
    not per time step).

    Args:
        layer: The layer to wrap: one in the prune registry (Dense, Conv*, LSTM, GRU,
            MultiHeadAttention, EinsumDense, ...) or a tfmot `PrunableLayer`.
        pruning_schedule: A `NestedPruningSchedule`, e.g. `NestedPolynomialDecay`.
        block_size: `(bh, bw)` blocks of each weight's matrix view (`[prod(shape[:-1]),
            shape[-1]]`) are scored by mean |w| and pruned together. Defaults to (1, 1).
        weight_paths: Attribute paths to prune instead of the registry's choice (e.g.
            ["embeddings"], ["kernel", "bias"]). Defaults to None (the registry).
        granularity: ``"weight"`` (each weight, or each `block_size` block, ranked within its
            tensor; codes computed by `update_masks`) or ``"unit"`` (whole output units ranked
            across layers by `dsnn_keras.sparsity.units`; the layer's bias is masked too, not
            counted as prunable, so a pruned unit outputs exactly 0; codes are computed by
            `update_nested_masks(model, step)`). Defaults to "weight".
        **kwargs: Passed to `keras.layers.Wrapper` (the name is always
            "nested_prune_low_magnitude_<layer name>").

    Call arguments:
        inputs: Passed to the inner layer.
        training: Passed to the inner layer when it accepts it.
        **kwargs: Passed to the inner layer when its `call` accepts them.

    Example:
        >>> schedule = NestedPolynomialDecay((0.0, 0.5), begin_step=0, end_step=0)
        >>> dense = NestedPruneLowMagnitude(keras.layers.Dense(4), schedule)
        >>> _ = dense(tf.ones([1, 8]))
        >>> _ = dense.update_masks(0)
        >>> float(tf.reduce_mean(tf.cast(dense.nested_weights[0].code > 1, tf.float32)))
        0.5
    """

    _PRUNE_CALLBACK_ERROR_MSG = "use dsnn_keras.UpdateNestedPruningStep or update_nested_masks"

    def __init__(
        self,
        layer,
        pruning_schedule: NestedPruningSchedule,
        block_size: Sequence[int] = (1, 1),
        weight_paths: Sequence[str] | None = None,
        granularity: str = "weight",
        **kwargs,
    ):
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        if isinstance(layer, pruning_wrapper.PruneLowMagnitude):
            raise ValueError(
                f"layer {layer.name!r} is already wrapped by {layer.__class__.__name__}; wrap it only once"
            )
        if isinstance(layer, keras.Model):
            raise TypeError(
                f"NestedPruneLowMagnitude wraps layers, not models ({layer.__class__.__name__} "
                f"{layer.name!r}); use prune_nested(model, schedule)"
            )
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(f"layer must be a tf_keras Layer, got {type(layer).__name__}")
        if not isinstance(pruning_schedule, NestedPruningSchedule):
            raise TypeError(
                "pruning_schedule must be a NestedPruningSchedule (e.g. NestedPolynomialDecay), got "
                f"{type(pruning_schedule).__name__}"
            )
        block_size = tuple(block_size)
        if len(block_size) != 2 or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in block_size):
            raise ValueError(f"block_size must be two integers >= 1, got {block_size!r}")
        if weight_paths is not None:
            weight_paths = [str(p) for p in weight_paths]
        elif not nested_registry.supports(layer):
            raise ValueError(
                f"layer {layer.name!r} ({layer.__class__.__name__}) is not supported; supported: "
                f"{nested_registry.describe_supported()}"
            )
        if weight_paths is not None or not nested_registry.is_custom_prunable(layer):
            paths = weight_paths

            def get_prunable_weights():
                return nested_registry.prunable_variables(layer, paths)

            layer.get_prunable_weights = get_prunable_weights
            layer._dsnn_registry_attached = True  # pylint: disable=protected-access
        for key in ("block_pooling_type", "sparsity_m_by_n"):
            kwargs.pop(key, None)
        super().__init__(layer, pruning_schedule=pruning_schedule, block_size=block_size, **kwargs)
        self.block_size = block_size
        self.weight_paths = weight_paths
        self.granularity = granularity
        self.pruning_obj = _NoInPlaceMasking()
        self._nested = _NestedState()
        spec = inspect.getfullargspec(self.layer.call)
        self._inner_accepts_all = spec.varkw is not None
        self._inner_args = frozenset(spec.args + spec.kwonlyargs)
        self.supports_masking = getattr(layer, "supports_masking", False)

    # ------------------------------------------------------------------ variables
    @property
    def num_levels(self) -> int:
        """K, the number of sparsity levels."""
        return self.pruning_schedule.num_levels

    @property
    def nested_weights(self) -> list[NestedWeight]:
        """The prunable weights with their code variables (empty until built)."""
        return list(self._nested.weights)

    def build(self, input_shape):
        keras.layers.Wrapper.build(self, input_shape)
        self.pruning_step = self.add_weight(
            "pruning_step", shape=[], dtype=tf.int64, initializer=keras.initializers.Constant(-1), **_SYNC
        )
        self.mask_update_step = self.add_weight(
            "mask_update_step", shape=[], dtype=tf.int64, initializer=keras.initializers.Constant(-1), **_SYNC
        )
        self.active_level = self.add_weight(
            "active_level", shape=[], dtype=tf.int32, initializer=keras.initializers.Constant(0), **_SYNC
        )
        variables = self._resolved_prunable_weights()
        if variables is not None:
            self._create_codes(variables)

    def _resolved_prunable_weights(self):
        """The prunable variables, or None while the inner layer creates them lazily in its first
        call (MultiHeadAttention's projections)."""
        try:
            return list(self.layer.get_prunable_weights())
        except (AttributeError, ValueError):
            return None

    def _create_codes(self, variables):
        if not variables:
            raise ValueError(f"layer {self.layer.name!r} has no prunable weights; do not wrap it")
        state = self._nested
        counted = [True] * len(variables)
        if self.granularity == "unit":
            for path in UNIT_BIAS_PATHS:
                try:
                    bias = nested_registry.resolve_path(self.layer, path)
                except ValueError:
                    continue
                if bias is not None and not any(bias is v for v in variables):
                    variables = list(variables) + [bias]
                    counted.append(False)
                    break
        for index, (variable, is_counted) in enumerate(zip(variables, counted)):
            owner, attribute, path = nested_registry.locate_variable(self.layer, variable)
            name = f"level_code_{index}"
            # A SavedModel revival may already have restored this variable onto the layer.
            code = next((v for v in self._non_trainable_weights if _short_name(v) == name and v.shape == variable.shape), None)
            code = code if code is not None else self.add_weight(
                name,
                shape=variable.shape,
                dtype=tf.uint8,
                initializer=keras.initializers.Constant(self.num_levels),
                **_SYNC,
            )
            state.weights.append(NestedWeight(f"{self.layer.name}/{path}", owner, attribute, variable, code,
                                              is_counted))
        state.codes_built = True

    # ------------------------------------------------------------------ levels and masks
    def current_level(self):
        """The level `call` uses now: the innermost scope's level, else the `active_level` variable."""
        scoped = self._nested.scopes.current()
        return self.active_level if scoped is None else scoped

    def masked_weights(self, level) -> list:
        """Each prunable weight multiplied by the 0/1 mask of `level` (differentiable in the weight)."""
        return [
            w.variable * nested_masks.mask_for_level(w.code, level, nested_registry.variable_dtype(w.variable))
            for w in self._nested.weights
        ]

    def update_masks(self, step):
        """Sets `pruning_step` to `step` and recomputes the codes when the schedule says so.

        Codes are also recomputed once at or after `end_step` if the update at `end_step` was
        missed. Call in cross-replica context (outside `strategy.run`), eagerly or in a tf.function.

        Returns:
            A bool scalar tensor: whether the codes were recomputed.

        Raises:
            ValueError: for a unit-granularity wrapper (its units are ranked across layers; use
                `update_nested_masks(model, step)`).
        """
        if self.granularity == "unit":
            raise ValueError(f"{self.name}: unit masks span layers; call update_nested_masks(model, step)")
        step = tf.cast(step, tf.int64)
        schedule = self.pruning_schedule
        self.pruning_step.assign(step)
        def recompute():
            sparsities = schedule.sparsities(step, tf.float64)
            for w in self._nested.weights:
                w.code.assign(nested_masks.compute_level_codes(w.variable, sparsities, self.block_size))
            self.mask_update_step.assign(step)
            return tf.constant(True)

        return update_if_scheduled(schedule, step, self.mask_update_step, recompute)

    @contextlib.contextmanager
    def level_scope(self, level):
        """Uses `level` (int or int32 tensor, not validated here) in `call` while active."""
        token = self._nested.scopes.push(level)
        try:
            yield self
        finally:
            self._nested.scopes.pop(token)

    # ------------------------------------------------------------------ call
    def call(self, inputs, training=None, **kwargs):
        if training is None:
            training = keras.backend.learning_phase()
        call_kwargs = {k: v for k, v in kwargs.items() if self._inner_accepts_all or k in self._inner_args}
        if self._inner_accepts_all or "training" in self._inner_args:
            call_kwargs["training"] = training
        if not self._nested.codes_built:
            # Let a lazily built layer create its weights with one unmasked call, then add codes.
            self.layer.call(inputs, **call_kwargs)
            with tf_utils.maybe_init_scope(self):
                self._create_codes(self.layer.get_prunable_weights())
        with _SwappedAttributes(self._nested.weights, self.masked_weights(self.current_level())):
            return self.layer.call(inputs, **call_kwargs)

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    # ------------------------------------------------------------------ serialization
    def get_config(self) -> dict:
        config = keras.layers.Wrapper.get_config(self)
        config.update(
            pruning_schedule=self.pruning_schedule.get_config(),
            block_size=list(self.block_size),
            weight_paths=self.weight_paths,
            granularity=self.granularity,
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = copy.deepcopy(config)
        schedule = deserialize_schedule(config.pop("pruning_schedule"))
        layer_config = config.pop("layer")
        layer = keras.layers.deserialize(
            layer_config, custom_objects=custom_objects, use_legacy_format="module" not in layer_config
        )
        config.pop("block_pooling_type", None)
        return cls(layer, pruning_schedule=schedule, **config)


def collect_nested_wrappers(model_or_layer) -> list[NestedPruneLowMagnitude]:
    """Every `NestedPruneLowMagnitude` in a model or layer, including ones inside sub-models and
    custom layers, each once, in layer order.

    Example:
        >>> collect_nested_wrappers(keras.Sequential([keras.layers.Dense(2)]))
        []
    """
    found, seen = [], set()
    for layer in model_or_layer._flatten_layers(include_self=True, recursive=True):  # pylint: disable=protected-access
        if isinstance(layer, NestedPruneLowMagnitude) and id(layer) not in seen:
            seen.add(id(layer))
            found.append(layer)
    return found
