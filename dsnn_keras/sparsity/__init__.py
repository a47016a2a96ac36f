"""dsnn_keras.sparsity: nested-mask dynamic sparsity for tf_keras, the reusable library.

Nothing here knows about speech: any tf_keras model whose layers tfmot can prune (plus EinsumDense
and `PrunableLayer`s) gets K nested sparsity levels on shared weights, selectable per call. The
ASR application (`dsnn_keras.model`, `trainer`, `evaluate`) is built on it; `dsnn_keras` re-exports
these names too. One module per concept, as in tfmot's `sparsity/keras`:

- `schedule`: `NestedPolynomialDecay` (one tfmot polynomial ramp per level);
- `masks`: nested level codes from magnitudes (weight and block granularity);
- `units`: whole-unit granularity across layers, `narrow_model`;
- `registry`: which weights of which layers are prunable;
- `wrapper`: `NestedPruneLowMagnitude`, the layer wrapper;
- `prune`: `prune_nested`, `update_nested_masks`, level selection, `strip_nested`;
- `callbacks`: `UpdateNestedPruningStep`, `NestedPruningSummaries` for `model.fit`.

Names are imported lazily (PEP 562): importing the package costs nothing until one is used.

Example:
    >>> from dsnn_keras.sparsity import prune_nested, NestedPolynomialDecay, sparsity_level_scope
    >>> model = prune_nested(model, NestedPolynomialDecay([0.0, 0.5, 0.9], begin_step=0, end_step=1000))
    >>> with sparsity_level_scope(model, 2):
    ...     logits = model(x)
"""
from __future__ import annotations

import os

from dsnn_keras.lazy import lazy_exports

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

_EXPORTS = {
    "NestedPolynomialDecay": "dsnn_keras.sparsity.schedule",
    "NestedPruneLowMagnitude": "dsnn_keras.sparsity.wrapper",
    "UpdateNestedPruningStep": "dsnn_keras.sparsity.callbacks",
    "NestedPruningSummaries": "dsnn_keras.sparsity.callbacks",
    "write_nested_summaries": "dsnn_keras.sparsity.callbacks",
    "prune_nested": "dsnn_keras.sparsity.prune",
    "strip_nested": "dsnn_keras.sparsity.prune",
    "set_sparsity_level": "dsnn_keras.sparsity.prune",
    "sparsity_level_scope": "dsnn_keras.sparsity.prune",
    "level_codes": "dsnn_keras.sparsity.prune",
    "update_nested_masks": "dsnn_keras.sparsity.prune",
    "sparsity_levels": "dsnn_keras.sparsity.prune",
    "measured_sparsities": "dsnn_keras.sparsity.prune",
    "units_kept": "dsnn_keras.sparsity.units",
    "kept_unit_indices": "dsnn_keras.sparsity.units",
    "narrow_model": "dsnn_keras.sparsity.units",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
