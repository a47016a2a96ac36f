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

import importlib
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

_EXPORTS = {
    "NestedPolynomialDecay": "schedule",
    "NestedPruneLowMagnitude": "wrapper",
    "UpdateNestedPruningStep": "callbacks",
    "NestedPruningSummaries": "callbacks",
    "write_nested_summaries": "callbacks",
    "prune_nested": "prune",
    "strip_nested": "prune",
    "set_sparsity_level": "prune",
    "sparsity_level_scope": "prune",
    "level_codes": "prune",
    "update_nested_masks": "prune",
    "sparsity_levels": "prune",
    "measured_sparsities": "prune",
    "units_kept": "units",
    "narrow_model": "units",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dsnn_keras.sparsity' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
