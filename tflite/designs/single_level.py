"""``single_level``: one level exported alone, the usual way (no ``IF``): the benchmark's baseline.

Without the ``IF`` the fused LSTM state persists between invokes, so the metadata says
``state_reset_in_graph: false`` and runtimes reset the variables after each invoke.

Example:
    >>> export_levels([model], "level_2.tflite", ..., single_level=True, single_level_of=2)
"""
from __future__ import annotations

from typing import Optional, Sequence

from tflite.designs.base import DesignRequest
from tflite.designs.fc_loop import lstm_kernels, models_for_kernels
from tflite.designs.if_tree import FusedLstmDesign
from tflite.designs.registry import DESIGN_SINGLE
from tflite.errors import ExportError


class SingleLevelDesign(FusedLstmDesign):
    """One model, no ``IF``; its LSTMs follow ``sparse_speed`` like the IF-tree designs'."""

    name = DESIGN_SINGLE
    force_if = False
    state_reset_in_graph = False
    streams = False   # a baseline for whole-utterance latency only

    def check(self, models: Sequence, options, units: Optional[Sequence[dict]]) -> None:
        if len(models) != 1:
            raise ExportError("single_level export takes exactly one model")

    def lstm_kernels(self, request: DesignRequest) -> list[str]:
        return lstm_kernels(request.sparsities, request.options)

    def graph_models(self, request: DesignRequest) -> list:
        return models_for_kernels(request.models, self.lstm_kernels(request))

    def describe(self, request: DesignRequest, module) -> dict:
        return {**super().describe(request, module), "single_level_of": int(request.single_level_of)}
