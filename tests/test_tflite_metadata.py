"""tflite.metadata / tflite.flatbuffer: the dsnn entry round-trips and reads without TensorFlow."""
import json
import subprocess
import sys

import numpy as np
import pytest

import harness_tflite as h


def _raw(**overrides):
    raw = {"format_version": 1, "levels": [{"level": 0, "sparsity": 0.0}, {"level": 1, "sparsity": 0.5}],
           "tokens": {"pieces": ["<unk>", "\u2581ja"], "blank_id": 2}, "feature_config": {"sample_rate": 16000},
           "export": {"design": "if_tree_fused_lstm"}, "versions": {}}
    raw.update(overrides)
    return raw


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory):
    """A small converted model without dsnn metadata (a few seconds to convert)."""
    import tensorflow as tf

    module = tf.Module()
    module.double = tf.function(lambda x: {"y": x * 2.0}, input_signature=[tf.TensorSpec([None], tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.double.get_concrete_function()], module)
    return converter.convert()


def test_embedded_metadata_round_trips_and_keeps_the_model_runnable(tiny_tflite):
    from ai_edge_litert.interpreter import Interpreter

    from tflite import flatbuffer, metadata

    data = metadata.embed(tiny_tflite, _raw())
    assert metadata.parse(data).raw == _raw()
    assert "dsnn" in flatbuffer.metadata_names(data)
    assert set(flatbuffer.metadata_names(tiny_tflite)) <= set(flatbuffer.metadata_names(data))
    # Embedding twice replaces the entry instead of adding a second one.
    again = metadata.embed(data, _raw(levels=[{"level": 0, "sparsity": 0.0}]))
    assert flatbuffer.metadata_names(again).count("dsnn") == 1
    assert metadata.parse(again).num_levels == 1
    runner = Interpreter(model_content=again).get_signature_runner()
    np.testing.assert_array_equal(runner(x=np.array([1.5, -2], np.float32))["y"], [3.0, -4.0])


def test_reads_metadata_of_an_export_without_importing_tensorflow():
    path = h.exported("float")
    code = ("import json, sys; from tflite.metadata import read_metadata; "
            f"m = read_metadata({str(path)!r}); "
            "print(json.dumps({'tf': 'tensorflow' in sys.modules, 'sparsities': m.sparsities, "
            "'blank': m.blank_id, 'pieces': m.pieces}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result == {"tf": False, "sparsities": list(h.LEVELS), "blank": h.BLANK_ID, "pieces": h.PIECES}


def test_model_without_dsnn_entry_is_a_clear_error(tiny_tflite, tmp_path):
    from tflite.metadata import MetadataError, read_metadata

    path = tmp_path / "plain.tflite"
    path.write_bytes(tiny_tflite)
    with pytest.raises(MetadataError, match="plain.tflite: no metadata entry named 'dsnn'"):
        read_metadata(path)


@pytest.mark.parametrize("bad, message", [
    (_raw(format_version=2), "format_version 2"),
    ({k: v for k, v in _raw().items() if k != "tokens"}, r"lacks \['tokens'\]"),
    (_raw(levels=[]), "'levels' is empty"),
    (_raw(tokens={"pieces": []}), "needs 'pieces' and 'blank_id'"),
])
def test_invalid_metadata_is_rejected_naming_the_field(bad, message):
    from tflite.metadata import MetadataError, encode

    with pytest.raises(MetadataError, match=message):
        encode(bad)


def test_operator_listing_sees_ops_inside_control_flow_branches():
    from tflite import flatbuffer

    ops = flatbuffer.operators(h.exported("float").read_bytes())
    by_subgraph = {}
    for op in ops:
        by_subgraph.setdefault(op.subgraph, set()).add(op.name)
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" not in by_subgraph[0]        # main graph: frontend + IF
    assert any("UNIDIRECTIONAL_SEQUENCE_LSTM" in names for g, names in by_subgraph.items() if g > 0)
