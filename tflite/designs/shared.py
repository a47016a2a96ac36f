"""``shared_weights_cached``: ONE stored copy of each pruned weight + uint8 level codes (``--design shared``).

The graph and conversion are `tflite.shared_weights` (`SharedWeightsModule`, `convert_shared`, which
also applies this design's rewrites: `tflite.rewrites.fold_concat_split` and, for int8/float16
storage, `tflite.rewrites.shrink_unread_initial_values`). Weight and block runs only: a unit run's
sliced levels differ in shape, and the LSTMs stay fused (no ``sparse_speed``).

Example:
    >>> export_levels(models, "m.tflite", ..., options=ExportOptions(design="shared"))
"""
from __future__ import annotations

from typing import Optional, Sequence

from tflite.designs.base import DesignRequest, ExportDesign
from tflite.designs.registry import DESIGN_SHARED
from tflite.errors import ExportError


class SharedWeightsDesign(ExportDesign):
    """One copy of the weights; a level change writes the level's weights into resource variables."""

    name = DESIGN_SHARED

    def check(self, models: Sequence, options, units: Optional[Sequence[dict]]) -> None:
        if units is not None:
            raise ExportError("the shared design stores one full-width copy; export a unit run's levels "
                              "masked (not sliced) for it")
        if options.sparse_speed:
            raise ExportError("ExportOptions: design 'shared' and sparse_speed cannot be combined")

    def build_module(self, request: DesignRequest):
        from tflite.shared_weights import shared_module_for_export

        return shared_module_for_export(request.models, request.feature_config, request.blank_id,
                                        request.min_frames, request.options.quantize)

    def convert(self, module, request: DesignRequest) -> bytes:
        from tflite.shared_weights import convert_shared_for_export

        return convert_shared_for_export(module)

    def lstm_kernels(self, request: DesignRequest) -> None:
        return None

    def describe(self, request: DesignRequest, module) -> dict:
        return {**super().describe(request, module), "shared_weights": module.summary()}
