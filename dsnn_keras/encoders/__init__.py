"""The encoder registry: ``model.encoder`` names one of these; each is one module.

An encoder turns the subsampling front-end's output ``[batch, frames, width]`` into
``[batch, frames, channels]`` (the same frames: the front-end alone sets the time reduction) for the
CTC head. It is an `Encoder`: a ``build(x, model_config)`` function that appends its layers to the
functional graph, and a ``state(model_config)`` function that describes its streaming state as
`StateSpec` entries (what a streaming model must carry from one chunk to the next).

Built-in encoders live in ``dsnn_keras/encoders/<name>.py``, each defining ``ENCODER``, and are
listed in `BUILTIN_ENCODERS` (name -> module; the module is imported on first use, so this registry
and the config validation that consults it import no TensorFlow). Code outside the package adds one
with `register_encoder`.

| name | module | state per layer |
|---|---|---|
| ``lstm`` | `dsnn_keras.encoders.lstm` | ``h`` and ``c`` of ``units`` floats (recurrent) |
| ``conformer`` | `dsnn_keras.encoders.conformer` | attention keys and values of the last ``left_context`` frames (of every past frame, unbounded, when it is not set), the last ``conv_kernel - 1`` frames of the depthwise conv's input |

Example:
    >>> encoder_names()
    ('lstm', 'conformer')
    >>> [s.name for s in encoder_state(ModelConfig(lstm_units=(8,)))]
    ['lstm_0/h', 'lstm_0/c']
    >>> register_encoder("dense_stack", build_dense_stack, state=lambda model_config: ())
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Optional, Sequence

from dsnn_keras.errors import DsnnError

# The built-in encoders: name -> module defining ENCODER. Adding one is a module plus a line here.
BUILTIN_ENCODERS: dict[str, str] = {
    "lstm": "dsnn_keras.encoders.lstm",
    "conformer": "dsnn_keras.encoders.conformer",
}

STATE_KINDS = ("recurrent", "attention_cache", "conv_cache")


class EncoderError(DsnnError, ValueError):
    """An encoder name is unknown or taken, or an encoder or its state description is malformed."""


@dataclasses.dataclass(frozen=True)
class StateSpec:
    """One tensor of an encoder's streaming state, for one utterance (no batch axis).

    Args:
        name: ``"<layer>/<part>"``, unique within the model, e.g. ``"lstm_0/h"``.
        kind: ``"recurrent"``: a fixed-size vector carried from each frame to the next (an LSTM's
            ``h`` or ``c``); ``shape`` is ``(units,)``. ``"attention_cache"``: the keys or values
            of the earlier frames the attention reads, ``(frames, heads, head_dim)``: ``frames`` is
            the bounded left context, or None when the attention reads the whole past, so the
            cache grows with the utterance (unbounded). ``"conv_cache"``: the last
            ``shape[0]`` input frames of a causal convolution; ``shape`` is ``(frames, channels)``.
        shape: Per-utterance shape; positive ints, None only as an unbounded attention cache's
            frame axis.

    Raises:
        EncoderError: an empty name, an unknown kind, or a shape that does not fit the kind.
    """

    name: str
    kind: str
    shape: tuple[Optional[int], ...]

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise EncoderError(f"StateSpec: name must be a non-empty string, got {self.name!r}")
        if self.kind not in STATE_KINDS:
            raise EncoderError(f"StateSpec {self.name}: kind must be one of {', '.join(STATE_KINDS)}, "
                               f"got {self.kind!r}")
        shape = tuple(self.shape)
        object.__setattr__(self, "shape", shape)
        fixed = shape[1:] if self.kind == "attention_cache" and shape and shape[0] is None else shape
        if self.kind == "attention_cache" and len(shape) != 3:
            raise EncoderError(f"StateSpec {self.name}: an attention cache's shape is (frames, heads, head_dim), "
                               f"frames None when unbounded; got {shape}")
        if self.kind == "recurrent" and len(shape) != 1:
            raise EncoderError(f"StateSpec {self.name}: a recurrent state's shape is (units,), got {shape}")
        if self.kind == "conv_cache" and len(shape) != 2:
            raise EncoderError(f"StateSpec {self.name}: a conv cache's shape is (frames, channels), got {shape}")
        if any(isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in fixed):
            raise EncoderError(f"StateSpec {self.name}: dimensions must be positive ints, got {shape}")

    @property
    def bounded(self) -> bool:
        """Whether the state has a fixed size (False for an unbounded attention cache: it grows per frame)."""
        return None not in self.shape


@dataclasses.dataclass(frozen=True)
class Encoder:
    """A registered encoder.

    Args:
        name: The ``model.encoder`` value that selects it (a Python identifier).
        build: ``build(x, model_config) -> y``: appends the encoder's layers to the functional
            graph; ``x`` is ``[batch, frames, width]``, ``y`` is ``[batch, frames, channels]`` with
            the same frames. Layer names must not clash with the front-end's (``cmvn``,
            ``running_mean``, ``add_channel``, ``conv_<i>``, ``flatten_freq``) or the head's
            (``projection``, ``logits``).
        state: ``state(model_config) -> sequence of StateSpec``: the streaming state of the
            encoder that ``build`` builds for that config; empty for an encoder without state
            (every output frame depends on its own input frame only).

    Raises:
        EncoderError: a name that is not an identifier, or a ``build``/``state`` that is not callable.
    """

    name: str
    build: Callable[[Any, Any], Any]
    state: Callable[[Any], Sequence[StateSpec]]

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise EncoderError(f"encoder name must be a Python identifier, got {self.name!r}")
        for part in ("build", "state"):
            if not callable(getattr(self, part)):
                raise EncoderError(f"encoder {self.name}: {part} must be callable, got {getattr(self, part)!r}")


_REGISTERED: dict[str, Encoder] = {}


def encoder_names() -> tuple[str, ...]:
    """Every encoder ``model.encoder`` may name: the built-ins, then the registered ones in order.

    Imports no encoder module (no TensorFlow).
    """
    return tuple(BUILTIN_ENCODERS) + tuple(_REGISTERED)


def register_encoder(name: str, build: Callable[[Any, Any], Any],
                     state: Callable[[Any], Sequence[StateSpec]], *, replace: bool = False) -> Encoder:
    """Adds an encoder that ``model.encoder: <name>`` then selects (`Encoder` has the contract).

    Register before the config is loaded: `dsnn_keras.config` checks ``model.encoder`` against
    `encoder_names`. Every process that builds the model (training, ``dsnn-eval``, export) must
    register it too; a built-in encoder (a module and a `BUILTIN_ENCODERS` line) needs nothing.

    Args:
        name: The encoder's name.
        build: ``build(x, model_config) -> y``.
        state: ``state(model_config) -> sequence of StateSpec`` (``lambda c: ()`` when stateless).
        replace: Replace an encoder registered earlier under ``name``. Defaults to False.

    Returns:
        The `Encoder`.

    Raises:
        EncoderError: ``name`` is a built-in encoder, or already registered and ``replace`` is False.

    Example:
        >>> def build_dense_stack(x, model_config):
        ...     for i, units in enumerate(model_config.lstm_units):
        ...         x = keras.layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
        ...     return x
        >>> register_encoder("dense_stack", build_dense_stack, state=lambda model_config: ())
    """
    encoder = Encoder(name, build, state)
    if name in BUILTIN_ENCODERS:
        raise EncoderError(f"encoder {name!r} is built in ({BUILTIN_ENCODERS[name]}); choose another name")
    if name in _REGISTERED and not replace:
        raise EncoderError(f"encoder {name!r} is already registered; pass replace=True to replace it")
    _REGISTERED[name] = encoder
    return encoder


def unregister_encoder(name: str) -> None:
    """Removes an encoder added with `register_encoder` (built-ins cannot be removed).

    Raises:
        EncoderError: ``name`` was not added with `register_encoder`.
    """
    if name not in _REGISTERED:
        raise EncoderError(f"encoder {name!r} was not added with register_encoder")
    del _REGISTERED[name]


def get_encoder(name: str) -> Encoder:
    """The `Encoder` named ``name`` (a built-in one's module is imported here).

    Raises:
        EncoderError: no encoder has that name (the message lists the known ones).
    """
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in BUILTIN_ENCODERS:
        raise EncoderError(f"unknown encoder {name!r}; known encoders: {', '.join(encoder_names())}")
    encoder = importlib.import_module(BUILTIN_ENCODERS[name]).ENCODER
    if not isinstance(encoder, Encoder) or encoder.name != name:
        raise EncoderError(f"{BUILTIN_ENCODERS[name]}.ENCODER must be an Encoder named {name!r}, got {encoder!r}")
    return encoder


def encoder_state(model_config: Any) -> tuple[StateSpec, ...]:
    """The streaming state of the encoder ``model_config`` builds.

    Args:
        model_config: `dsnn_keras.config.ModelConfig`.

    Returns:
        The encoder's `StateSpec` entries, in layer order.

    Raises:
        EncoderError: the encoder is unknown, or its ``state`` returned something other than
            StateSpec entries with unique names.
    """
    encoder = get_encoder(model_config.encoder)
    specs = tuple(encoder.state(model_config))
    if not all(isinstance(s, StateSpec) for s in specs):
        raise EncoderError(f"encoder {encoder.name}: state() must return StateSpec entries, got {specs!r}")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise EncoderError(f"encoder {encoder.name}: state names must be unique, got {names}")
    return specs
