"""Nested pruning schedules: K sparsity levels that ramp up together (tfmot `PruningSchedule`s).

A nested schedule answers, for a training step, whether the level codes should be recomputed and
the sparsity of every level at that step. All levels share one progress value, so they stay ordered
(and the masks built from them stay nested) at every step.
"""
from __future__ import annotations

import numbers
from typing import Any, Sequence

import tensorflow as tf
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_schedule

DEFAULT_SPARSITY_LEVELS = (0.0, 0.5, 0.7, 0.9)
MAX_LEVELS = 255  # level codes are uint8 values in 0..K

# Every concrete nested schedule, by class name, filled in by `NestedPruningSchedule.__init_subclass__`
# so that wrappers can deserialize any of them without a hard-coded table.
_SCHEDULE_CLASSES: dict[str, type] = {}


def validate_sparsity_levels(sparsity_levels: Any, name: str = "sparsity_levels") -> tuple[float, ...]:
    """Checks that `sparsity_levels` is a non-empty, strictly increasing sequence in [0, 1).

    Args:
        sparsity_levels: The candidate levels.
        name: The argument name used in error messages. Defaults to "sparsity_levels".

    Returns:
        The levels as a tuple of Python floats.

    Raises:
        TypeError: if it is not a sequence of real numbers.
        ValueError: if it is empty, too long, not strictly increasing or has a value outside [0, 1).

    Example:
        >>> validate_sparsity_levels([0.0, 0.5, 0.9])
        (0.0, 0.5, 0.9)
    """
    if isinstance(sparsity_levels, (str, bytes)) or not isinstance(sparsity_levels, Sequence):
        raise TypeError(f"{name} must be a sequence of floats in [0, 1), got {sparsity_levels!r}")
    levels = []
    for i, value in enumerate(sparsity_levels):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name}[{i}] must be a float in [0, 1), got {value!r}")
        value = float(value)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name}[{i}] must be in [0, 1), got {value}")
        levels.append(value)
    if not levels:
        raise ValueError(f"{name} must hold at least one level, got an empty sequence")
    if len(levels) > MAX_LEVELS:
        raise ValueError(f"{name} may hold at most {MAX_LEVELS} levels, got {len(levels)}")
    for i in range(1, len(levels)):
        if levels[i] <= levels[i - 1]:
            raise ValueError(
                f"{name} must be strictly increasing, got {name}[{i - 1}]={levels[i - 1]} "
                f">= {name}[{i}]={levels[i]}"
            )
    return tuple(levels)


def _validate_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


class NestedPruningSchedule(pruning_schedule.PruningSchedule):
    """Base class of schedules that give K nested sparsity levels per step.

    Subclasses set `self.sparsity_levels` (final sparsities, strictly increasing) and implement
    `sparsities(step, dtype)` and `should_prune(step)`. `__call__(step)` returns the tfmot pair
    `(should_prune, sparsities)` with `sparsities` a float32 `[K]` tensor.

    Example:
        >>> schedule = NestedPolynomialDecay((0.0, 0.5), begin_step=0, end_step=10)
        >>> isinstance(schedule, NestedPruningSchedule)
        True
    """

    sparsity_levels: tuple[float, ...]
    begin_step: int
    end_step: int

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _SCHEDULE_CLASSES[cls.__name__] = cls

    @property
    def num_levels(self) -> int:
        """The number of levels K."""
        return len(self.sparsity_levels)

    def sparsities(self, step, dtype=tf.float32) -> tf.Tensor:
        """Sparsity of every level at `step`, a `[K]` tensor of `dtype`."""
        raise NotImplementedError("NestedPruningSchedule subclasses must implement sparsities()")

    def should_prune(self, step) -> tf.Tensor:
        """Whether level codes are recomputed at `step` (a bool scalar tensor)."""
        raise NotImplementedError("NestedPruningSchedule subclasses must implement should_prune()")

    def __call__(self, step):
        return self.should_prune(step), self.sparsities(step, tf.float32)

    @classmethod
    def from_config(cls, config: dict) -> "NestedPruningSchedule":
        """Rebuilds a schedule from `get_config()` output (either the tfmot-style
        `{"class_name", "config"}` pair or the inner config dict)."""
        config = dict(config)
        if set(config) == {"class_name", "config"}:
            return deserialize_schedule(config) if cls is NestedPruningSchedule else cls(**config["config"])
        return cls(**config)


def deserialize_schedule(config: dict) -> NestedPruningSchedule:
    """Rebuilds any nested schedule from its `get_config()` output.

    Args:
        config: `{"class_name": <schedule class name>, "config": {...}}`.

    Returns:
        The schedule object.

    Raises:
        ValueError: if the class name is not a known `NestedPruningSchedule` subclass.

    Example:
        >>> s = NestedPolynomialDecay((0.0, 0.5), begin_step=0, end_step=10)
        >>> deserialize_schedule(s.get_config()).sparsity_levels
        (0.0, 0.5)
    """
    if isinstance(config, NestedPruningSchedule):
        return config
    if not isinstance(config, dict) or "class_name" not in config or "config" not in config:
        raise ValueError(f"pruning_schedule config must be {{'class_name', 'config'}}, got {config!r}")
    name = config["class_name"].split(">")[-1]
    cls = _SCHEDULE_CLASSES.get(name)
    if cls is None:
        raise ValueError(
            f"pruning_schedule class_name {config['class_name']!r} is not a nested schedule; "
            f"expected one of {sorted(_SCHEDULE_CLASSES)}"
        )
    return cls(**config["config"])


class NestedPolynomialDecay(NestedPruningSchedule):
    """K nested sparsity levels, each following Zhu & Gupta's polynomial (cubic) ramp.

    With shared progress `p = clip((step - begin_step) / (end_step - begin_step), 0, 1)` the
    sparsity of level i is `s_i(step) = s_i * (1 - (1 - p) ** power)` — tfmot's `PolynomialDecay`
    from 0 to `s_i`. Codes are recomputed every `frequency` steps from `begin_step` through
    `end_step`, and always at `end_step` itself (so the final levels are reached exactly);
    afterwards they are frozen. With `begin_step == end_step` the final levels apply in one shot.

    Args:
        sparsity_levels: Final sparsity of each level, strictly increasing, each in [0, 1).
            Level 0 may itself be sparse. Defaults to (0.0, 0.5, 0.7, 0.9).
        begin_step: First step at which codes are computed. Defaults to 0.
        end_step: Step at which every level reaches its final sparsity (>= begin_step). Required.
        frequency: Recompute codes every `frequency` steps. Defaults to 100.
        power: Exponent of the ramp. Defaults to 3.

    Example:
        >>> schedule = NestedPolynomialDecay((0.0, 0.5, 0.9), begin_step=0, end_step=1000)
        >>> should_prune, sparsities = schedule(tf.constant(1000))
        >>> [round(float(s), 3) for s in sparsities]
        [0.0, 0.5, 0.9]
    """

    def __init__(
        self,
        sparsity_levels: Sequence[float] = DEFAULT_SPARSITY_LEVELS,
        begin_step: int = 0,
        end_step: int | None = None,
        frequency: int = 100,
        power: float = 3,
    ):
        self.sparsity_levels = validate_sparsity_levels(sparsity_levels)
        self.begin_step = _validate_int(begin_step, "begin_step", 0)
        if end_step is None:
            raise ValueError("end_step is required: the step at which every level reaches its final sparsity")
        self.end_step = _validate_int(end_step, "end_step", 0)
        if self.end_step < self.begin_step:
            raise ValueError(f"end_step must be >= begin_step ({self.begin_step}), got {self.end_step}")
        self.frequency = _validate_int(frequency, "frequency", 1)
        if isinstance(power, bool) or not isinstance(power, numbers.Real) or not power > 0:
            raise ValueError(f"power must be a number > 0, got {power!r}")
        self.power = power

    def _progress(self, step, dtype):
        step = tf.cast(step, tf.int64)
        if self.end_step == self.begin_step:
            return tf.cast(step >= self.begin_step, dtype)
        span = tf.constant(self.end_step - self.begin_step, dtype)
        p = tf.cast(step - self.begin_step, dtype) / span
        return tf.clip_by_value(p, tf.constant(0, dtype), tf.constant(1, dtype))

    def sparsities(self, step, dtype=tf.float32) -> tf.Tensor:
        """Sparsity of every level at `step`, a `[K]` tensor of `dtype`.

        At and after `end_step` the values are exactly `sparsity_levels` (in `dtype`).
        """
        with tf.name_scope("nested_polynomial_decay"):
            p = self._progress(step, dtype)
            ramp = 1 - tf.pow(1 - p, tf.constant(self.power, dtype))
            return tf.constant(self.sparsity_levels, dtype) * ramp

    def should_prune(self, step) -> tf.Tensor:
        """True at `begin_step + k * frequency` up to `end_step`, and at `end_step`."""
        step = tf.cast(step, tf.int64)
        in_range = tf.logical_and(step >= self.begin_step, step <= self.end_step)
        on_turn = tf.logical_or(
            tf.equal(tf.math.floormod(step - self.begin_step, self.frequency), 0),
            tf.equal(step, self.end_step),
        )
        return tf.logical_and(in_range, on_turn)

    def get_config(self) -> dict:
        return {
            "class_name": self.__class__.__name__,
            "config": {
                "sparsity_levels": list(self.sparsity_levels),
                "begin_step": self.begin_step,
                "end_step": self.end_step,
                "frequency": self.frequency,
                "power": self.power,
            },
        }

    def __repr__(self) -> str:
        c = self.get_config()["config"]
        return "NestedPolynomialDecay(" + ", ".join(f"{k}={v!r}" for k, v in c.items()) + ")"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self) -> int:
        return hash(repr(self))


def update_if_scheduled(schedule: NestedPruningSchedule, step, last_update_step, recompute) -> tf.Tensor:
    """Calls ``recompute()`` when the schedule says the masks change at ``step``.

    Also once at or after ``end_step`` if the update at ``end_step`` was missed (a resumed or
    sparsely stepped run), judged by ``last_update_step``. Works eagerly and inside a tf.function.

    Args:
        schedule: The nested schedule.
        step: The int64 step.
        last_update_step: The step the masks were last recomputed at (int64 tensor or variable).
        recompute: A callable that recomputes and assigns the codes and returns ``tf.constant(True)``.

    Returns:
        A bool scalar tensor: whether the codes were recomputed.
    """
    end = tf.constant(schedule.end_step, tf.int64)
    should = tf.logical_or(schedule.should_prune(step),
                           tf.logical_and(step >= end, last_update_step < end))
    if tf.executing_eagerly():
        if bool(should):
            recompute()
        return should
    return tf.cond(should, recompute, lambda: tf.constant(False))
