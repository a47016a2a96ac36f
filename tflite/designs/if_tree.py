"""``if_tree_fused_lstm``: every level's constant weights under a builtin ``IF`` tree, fused LSTM kernels.

The default design (`tflite.graph.RecognizerModule`): the fastest at every level (each level runs the
dense kernels, no masking at run time), about K times one model's size. The other IF-tree designs
(`tflite.designs.fc_loop`, `tflite.designs.sliced`) and the single-level baseline subclass it.

Example:
    >>> built = FusedLstmDesign().build(request)
    >>> built.export["lstm_kernels"]
    ['fused_lstm', 'fused_lstm', 'fused_lstm']
"""
from __future__ import annotations

from tflite.designs.base import DesignRequest, ExportDesign
from tflite.designs.registry import DESIGN_FUSED


class FusedLstmDesign(ExportDesign):
    """Per-level constant weights under an ``IF`` tree; fused LSTMs at every level."""

    name = DESIGN_FUSED
    force_if = True   # wrap even one level in an IF (zeroes the fused LSTM state on every invoke)
    streams = True

    def graph_models(self, request: DesignRequest) -> list:
        """The Keras models the graph runs, one per level. Default: the given ones."""
        return list(request.models)

    def build_module(self, request: DesignRequest):
        from tflite.graph import RecognizerModule

        return RecognizerModule(self.graph_models(request), request.feature_config, request.blank_id,
                                min_frames=request.min_frames, force_if=self.force_if,
                                stream=self.stream_signature(request))
