"""Export designs: one module per way of laying K levels out in one .tflite, and their registry.

Each design is an `ExportDesign` (build the module, convert, post-process, describe itself in the
metadata) registered under the name the metadata's ``export.design`` records. `resolve_design`
maps the user's options to one (`DESIGN_TABLE`); `tflite.export.export_levels(..., design=NAME)`
uses any registered one. Adding a design = one new module here + one registration line below.
No TensorFlow import.

Example:
    >>> from tflite.designs import design_names, get_design
    >>> get_design("if_tree_sliced").state_reset_in_graph
    True
"""
from __future__ import annotations

from tflite.designs.base import KERNEL_FC_LOOP, KERNEL_FUSED_LSTM, BuiltDesign, DesignRequest, ExportDesign
from tflite.designs.fc_loop import FcLoopDesign
from tflite.designs.if_tree import FusedLstmDesign
from tflite.designs.registry import (DESIGN_CHOICES, DESIGN_FC_LOOP, DESIGN_FUSED, DESIGN_SHARED, DESIGN_SINGLE,
                                     DESIGN_SLICED, DESIGN_TABLE, design_names, get_design, register_design,
                                     resolve_design, unregister_design)
from tflite.designs.shared import SharedWeightsDesign
from tflite.designs.single_level import SingleLevelDesign
from tflite.designs.sliced import SlicedDesign

# The registration lines: one per design.
register_design(FusedLstmDesign())
register_design(FcLoopDesign())
register_design(SlicedDesign())
register_design(SingleLevelDesign())
register_design(SharedWeightsDesign())

__all__ = ["BuiltDesign", "DESIGN_CHOICES", "DESIGN_FC_LOOP", "DESIGN_FUSED", "DESIGN_SHARED", "DESIGN_SINGLE",
           "DESIGN_SLICED", "DESIGN_TABLE", "DesignRequest", "ExportDesign", "FcLoopDesign", "FusedLstmDesign",
           "KERNEL_FC_LOOP", "KERNEL_FUSED_LSTM", "SharedWeightsDesign", "SingleLevelDesign", "SlicedDesign",
           "design_names", "get_design", "register_design", "resolve_design", "unregister_design"]
