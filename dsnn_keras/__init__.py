"""dsnn_keras: nested-mask dynamic sparsity for tf_keras, the ASR model, trainer and evaluation.

The public API is re-exported here lazily (PEP 562), so ``import dsnn_keras`` and the
command-line ``--help`` screens do not pay for TensorFlow's import until a name is used.
"""
from __future__ import annotations

import importlib
import os

# tfmot is Keras-2 only; make sure anything that asks TensorFlow for Keras gets tf_keras.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

_EXPORTS = {
    # Frontend (the only feature code in the project).
    "FeatureConfig": "dsnn_keras.frontend",
    "log_mel_spectrogram": "dsnn_keras.frontend",
    # Nested-mask dynamic sparsity.
    "NestedPolynomialDecay": "dsnn_keras.sparsity.schedule",
    "NestedPruneLowMagnitude": "dsnn_keras.sparsity.wrapper",
    "UpdateNestedPruningStep": "dsnn_keras.sparsity.callbacks",
    "NestedPruningSummaries": "dsnn_keras.sparsity.callbacks",
    "prune_nested": "dsnn_keras.sparsity.prune",
    "strip_nested": "dsnn_keras.sparsity.prune",
    "set_sparsity_level": "dsnn_keras.sparsity.prune",
    "sparsity_level_scope": "dsnn_keras.sparsity.prune",
    "level_codes": "dsnn_keras.sparsity.prune",
    "update_nested_masks": "dsnn_keras.sparsity.prune",
    "sparsity_levels": "dsnn_keras.sparsity.prune",
    "units_kept": "dsnn_keras.sparsity.units",
    "narrow_model": "dsnn_keras.sparsity.units",
    # ASR model, data, training and trained runs.
    "load_config": "dsnn_keras.config",
    "PreparedDataset": "dsnn_keras.dataset",
    "build_model": "dsnn_keras.model",
    "build_pruned_model": "dsnn_keras.model",
    "output_lengths": "dsnn_keras.model",
    "train": "dsnn_keras.trainer",
    "load_run": "dsnn_keras.run_dir",
    "TrainedRun": "dsnn_keras.run_dir",
    "measured_sparsities": "dsnn_keras.sparsity.prune",
    "write_nested_summaries": "dsnn_keras.sparsity.callbacks",
    # Decoding and evaluation.
    "greedy_ctc_decode": "dsnn_keras.decoding",
    "ids_to_text": "dsnn_keras.decoding",
    "error_rates": "dsnn_keras.decoding",
    "evaluate_run": "dsnn_keras.evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'dsnn_keras' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
