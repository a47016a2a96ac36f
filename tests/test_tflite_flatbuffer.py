"""tflite.flatbuffer: reading and rewriting .tflite files without TensorFlow at run time."""
import numpy as np
import pytest


def _concat_split_model(split_sizes: list[int]) -> bytes:
    """A float model: CONCATENATION of two inputs along axis 1, then SPLIT_V by ``split_sizes``."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([4, 3], tf.float32), tf.TensorSpec([4, 5], tf.float32)])
    def model(a, b):
        joined = tf.concat([a * 3.0, b - 1.0], axis=1)
        first, second = tf.split(joined, split_sizes, axis=1)
        return {"first": first + 1.0, "second": second}   # a split output that is a model output

    converter = tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def _run(data: bytes, a: np.ndarray, b: np.ndarray) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data)
    interpreter.allocate_tensors()
    inputs = interpreter.get_input_details()   # in the function's argument order: a, b
    for detail, value in zip(inputs, (a, b)):
        interpreter.set_tensor(detail["index"], value)
    interpreter.invoke()
    # Outputs by shape: "first" is [4, 3], "second" [4, 5] (both split sizes differ).
    outputs = {tuple(d["shape"]): interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}
    return {"first": outputs[(4, 3)], "second": outputs[(4, 5)]}


def _names(data: bytes) -> list[str]:
    from tflite import flatbuffer

    return [op.name for op in flatbuffer.operators(data)]


def test_fold_concat_split_removes_an_exact_inverse_and_keeps_the_outputs():
    from tflite import flatbuffer

    data = _concat_split_model([3, 5])
    assert {"CONCATENATION", "SPLIT_V"} <= set(_names(data))
    folded, count = flatbuffer.fold_concat_split(data)
    assert count == 1
    assert "CONCATENATION" not in _names(folded) and "SPLIT_V" not in _names(folded)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(4, 5)).astype(np.float32)
    before, after = _run(data, a, b), _run(folded, a, b)
    for key in ("first", "second"):
        np.testing.assert_array_equal(after[key], before[key])
    np.testing.assert_allclose(after["first"], a * 3 + 1, rtol=1e-6)
    np.testing.assert_allclose(after["second"], b - 1, rtol=1e-6)


def test_fold_concat_split_leaves_a_split_that_does_not_undo_the_concatenation():
    from tflite import flatbuffer

    data = _concat_split_model([4, 4])
    folded, count = flatbuffer.fold_concat_split(data)
    assert count == 0 and folded == data


def test_fold_concat_split_rejects_bytes_that_are_not_a_model():
    from tflite import flatbuffer

    with pytest.raises(flatbuffer.FlatbufferError, match="TFL3"):
        flatbuffer.fold_concat_split(b"not a model at all")
