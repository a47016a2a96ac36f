"""dsnn_keras: nested-mask dynamic sparsity for tf_keras, the ASR model, trainer and evaluation.

The public API is re-exported here lazily (PEP 562), so ``import dsnn_keras`` and the
command-line ``--help`` screens do not pay for TensorFlow's import until a name is used.
"""
from __future__ import annotations

import os

from dsnn_keras import sparsity as _sparsity   # lazy itself: imports none of its modules
from dsnn_keras.lazy import lazy_exports

# tfmot is Keras-2 only; make sure anything that asks TensorFlow for Keras gets tf_keras.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

_EXPORTS = {
    # Frontend (the only feature code in the project).
    "FeatureConfig": "dsnn_keras.frontend",
    "log_mel_spectrogram": "dsnn_keras.frontend",
    # Nested-mask dynamic sparsity: the public API of the dsnn_keras.sparsity library.
    **dict.fromkeys(_sparsity.__all__, "dsnn_keras.sparsity"),
    # ASR model, data, training and trained runs.
    "load_config": "dsnn_keras.config",
    "PreparedDataset": "dsnn_keras.dataset",
    "build_model": "dsnn_keras.model",
    "build_pruned_model": "dsnn_keras.model",
    "output_lengths": "dsnn_keras.model",
    "time_reduction": "dsnn_keras.model",
    "register_encoder": "dsnn_keras.encoders",
    "encoder_names": "dsnn_keras.encoders",
    "encoder_state": "dsnn_keras.encoders",
    "train": "dsnn_keras.trainer",
    "load_run": "dsnn_keras.run_dir",
    "TrainedRun": "dsnn_keras.run_dir",
    # Decoding and evaluation.
    "greedy_ctc_decode": "dsnn_keras.decoding",
    "ids_to_text": "dsnn_keras.decoding",
    "error_rates": "dsnn_keras.decoding",
    "evaluate_run": "dsnn_keras.evaluate",
    "run_evaluation": "dsnn_keras.evaluate",
    "EvalReport": "dsnn_keras.eval_report",
    "LevelResult": "dsnn_keras.eval_report",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
