"""Converting a recognizer ``tf.Module`` to .tflite bytes with builtin ops only, and checking the result.

Used by the IF-tree and single-level designs (`tflite.designs`); the shared-weights design converts
through a SavedModel instead (`tflite.shared_weights.convert_shared`).

Example:
    >>> data = convert_module(RecognizerModule(models, FeatureConfig(), blank_id=128), "none")
    >>> check_builtin_ops(data)[:2]
    ['ARG_MAX', 'CONCATENATION']
"""
from __future__ import annotations

from tflite import flatbuffer
from tflite.errors import ExportError
from tflite.signatures import SIGNATURES, STREAM


def signature_keys(data: bytes) -> list[str]:
    """The signature keys of a .tflite model, as LiteRT reads them."""
    from ai_edge_litert.interpreter import Interpreter

    return list(Interpreter(model_content=data).get_signature_list())


def convert_module(module, quantize: str, sparse: bool = False) -> bytes:
    """Converts the module's signature functions (`tflite.graph.RecognizerModule.concrete_functions`).

    Args:
        module: A module with ``concrete_functions()`` and ``variables``.
        quantize: ``"none"``, ``"dynamic-int8"`` or ``"float16"``.
        sparse: Also store sparse weights (``EXPERIMENTAL_SPARSITY``). Defaults to False.

    Returns:
        The .tflite bytes.

    Raises:
        ExportError: the converter failed (first line of its message), or the file lacks a signature.
    """
    import tensorflow as tf

    functions = module.concrete_functions()
    # The converter saves a SavedModel of this trackable; given the module itself it would also
    # serialise the Keras models inside it, tracing every layer's call functions again (about
    # half of the export time). The functions only need their variables to be reachable.
    holder = tf.Module(name="dsnn_variables")
    # (The stream signature's LSTM twins are not attributes of the module: take every function's too.)
    variables = [*module.variables, *(v for function in functions.values() for v in function.variables)]
    holder.captured = list({id(v): v for v in variables}.values())
    expected = [key for key in (*SIGNATURES, STREAM) if key in functions]
    converter = tf.lite.TFLiteConverter.from_concrete_functions([functions[key] for key in expected], holder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    optimizations = []
    if quantize in ("dynamic-int8", "float16"):
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    try:
        data = converter.convert()
    except Exception as error:  # noqa: BLE001 - converter errors are long; keep the first line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"TFLite conversion failed: {first}") from error
    signatures = set(signature_keys(data))
    if signatures != set(expected):
        raise ExportError(f"converted model has signatures {sorted(signatures)}; expected {', '.join(expected)}")
    return data


def check_builtin_ops(data: bytes) -> list[str]:
    """Returns the sorted operator names; raises `ExportError` on any custom or Flex op."""
    ops = flatbuffer.operators(data)
    foreign = sorted({op.custom_code or op.name for op in ops if not op.is_builtin})
    if foreign:
        raise ExportError(f"converted model uses non-builtin ops {foreign}; only TFLITE_BUILTINS are allowed")
    return sorted({op.name for op in ops})
