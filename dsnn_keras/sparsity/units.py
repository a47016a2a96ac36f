"""Unit granularity: nested masks over whole units (LSTM hidden units, Dense units, Conv channels).

A *unit group* is one layer's output units together with every weight that belongs to them: the
producer's own output columns (an LSTM unit's four gate columns in the kernel and recurrent kernel,
its bias entries, its row of the recurrent kernel) and the input rows of the layers that read it
(through Dropout, zero-preserving activations and Reshapes that merge the trailing axes, such as the
ASR model's ``flatten_freq`` where row ``w * C + c`` reads channel ``c``). A weight element's index
``i`` along a member axis belongs to unit ``i % units``.

Rule (like `nested_masks` for weights): per group, score each unit by the sum of squares of its own
kernel and recurrent-kernel weights, rank the units once (descending, ties by lower index), and let
level ``i`` keep the first ``k_{g,i}`` of that ranking; a weight element's code is the smallest code
of the units it belongs to, so the masks are nested by construction. All groups share one width
fraction ``w_i`` per level (slimmable networks: ``k_{g,i} = clip(round(units_g * w_i), 1,
units_g)``), chosen so the fraction of prunable weights that are zero is as close as possible to
level ``i``'s sparsity; so ``s`` means the same as for weight granularity and levels compare.
A pruned unit outputs exactly 0 (its bias is masked too), so the weights reading it can be sliced
away: `narrow_model` builds the physically smaller model of one level.

Example:
    >>> model = prune_nested(base, schedule, granularity="unit")
    >>> update_nested_masks(model, step)          # ranks units across layers
    >>> units_kept(model)                         # {"lstm_0": [160, 113, 88, 51], ...}
    >>> small = narrow_model(model, 3)            # LSTM-51 etc., equal to the masked model
"""
from __future__ import annotations

import dataclasses
import weakref
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from dsnn_keras.sparsity import masks as nested_masks
from dsnn_keras.sparsity import registry as nested_registry
from dsnn_keras.sparsity.schedule import update_if_scheduled
from dsnn_keras.errors import DsnnError

_PASS_THROUGH = (keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
                 keras.layers.GaussianDropout, keras.layers.AlphaDropout,
                 # zero padding keeps the channel axis, and a pruned channel stays exactly 0
                 keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D)
_PRODUCERS = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.LSTM)
_READERS = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.LSTM)
_WIDTH_STEPS = 4096


class UnitPlanError(DsnnError, ValueError):
    """The model cannot be pruned at unit granularity as asked."""


@dataclasses.dataclass(frozen=True)
class UnitMember:
    """One axis of one weight that a unit group covers.

    Attributes:
        layer: The (inner) layer name, e.g. "lstm_0".
        path: The weight's attribute path on that layer, e.g. "cell.recurrent_kernel".
        axis: The axis whose index ``i`` belongs to unit ``i % units``.
        own: True for the producer's output side (scored), False for a reader's input rows.
    """

    layer: str
    path: str
    axis: int
    own: bool


@dataclasses.dataclass(frozen=True)
class UnitGroup:
    """A producer layer's output units and every weight axis that belongs to them.

    Attributes:
        name: The producer's (inner) layer name.
        units: Its number of output units (channels).
        members: The weight axes covered (own and readers).
        reshapes: Names of Reshape layers between the producer and a reader whose last dimension
            scales with the number of kept units.
    """

    name: str
    units: int
    members: tuple[UnitMember, ...]
    reshapes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class UnitPlan:
    """The unit groups of a model and the per-width kept counts (see the module docstring).

    Attributes:
        groups: The unit groups, in layer order.
        widths: ``[W]`` width fractions from 1 down to 0.
        kept_table: ``[W, G]`` units kept per group at each width.
        sparsity_table: ``[W]`` fraction of prunable weights zero at each width (non-decreasing).
    """

    groups: tuple[UnitGroup, ...]
    widths: np.ndarray
    kept_table: np.ndarray
    sparsity_table: np.ndarray

    def kept_for(self, sparsities) -> tf.Tensor:
        """``[K, G]`` int32 kept units per level for level sparsities ``[K]`` (tensor or floats)."""
        s = tf.cast(tf.reshape(sparsities, [-1]), tf.float64)
        table = tf.constant(self.sparsity_table, tf.float64)
        index = tf.argmin(tf.abs(table[None, :] - s[:, None]), axis=1, output_type=tf.int32)
        return tf.gather(tf.constant(self.kept_table, tf.int32), index)

    def max_sparsity(self) -> float:
        return float(self.sparsity_table[-1])


def _inner(layer):
    from dsnn_keras.sparsity.wrapper import NestedPruneLowMagnitude

    return layer.layer if isinstance(layer, NestedPruneLowMagnitude) else layer


def _zero_preserving(activation) -> bool:
    try:
        return float(np.asarray(activation(tf.zeros([1]))).reshape(-1)[0]) == 0.0
    except Exception:  # pylint: disable=broad-except
        return False


def _consumers(model) -> dict[str, list[str]]:
    """``{layer name: [names of layers called on its output]}`` from the model's config."""
    config = model.get_config()
    layers = config["layers"]
    out: dict[str, list[str]] = {entry["config"]["name"]: [] for entry in layers}
    if isinstance(model, keras.Sequential):
        names = [entry["config"]["name"] for entry in layers if entry["class_name"] != "InputLayer"]
        for a, b in zip(names, names[1:]):
            out[a].append(b)
        return out
    outputs = {spec[0] for spec in config.get("output_layers", [])}
    for entry in layers:
        for node in entry.get("inbound_nodes", []):
            for inbound in node:
                if isinstance(inbound, (list, tuple)) and inbound and isinstance(inbound[0], str) \
                        and inbound[0] in out and entry["name"] not in out[inbound[0]]:
                    out[inbound[0]].append(entry["name"])
    for name in outputs:
        out.setdefault(name, []).append("<model output>")
    return out


def _own_members(inner) -> Optional[tuple[int, list[UnitMember]]]:
    """``(units, own members)`` of a layer that can be a unit producer, else None."""
    name = inner.name
    if isinstance(inner, keras.layers.LSTM):
        cell = inner.cell
        if inner.stateful or not _zero_preserving(cell.activation):
            return None
        members = [UnitMember(name, "cell.kernel", 1, True), UnitMember(name, "cell.recurrent_kernel", 1, True),
                   UnitMember(name, "cell.recurrent_kernel", 0, False)]
        if cell.use_bias:
            members.append(UnitMember(name, "cell.bias", 0, True))
        return cell.units, members
    if isinstance(inner, (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D)):
        if isinstance(inner, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
                              keras.layers.SeparableConv1D, keras.layers.SeparableConv2D,
                              keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose)):
            return None
        if getattr(inner, "groups", 1) != 1 or not _zero_preserving(inner.activation):
            return None
        units = inner.units if isinstance(inner, keras.layers.Dense) else inner.filters
        rank = len(inner.kernel.shape)
        members = [UnitMember(name, "kernel", rank - 1, True)]
        if inner.use_bias:
            members.append(UnitMember(name, "bias", 0, True))
        return units, members
    return None


def _reader_member(inner, width: int, units: int) -> Optional[UnitMember]:
    """The input-row member of a layer reading a ``width``-wide last axis, else None."""
    if not isinstance(inner, _READERS) or width % units:
        return None
    if isinstance(inner, keras.layers.LSTM):
        return UnitMember(inner.name, "cell.kernel", 0, False)
    if isinstance(inner, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
                          keras.layers.SeparableConv1D, keras.layers.SeparableConv2D,
                          keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose)):
        return None
    if isinstance(inner, keras.layers.Dense):
        return UnitMember(inner.name, "kernel", 0, False)
    if getattr(inner, "groups", 1) != 1:
        return None
    return UnitMember(inner.name, "kernel", len(inner.kernel.shape) - 2, False)


def find_unit_groups(model, producers: Sequence[str]) -> tuple[UnitGroup, ...]:
    """The unit groups of a built Functional/Sequential model whose producers are in `producers`.

    A producer's units form a group only if every path from its output reaches layers that read
    them as input rows (see the module docstring); otherwise its outputs stay whole (its weights
    are still pruned where an upstream group's units are read).
    """
    by_name = {layer.name: layer for layer in model.layers}
    consumers = _consumers(model)
    groups = []
    for layer in model.layers:
        inner = _inner(layer)
        if layer.name not in producers and inner.name not in producers:
            continue
        own = _own_members(inner)
        if own is None:
            continue
        units, members = own
        frontier, readers, reshapes, ok = [(layer.name, units)], [], [], True
        while frontier and ok:
            source, width = frontier.pop()
            for target in consumers.get(source, []):
                consumer = by_name.get(target)
                if consumer is None:
                    ok = False
                    break
                inner_consumer = _inner(consumer)
                if isinstance(inner_consumer, _PASS_THROUGH):
                    frontier.append((target, width))
                elif isinstance(inner_consumer, keras.layers.Activation) and _zero_preserving(inner_consumer.activation):
                    frontier.append((target, width))
                elif isinstance(inner_consumer, keras.layers.Reshape):
                    last = inner_consumer.target_shape[-1]
                    if last is None or last < 0 or last % units:
                        ok = False
                        break
                    reshapes.append(target)
                    frontier.append((target, last))
                else:
                    member = _reader_member(inner_consumer, width, units)
                    if member is None:
                        ok = False
                        break
                    readers.append(member)
        if ok and readers:
            groups.append(UnitGroup(inner.name, int(units), tuple(members + readers), tuple(reshapes)))
    return tuple(groups)


def _weight_shapes(model) -> dict[tuple[str, str], tuple[int, ...]]:
    shapes = {}
    for layer in model.layers:
        inner = _inner(layer)
        for path in ("kernel", "bias", "cell.kernel", "cell.recurrent_kernel", "cell.bias"):
            try:
                variable = nested_registry.resolve_path(inner, path)
            except (ValueError, AttributeError, TypeError):
                continue
            if variable is not None and hasattr(variable, "shape"):
                shapes[(inner.name, path)] = tuple(int(d) for d in variable.shape)
    return shapes


def build_plan(model, groups: Sequence[UnitGroup], counted: Sequence[tuple[str, str]]) -> UnitPlan:
    """Tabulates, for widths 1 → 0, the kept units per group and the resulting sparsity over the
    `counted` weights (``(layer, path)`` pairs, the prunable weights)."""
    shapes = _weight_shapes(model)
    widths = np.linspace(1.0, 0.0, _WIDTH_STEPS + 1)
    units = np.array([g.units for g in groups], np.float64)
    kept = np.clip(np.round(units[None, :] * widths[:, None]), 1, units[None, :]).astype(np.int64)
    fraction = kept / units[None, :]
    axes: dict[tuple[str, str], dict[int, int]] = {}
    for gi, group in enumerate(groups):
        for m in group.members:
            axes.setdefault((m.layer, m.path), {})[m.axis] = gi
    total = 0.0
    kept_weights = np.zeros(len(widths))
    for key in counted:
        size = float(np.prod(shapes[key]))
        total += size
        factor = np.ones(len(widths))
        for gi in axes.get(key, {}).values():
            factor = factor * fraction[:, gi]
        kept_weights += size * factor
    sparsity = 1.0 - kept_weights / max(total, 1.0)
    sparsity = np.maximum.accumulate(sparsity)  # rounding can wiggle; keep the table monotone
    return UnitPlan(tuple(groups), widths, kept, sparsity)


_PLANS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def unit_wrappers(model) -> list:
    from dsnn_keras.sparsity.wrapper import collect_nested_wrappers

    return [w for w in collect_nested_wrappers(model) if w.granularity == "unit"]


def unit_plan(model) -> UnitPlan:
    """The (cached) `UnitPlan` of a model whose wrappers use unit granularity.

    Raises:
        UnitPlanError: if no wrapped layer's units can be pruned, or the largest level's sparsity
            cannot be reached with at least one unit kept per group.
    """
    plan = _PLANS.get(model)
    if plan is not None:
        return plan
    wrappers = unit_wrappers(model)
    if not wrappers:
        raise UnitPlanError(f"{model.name!r} has no unit-granularity nested wrappers")
    if not all(w.nested_weights for w in wrappers):
        raise UnitPlanError(f"{model.name!r}: build the model before ranking units")
    groups = find_unit_groups(model, [w.layer.name for w in wrappers])
    if not groups:
        raise UnitPlanError(
            f"{model.name!r}: no wrapped layer has output units that only Dense/Conv/LSTM layers read "
            "(through Dropout/Reshape); unit granularity has nothing to prune")
    counted = [(w.key.split("/", 1)[0], w.key.split("/", 1)[1]) for wrapper in wrappers
               for w in wrapper.nested_weights if w.counted]
    plan = build_plan(model, groups, counted)
    wanted = max(wrappers[0].pruning_schedule.sparsity_levels)
    if plan.max_sparsity() < wanted - 0.01:
        raise UnitPlanError(
            f"{model.name!r}: unit granularity reaches at most {plan.max_sparsity():.3f} sparsity over "
            f"the prunable weights (one unit kept per group), below the level {wanted}; prune more layers")
    _PLANS[model] = plan
    return plan


def _tile_codes(unit_codes, size: int, axis: int, rank: int):
    units = int(unit_codes.shape[0])
    tiled = tf.tile(unit_codes, [size // units])
    shape = [1] * rank
    shape[axis] = size
    return tf.reshape(tiled, shape)


def _unit_scores(group: UnitGroup, variables: dict) -> tf.Tensor:
    score = tf.zeros([group.units], tf.float32)
    for m in group.members:
        if not m.own or m.path.endswith("bias"):
            continue
        v = tf.cast(tf.convert_to_tensor(variables[(m.layer, m.path)]), tf.float32)
        rank = v.shape.rank
        perm = [a for a in range(rank) if a != m.axis] + [m.axis]
        flat = tf.reshape(tf.transpose(v, perm), [-1, v.shape[m.axis] // group.units, group.units])
        score += tf.reduce_sum(tf.square(flat), axis=[0, 1])
    return score


def compute_unit_codes(model, sparsities) -> dict[tuple[str, str], tf.Tensor]:
    """uint8 codes for every masked weight of the unit wrappers (``(layer, path)`` keys)."""
    plan = unit_plan(model)
    wrappers = unit_wrappers(model)
    weights = {tuple(w.key.split("/", 1)): w for wrapper in wrappers for w in wrapper.nested_weights}
    variables = {key: w.variable for key, w in weights.items()}
    kept = plan.kept_for(sparsities)
    num_levels = int(kept.shape[0])
    codes = {key: tf.fill(tf.shape(w.variable), tf.constant(num_levels, tf.uint8)) for key, w in weights.items()}
    for gi, group in enumerate(plan.groups):
        unit_codes = nested_masks.codes_from_scores(_unit_scores(group, variables), kept[:, gi])
        for m in group.members:
            key = (m.layer, m.path)
            if key not in codes:
                continue  # a reader outside the wrappers (the output layer): its input is exactly 0
            shape = weights[key].variable.shape
            codes[key] = tf.minimum(codes[key], _tile_codes(unit_codes, int(shape[m.axis]), m.axis, len(shape)))
    return codes


def update_unit_masks(model, step) -> tf.Tensor:
    """`update_nested_masks` for unit wrappers: one schedule decision, codes for all of them."""
    wrappers = unit_wrappers(model)
    schedule = wrappers[0].pruning_schedule
    step = tf.cast(step, tf.int64)
    for wrapper in wrappers:
        wrapper.pruning_step.assign(step)

    def recompute():
        codes = compute_unit_codes(model, schedule.sparsities(step, tf.float64))
        for wrapper in wrappers:
            for w in wrapper.nested_weights:
                w.code.assign(codes[tuple(w.key.split("/", 1))])
            wrapper.mask_update_step.assign(step)
        return tf.constant(True)

    return update_if_scheduled(schedule, step, wrappers[0].mask_update_step, recompute)


def _unit_codes_now(plan: UnitPlan, model) -> dict[str, np.ndarray]:
    """Each group's current per-unit codes, read back from its producer kernel's codes."""
    weights = {tuple(w.key.split("/", 1)): w for wrapper in unit_wrappers(model) for w in wrapper.nested_weights}
    out = {}
    for group in plan.groups:
        member = next(m for m in group.members if m.own and not m.path.endswith("bias"))
        codes = np.asarray(weights[(member.layer, member.path)].code.numpy())
        moved = np.moveaxis(codes, member.axis, -1).reshape(-1, codes.shape[member.axis] // group.units, group.units)
        out[group.name] = moved.max(axis=(0, 1))
    return out


def units_kept(model) -> dict[str, list[int]]:
    """``{producer layer: [units kept at level 0, 1, ...]}`` from the current codes.

    Example:
        >>> units_kept(model)
        {'conv_0': [32, 23, 18, 10], 'conv_1': [16, 11, 9, 5], 'lstm_0': [160, 113, 88, 51], ...}
    """
    plan = unit_plan(model)
    num_levels = unit_wrappers(model)[0].num_levels
    return {name: [int((codes > i).sum()) for i in range(num_levels)]
            for name, codes in _unit_codes_now(plan, model).items()}



def kept_unit_indices(model, level: int) -> dict[str, np.ndarray]:
    """``{producer layer: sorted indices of the units level keeps}``: where `narrow_model`'s units sit
    in the dense layer (a streaming state keeps the dense layout, `dsnn_keras.streaming`).

    Example:
        >>> kept_unit_indices(model, 3)["lstm_0"][:4]
        array([ 2,  5,  6, 11])
    """
    plan = unit_plan(model)
    return {name: np.flatnonzero(codes > level) for name, codes in _unit_codes_now(plan, model).items()}


def narrow_model(model, level: int) -> keras.Model:
    """The physically smaller plain tf_keras model of `level`: each unit group keeps only the units
    `level` keeps, and every weight is sliced to them (order preserved). Equal to the masked model
    at that level (a pruned unit outputs exactly 0). Nothing is shared with `model`.

    Args:
        model: A Functional/Sequential model with unit-granularity nested wrappers.
        level: The level, a Python int in [0, K).
    """
    from dsnn_keras.sparsity.wrapper import NestedPruneLowMagnitude

    plan = unit_plan(model)
    kept = kept_unit_indices(model, level)
    slices: dict[tuple[str, str], list[tuple[int, np.ndarray, int]]] = {}
    for g in plan.groups:
        for m in g.members:
            slices.setdefault((m.layer, m.path), []).append((m.axis, kept[g.name], g.units))
    units_of = {g.name: g for g in plan.groups}
    reshape_scale = {name: g for g in plan.groups for name in g.reshapes}
    pending = []

    def sliced_values(inner, values, masks):
        out = []
        for variable, value, mask in zip(inner.weights, values, masks):
            value = value if mask is None else value * mask
            path = next((p for p in ("kernel", "bias", "cell.kernel", "cell.recurrent_kernel", "cell.bias")
                         if _resolves_to(inner, p, variable)), None)
            for axis, keep, units in slices.get((inner.name, path), []):
                size = value.shape[axis]
                index = np.flatnonzero(np.isin(np.arange(size) % units, keep))
                value = np.take(value, index, axis=axis)
            out.append(value)
        return out

    def clone(layer):
        if isinstance(layer, keras.Model):
            raise UnitPlanError("narrow_model does not handle nested sub-models")
        inner = _inner(layer)
        config = inner.get_config()
        if inner.name in units_of:
            key = "filters" if "filters" in config else "units"
            config[key] = int(len(kept[inner.name]))
        if inner.name in reshape_scale:
            group = reshape_scale[inner.name]
            target = list(config["target_shape"])
            target[-1] = target[-1] // group.units * len(kept[group.name])
            config["target_shape"] = tuple(target)
        fresh = inner.__class__.from_config(config)
        if isinstance(layer, NestedPruneLowMagnitude):
            masks = [None] * len(inner.weights)
            for w in layer.nested_weights:
                index = next(i for i, v in enumerate(inner.weights) if v is w.variable)
                masks[index] = (w.code.numpy() > level).astype(np.float32)
        else:
            masks = [None] * len(inner.weights)
        if inner.weights:
            pending.append(lambda: fresh.set_weights(
                sliced_values(inner, [np.asarray(v) for v in keras.backend.batch_get_value(inner.weights)], masks)))
        return fresh

    narrow = keras.models.clone_model(model, input_tensors=None, clone_function=clone)
    for load in pending:
        load()
    return narrow


def _resolves_to(inner, path: str, variable) -> bool:
    try:
        return nested_registry.resolve_path(inner, path) is variable
    except (ValueError, AttributeError, TypeError):
        return False
