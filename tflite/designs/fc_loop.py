"""``if_tree_fc_loop``: the IF tree with the sparse levels' LSTMs as FULLY_CONNECTED ops in a WHILE loop.

``--sparse_speed``: levels at least ``sparse_speed_min_sparsity`` sparse run their LSTMs as
`tflite.fc_lstm.FCLoopLSTM` and the file stores sparse weights (``EXPERIMENTAL_SPARSITY``), so zeros
can save time; less sparse levels keep the fused kernel (TFLite's sparse FC kernel loses to the
dense one below ~60 % zeros, docs/export.md).

Example:
    >>> lstm_kernels((0.0, 0.5, 0.9), ExportOptions(sparse_speed=True))
    ['fused_lstm', 'fused_lstm', 'fc_loop']
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from tflite.designs.base import KERNEL_FC_LOOP, KERNEL_FUSED_LSTM, DesignRequest
from tflite.designs.if_tree import FusedLstmDesign
from tflite.designs.registry import DESIGN_FC_LOOP

if TYPE_CHECKING:
    from tflite.export import ExportOptions


def lstm_kernels(sparsities: Sequence[float], options: "ExportOptions") -> list[str]:
    """Per level: ``"fc_loop"`` where ``sparse_speed`` is on and the level is sparse enough, else fused."""
    if not options.sparse_speed:
        return [KERNEL_FUSED_LSTM] * len(sparsities)
    return [KERNEL_FC_LOOP if s >= options.sparse_speed_min_sparsity else KERNEL_FUSED_LSTM for s in sparsities]


def models_for_kernels(models: Sequence, kernels: Sequence[str]) -> list:
    """``models`` with the LSTMs of every FC-loop level replaced (`tflite.fc_lstm.replace_lstms`)."""
    if KERNEL_FC_LOOP not in kernels:
        return list(models)
    from tflite.fc_lstm import replace_lstms

    return [replace_lstms(m) if k == KERNEL_FC_LOOP else m for m, k in zip(models, kernels)]


class FcLoopDesign(FusedLstmDesign):
    """The IF tree whose sparse levels run FC-loop LSTMs over sparse weights."""

    name = DESIGN_FC_LOOP

    def lstm_kernels(self, request: DesignRequest) -> list[str]:
        return lstm_kernels(request.sparsities, request.options)

    def graph_models(self, request: DesignRequest) -> list:
        return models_for_kernels(request.models, self.lstm_kernels(request))
