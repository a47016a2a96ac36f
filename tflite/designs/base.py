"""The interface every export design implements, and what it is given and gives back.

An export design is one way to put K per-level models into ONE .tflite file whose
``sparsity_level`` input picks the level: it builds a ``tf.Module`` with the two signatures of
`tflite.signatures`, converts it, optionally rewrites the bytes, and describes itself in the
metadata's ``export`` entry. `tflite.export.export_levels` does the rest for every design: the
common rewrites (LSTM cell clip off, float frontend), operator check, level entries, latency,
metadata, verification against Keras, atomic write.

Example:
    >>> class MyDesign(FusedLstmDesign):
    ...     name = "my_design"
    >>> register_design(MyDesign())
    >>> export_levels(models, "m.tflite", ..., design="my_design")
"""
from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar, Optional, Sequence

from tflite.convert import convert_module

if TYPE_CHECKING:   # annotations only: tflite.export imports the designs
    from tflite.export import ExportOptions

KERNEL_FUSED_LSTM = "fused_lstm"   # metadata export.lstm_kernels: TFLite's fused LSTM kernel
KERNEL_FC_LOOP = "fc_loop"         # ... FULLY_CONNECTED ops in a WHILE loop (`tflite.fc_lstm`)


@dataclasses.dataclass(frozen=True)
class DesignRequest:
    """What a design builds from (already validated by `tflite.export.export_levels`).

    Args:
        models: One plain tf_keras model per level.
        sparsities: Sparsity of each level (non-decreasing).
        feature_config: The `FeatureConfig` of the in-graph frontend.
        blank_id: CTC blank id (the last class).
        min_frames: Fewest feature frames the models accept (shorter input is padded).
        options: The `tflite.export.ExportOptions`.
        units: Per level, ``{layer: units kept}`` when the models are a unit run's sliced levels,
            else None. Defaults to None.
        single_level_of: For a single-level file, the DSNN level it stands for. Defaults to 0.
        unit_indices: Per level, ``{layer: indices of the kept units}`` of a unit run's sliced
            levels (`dsnn_keras.sparsity.kept_unit_indices`): lets the levels share one stream
            state layout. Defaults to None.

    Raises:
        ValueError: models and sparsities (or units) differ in length, or ``min_frames < 1``.
    """

    models: tuple
    sparsities: tuple
    feature_config: Any
    blank_id: int
    min_frames: int
    options: "ExportOptions"
    units: Optional[tuple] = None
    single_level_of: int = 0
    unit_indices: Optional[tuple] = None

    def __post_init__(self) -> None:
        if len(self.models) != len(self.sparsities):
            raise ValueError(f"DesignRequest: {len(self.models)} models but {len(self.sparsities)} sparsities")
        if self.units is not None and len(self.units) != len(self.models):
            raise ValueError(f"DesignRequest: {len(self.units)} unit entries for {len(self.models)} levels")
        if self.min_frames < 1:
            raise ValueError(f"DesignRequest.min_frames must be >= 1, got {self.min_frames}")


@dataclasses.dataclass(frozen=True)
class BuiltDesign:
    """What a design gives back.

    Attributes:
        data: The converted (and design-rewritten) .tflite bytes, before the common rewrites.
        export: The design's part of the metadata's ``export`` entry: ``lstm_kernels``,
            ``state_reset_in_graph``, ``single_level_of`` and any design-specific keys (e.g.
            ``shared_weights``), which follow ``verification`` in the entry.
        stream_state: The ``stream`` signature's state tensors (`dsnn_keras.streaming.StateTensor`),
            or None when the file has no ``stream`` signature.
    """

    data: bytes
    export: dict
    stream_state: Optional[tuple] = None


class ExportDesign(abc.ABC):
    """One way to lay K levels out in one .tflite file. Subclass, set ``name``, register.

    Attributes:
        name: The registry key, also written as the metadata's ``export.design``.
        state_reset_in_graph: Whether every invoke starts from zero LSTM state by itself (an ``IF``
            re-allocates its branch); False means runtimes must reset the variables after an invoke.

    A subclass implements `build_module`; `convert`, `post_process` and `describe` have defaults
    for a `tflite.graph.RecognizerModule` with fused LSTMs. `build` runs them in order.
    """

    name: ClassVar[str] = ""
    state_reset_in_graph: ClassVar[bool] = True
    streams: ClassVar[bool] = False   # whether the design can add the ``stream`` signature

    def check(self, models: Sequence, options: "ExportOptions", units: Optional[Sequence[dict]]) -> None:
        """Refuses inputs this design cannot export (called after the common model validation).

        Args:
            models: The per-level models.
            options: The export options.
            units: Per-level kept units of a sliced unit run, or None.

        Raises:
            tflite.errors.ExportError: the design does not take these inputs. Default: accepts all.
        """

    @abc.abstractmethod
    def build_module(self, request: DesignRequest):
        """The ``tf.Module`` with the ``recognize`` and ``recognize_features`` functions."""

    def convert(self, module, request: DesignRequest) -> bytes:
        """The module's .tflite bytes (builtin ops only). Default: `tflite.convert.convert_module`."""
        return convert_module(module, request.options.quantize,
                              sparse=KERNEL_FC_LOOP in (self.lstm_kernels(request) or ()))

    def post_process(self, data: bytes, request: DesignRequest) -> bytes:
        """This design's own rewrites of the converted bytes (use `tflite.rewrites`). Default: none."""
        return data

    def lstm_kernels(self, request: DesignRequest) -> Optional[list[str]]:
        """The LSTM kernel of each level (metadata ``lstm_kernels``). Default: fused at every level."""
        return [KERNEL_FUSED_LSTM] * len(request.models)

    def describe(self, request: DesignRequest, module) -> dict:
        """The design's part of the metadata's ``export`` entry (see `BuiltDesign.export`)."""
        return {"lstm_kernels": self.lstm_kernels(request), "state_reset_in_graph": self.state_reset_in_graph,
                "single_level_of": None}

    def stream_signature(self, request: DesignRequest):
        """The ``stream`` signature to add (`tflite.streaming.StreamSignature`), or None.

        None when the design does not stream, ``options.stream`` is ``"off"``, or (``"auto"``) the
        models cannot run chunk by chunk.

        Raises:
            tflite.errors.ExportError: ``options.stream == "on"`` and the models cannot stream.
        """
        if not self.streams or request.options.stream == "off":
            return None
        from tflite.streaming import stream_signature_for

        return stream_signature_for(request)

    def build(self, request: DesignRequest) -> BuiltDesign:
        """``build_module`` -> ``convert`` -> ``post_process`` -> ``describe``.

        Args:
            request: The validated `DesignRequest`.

        Returns:
            A `BuiltDesign`.

        Raises:
            tflite.errors.ExportError: conversion failed.
        """
        module = self.build_module(request)
        data = self.post_process(self.convert(module, request), request)
        stream = getattr(module, "stream_signature", None)
        return BuiltDesign(data=data, export=self.describe(request, module),
                           stream_state=None if stream is None else tuple(stream.state_specs))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
