"""tflite.flatbuffer: reading and rewriting .tflite files without TensorFlow at run time."""
import numpy as np
import pytest

A = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
B = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)


def _convert(function) -> bytes:
    """A .tflite with one ``serving_default`` signature (inputs a [4, 3], b [4, 5])."""
    import tensorflow as tf

    concrete = function.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def _concat_split_model(split_sizes=(3, 5), variant: str = "plain") -> bytes:
    """CONCATENATION of two computed tensors along axis 1, then SPLIT_V by ``split_sizes``.

    Variants: ``plain``; ``split_output_returned`` (a split output is a model output);
    ``concat_read_twice`` (the concatenation also feeds another op).
    """
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([4, 3], tf.float32), tf.TensorSpec([4, 5], tf.float32)])
    def model(a, b):
        joined = tf.concat([a * 3.0, b - 1.0], axis=1)
        first, second = tf.split(joined, list(split_sizes), axis=1)
        outputs = {"first": first + 1.0, "second": second * 2.0}
        if variant == "split_output_returned":
            outputs["second"] = second
        elif variant == "concat_read_twice":
            outputs["total"] = tf.reduce_sum(joined, axis=1)
        return outputs

    return _convert(model)


def _run(data: bytes) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=data).get_signature_runner()(a=A, b=B)


def _names(data: bytes) -> list[str]:
    from tflite import flatbuffer

    return [op.name for op in flatbuffer.operators(data)]


def test_fold_concat_split_removes_an_exact_inverse_and_keeps_the_outputs():
    from tflite import flatbuffer

    data = _concat_split_model()
    assert {"CONCATENATION", "SPLIT_V"} <= set(_names(data))
    folded, count = flatbuffer.fold_concat_split(data)
    assert count == 1
    assert "CONCATENATION" not in _names(folded) and "SPLIT_V" not in _names(folded)
    before, after = _run(data), _run(folded)
    assert sorted(after) == sorted(before) == ["first", "second"]
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    np.testing.assert_allclose(after["first"], A * 3 + 1, rtol=1e-6)
    np.testing.assert_allclose(after["second"], (B - 1) * 2, rtol=1e-6)


@pytest.mark.parametrize("split_sizes, variant", [
    ((4, 4), "plain"),                     # sizes differ from the concatenated widths
    ((3, 5), "split_output_returned"),     # a split output leaves the graph
    ((3, 5), "concat_read_twice"),         # the concatenation has another reader
])
def test_fold_concat_split_leaves_pairs_that_are_not_a_private_exact_inverse(split_sizes, variant):
    from tflite import flatbuffer

    data = _concat_split_model(split_sizes, variant)
    assert {"CONCATENATION", "SPLIT_V"} <= set(_names(data))
    folded, count = flatbuffer.fold_concat_split(data)
    assert count == 0 and folded == data


def test_fold_concat_split_rejects_bytes_that_are_not_a_model():
    from tflite import flatbuffer

    with pytest.raises(flatbuffer.FlatbufferError, match="TFL3"):
        flatbuffer.fold_concat_split(b"not a model at all")
