"""``if_tree_sliced``: the IF tree over a unit run's levels, each sliced to the units it keeps.

The models are the levels' narrow models (`dsnn_keras.narrow_model`), physically smaller layers
that may differ in shape; the graph is the fused IF tree's. `tflite.export.export_levels` records
each level's ``units`` and ``realisation: sliced`` in the metadata.

Example:
    >>> resolve_design(ExportOptions(), (0.0, 0.5), units=units).name
    'if_tree_sliced'
"""
from __future__ import annotations

from tflite.designs.if_tree import FusedLstmDesign
from tflite.designs.registry import DESIGN_SLICED


class SlicedDesign(FusedLstmDesign):
    """The fused IF tree over per-level sliced (narrow) models."""

    name = DESIGN_SLICED
