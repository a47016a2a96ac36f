"""tflite: export a DSNN to one .tflite file with a runtime sparsity_level input; runtime and benchmark.

The public API is re-exported lazily, so ``import tflite`` (and the commands' ``--help``) do not
import TensorFlow.
"""
from __future__ import annotations

from dsnn_keras.lazy import lazy_exports

_EXPORTS = {
    "ExportOptions": "tflite.export",
    "ExportError": "tflite.errors",
    "WerGateError": "tflite.errors",
    "export_levels": "tflite.export",
    "export_run": "tflite.export",
    "check_wer_gate": "tflite.export",
    "read_metadata": "tflite.metadata",
    "DsnnMetadata": "tflite.metadata",
    "MetadataError": "tflite.metadata",
    "Recognizer": "tflite.runtime",
    "RecognizerStream": "tflite.runtime",
    "Recognition": "tflite.runtime",
    "RecognizerError": "tflite.runtime",
    "AudioError": "tflite.audio",
    "ExportDesign": "tflite.designs",
    "register_design": "tflite.designs",
    "get_design": "tflite.designs",
    "design_names": "tflite.designs",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
