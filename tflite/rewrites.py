"""Every byte-level rewrite of a converted .tflite, in one place.

Each rewrite takes the bytes and returns new bytes (plus a count, where there is one), so a design's
post-processing is a chain of calls. Reading the flatbuffer (operators, metadata entries, constants)
is `tflite.flatbuffer`; this module changes it:

* `add_metadata_entry`: store a metadata entry (the ``dsnn`` JSON, `tflite.metadata.embed`).
* `disable_lstm_cell_clip`: turn off the converter's ``cell_clip = 10`` in fused LSTMs (every design).
* `keep_frontend_float` / `restore_float_constants`: put the float32 log-mel frontend back into a
  quantized file (every quantized design).
* `fold_concat_split`: drop ``CONCATENATION -> SPLIT_V`` pairs that cancel (shared weights).
* `shrink_unread_initial_values`: compute all-zero variable initial values at load (``FILL``)
  instead of storing them (shared weights with int8/float16 storage); `zero_initial_values` and
  `split_fed_lstm_inputs` check that the shared-weights rewrites worked.

Uses the TFLite schema bindings of ai-edge-litert; only `keep_frontend_float` needs TensorFlow
(to compute the frontend's reference constants).

Example:
    >>> data, cleared = disable_lstm_cell_clip(converter.convert())
    >>> data, restored = keep_frontend_float(data, FeatureConfig())
"""
from __future__ import annotations

import struct
from typing import Optional

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from tflite import flatbuffer
from tflite.frontend import frontend_constants
from tflite.signatures import RECOGNIZE, STREAM


def add_metadata_entry(data: bytes, name: str, payload: bytes) -> bytes:
    """Returns a copy of the model with metadata entry ``name`` set to ``payload`` (replaced if present).

    Args:
        data: The bytes of a .tflite file (as written by the converter).
        name: Metadata entry name.
        payload: The bytes to store.

    Returns:
        The new model bytes.
    """
    model = flatbuffer.unpack(data)
    model.metadata = [m for m in (model.metadata or [])
                      if (m.name.decode() if isinstance(m.name, bytes) else m.name) != name]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(bytes(payload), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    return flatbuffer.pack(model, len(data) + len(payload))


def _static_ints(model: "schema.ModelT", subgraph: "schema.SubGraphT", index: int) -> Optional[np.ndarray]:
    """The int32/int64 values of a constant tensor, or None if it is not a constant."""
    tensor = subgraph.tensors[index]
    buffer = model.buffers[tensor.buffer] if tensor.buffer else None
    if buffer is None or buffer.data is None or len(buffer.data) == 0:
        return None
    dtype = {schema.TensorType.INT32: np.int32, schema.TensorType.INT64: np.int64}.get(tensor.type)
    if dtype is None:
        return None
    return np.frombuffer(np.asarray(buffer.data, np.uint8).tobytes(), dtype)


def _same_quantization(a: "schema.TensorT", b: "schema.TensorT") -> bool:
    qa, qb = a.quantization, b.quantization

    def params(q):
        if q is None:
            return ()
        return tuple(None if v is None else np.asarray(v).tolist()
                     for v in (q.scale, q.zeroPoint, q.min, q.max)) + (q.quantizedDimension,)
    return a.type == b.type and params(qa) == params(qb)


def _inverse_concat_split(model: "schema.ModelT", number: int, codes: list[int]):
    """The first (CONCATENATION, SPLIT_V) pair of subgraph ``number`` where the split undoes the
    concatenation exactly, or None (see `fold_concat_split` for the conditions)."""
    subgraph = model.subgraphs[number]
    ops = subgraph.operators or []
    producers = {int(out): op for op in ops for out in op.outputs}
    readers: dict[int, list] = {}
    for op in ops:
        for index in op.inputs:
            readers.setdefault(int(index), []).append(op)
    exposed = {int(i) for i in subgraph.outputs} | {int(i) for i in subgraph.inputs}
    for signature in model.signatureDefs or []:
        if signature.subgraphIndex == number:
            exposed |= {int(o.tensorIndex) for o in signature.outputs or []}
    for split in ops:
        if codes[split.opcodeIndex] != schema.BuiltinOperator.SPLIT_V or len(split.inputs) != 3:
            continue
        source = int(split.inputs[0])
        concat = producers.get(source)
        if (concat is None or codes[concat.opcodeIndex] != schema.BuiltinOperator.CONCATENATION
                or source in exposed or len(readers.get(source, [])) != 1):
            continue
        options = concat.builtinOptions
        if options is None or options.fusedActivationFunction != schema.ActivationFunctionType.NONE:
            continue
        outputs, pieces = [int(i) for i in split.outputs], [int(i) for i in concat.inputs]
        # Split outputs that leave the subgraph are not renamed (aliasing inputs/constants there
        # is fragile in IF/WHILE branches).
        if len(pieces) != len(outputs) or any(o in exposed for o in outputs):
            continue
        shape = subgraph.tensors[source].shape
        if shape is None or len(shape) == 0:
            continue
        rank = len(shape)
        sizes = _static_ints(model, subgraph, int(split.inputs[1]))
        axis = _static_ints(model, subgraph, int(split.inputs[2]))
        if sizes is None or axis is None or axis.size != 1 or int(axis[0]) % rank != options.axis % rank:
            continue
        axis = options.axis % rank
        widths = []
        for index in pieces + [source]:
            tensor = subgraph.tensors[index]
            dynamic = tensor.shapeSignature is not None and len(tensor.shapeSignature) == rank \
                and int(tensor.shapeSignature[axis]) < 0
            if tensor.shape is None or len(tensor.shape) != rank or dynamic:
                widths = None
                break
            widths.append(int(tensor.shape[axis]))
        if widths is None or list(sizes) != widths[:-1] or sum(widths[:-1]) != widths[-1]:
            continue
        if not all(_same_quantization(subgraph.tensors[p], subgraph.tensors[o]) for p, o in zip(pieces, outputs)):
            continue
        return concat, split
    return None


def fold_concat_split(data: bytes) -> tuple[bytes, int]:
    """Removes every ``CONCATENATION`` whose only reader is a ``SPLIT_V`` that undoes it.

    The readers of the split's i-th output read the concatenation's i-th input instead, and both
    ops (two full copies per invoke) are dropped. Only exact inverses are folded: same axis, static
    split sizes equal to the concatenated inputs' static sizes along it, no fused activation, the
    same type and quantization on both sides, the concatenation's output read by nothing else, and
    neither it nor any split output a subgraph or signature output. Pairs are found one at a time
    on the current graph, so chains of them fold correctly.

    Args:
        data: The bytes of a .tflite file.

    Returns:
        ``(new bytes, number of pairs folded)`` (the input bytes when nothing was folded).
    """
    model = flatbuffer.unpack(data)
    codes = flatbuffer.builtin_codes(model)
    folded = 0
    for number, subgraph in enumerate(model.subgraphs):
        while (pair := _inverse_concat_split(model, number, codes)) is not None:
            concat, split = pair
            rename = {int(out): int(piece) for out, piece in zip(split.outputs, concat.inputs)}
            for op in subgraph.operators:
                op.inputs = np.array([rename.get(int(i), int(i)) for i in op.inputs], np.int32)
            subgraph.operators = [op for op in subgraph.operators if op is not concat and op is not split]
            folded += 1
    if not folded:
        return data, 0
    return flatbuffer.pack(model, len(data)), folded


def _dequantized_int8(tensor: "schema.TensorT", values: np.ndarray) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """``(float values, half a quantization step per element)`` of a symmetric int8 constant."""
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    scale = np.asarray(q.scale, np.float64)
    zero = np.asarray(q.zeroPoint if q.zeroPoint is not None else np.zeros_like(scale), np.float64)
    if scale.size > 1:
        shape = [1] * values.ndim
        shape[q.quantizedDimension] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (values.astype(np.float64) - zero) * scale, np.broadcast_to(0.5 * scale, values.shape)


def _matching_reference(tensor, values, references) -> Optional[np.ndarray]:
    for reference in references:
        if tuple(reference.shape) != tuple(values.shape):
            continue
        if tensor.type == schema.TensorType.FLOAT16:
            if np.array_equal(reference.astype(np.float16), values):
                return reference
        elif tensor.type == schema.TensorType.INT8:
            dequantized = _dequantized_int8(tensor, values)
            if dequantized is None:
                continue
            approx, half_step = dequantized
            if np.all(np.abs(approx - reference) <= half_step * (1 + 1e-3) + 1e-12):
                return reference
    return None


def restore_float_constants(data: bytes, references: list[np.ndarray], subgraph: int) -> tuple[bytes, int]:
    """Puts exact float32 values back into the quantized copies of known constants of one subgraph.

    Post-training quantization does not know which part of a graph is signal processing: dynamic
    range int8 turns the log-mel frontend's mel filterbank into an int8 hybrid FULLY_CONNECTED
    (which also quantizes the power spectrum fed to it, whose dynamic range int8 cannot hold), and
    float16 storage rounds the window, the filterbank and the log floor. This finds, in
    ``subgraph``, every int8 constant that is a quantized copy of one of ``references`` (same shape,
    every value within half a quantization step) and every float16 or int8 constant read by a
    ``DEQUANTIZE`` that is a copy of one, and restores the float32 reference: the int8
    tensor becomes a float32 constant (so its op runs the float kernel), and the ``DEQUANTIZE``'s
    output becomes the float32 constant (the op is dropped). Anything not matching a reference is
    left as the converter wrote it.

    Args:
        data: The bytes of a .tflite file.
        references: The float32 constants to restore (e.g. `float_constants` of a float conversion
            of the frontend alone).
        subgraph: Index of the subgraph to edit.

    Returns:
        ``(new bytes, number of tensors restored)`` (the input bytes when nothing matched).
    """
    model = flatbuffer.unpack(data)
    codes = flatbuffer.builtin_codes(model)
    graph = model.subgraphs[subgraph]
    dequantize = schema.BuiltinOperator.DEQUANTIZE
    restored = 0

    def float_buffer(values: np.ndarray) -> int:
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(np.ascontiguousarray(values, np.float32).tobytes(), np.uint8)
        model.buffers.append(buffer)
        return len(model.buffers) - 1

    kept_ops, replaced = [], []
    for op in graph.operators:
        if codes[op.opcodeIndex] == dequantize and len(op.inputs) == 1:
            source = graph.tensors[int(op.inputs[0])]
            quantized = source.type in (schema.TensorType.FLOAT16, schema.TensorType.INT8)
            values = flatbuffer.constant_values(model, source) if quantized else None
            reference = None if values is None else _matching_reference(source, values, references)
            if reference is not None:
                target = graph.tensors[int(op.outputs[0])]
                target.buffer = float_buffer(reference)
                target.type = schema.TensorType.FLOAT32
                target.quantization = None
                replaced.append(source.buffer)
                source.buffer = 0             # the quantized copy is read by nothing now
                restored += 1
                continue                      # drop the DEQUANTIZE: its output is now a constant
        kept_ops.append(op)
    graph.operators = kept_ops
    for op in graph.operators:
        for index in op.inputs:
            if index < 0:
                continue
            tensor = graph.tensors[int(index)]
            if tensor.type != schema.TensorType.INT8:
                continue
            values = flatbuffer.constant_values(model, tensor)
            reference = None if values is None else _matching_reference(tensor, values, references)
            if reference is not None:
                replaced.append(tensor.buffer)
                tensor.buffer = float_buffer(reference)
                tensor.type = schema.TensorType.FLOAT32
                tensor.quantization = None
                restored += 1
    if not restored:
        return data, 0
    # Drop the quantized copies' bytes unless another tensor (in any subgraph) still reads them.
    in_use = {int(t.buffer) for g in model.subgraphs for t in g.tensors}
    for index in set(replaced) - in_use - {0}:
        model.buffers[index].data = None
    return flatbuffer.pack(model, len(data)), restored


def keep_frontend_float(data: bytes, feature_config) -> tuple[bytes, int]:
    """Undoes post-training quantization of the in-graph frontend of ``recognize`` (and ``stream``).

    Dynamic-range int8 quantizes the mel filterbank's FULLY_CONNECTED (and with it the power
    spectrum, whose dynamic range int8 cannot hold: the AN4 model went from ~21 % to ~65 % WER
    through ``recognize(audio)``), and float16 rounds the window, filterbank and log floor. The
    frontend is a negligible part of the compute and the file, so every quantized file keeps it in
    float32: the features it computes equal a float file's.

    Whatever route the converter takes, `tflite.export.verify_levels` checks the result: in a
    quantized file, ``recognize(audio)`` must equal ``recognize_features`` fed the float frontend's
    features.

    Args:
        data: The bytes of a quantized .tflite file with a ``recognize`` signature.
        feature_config: The `FeatureConfig` of its in-graph frontend.

    Returns:
        ``(bytes, number of constants restored)``.
    """
    restored = 0
    references = frontend_constants(feature_config)
    # The stream signature (when present) runs the same frontend in its own subgraph.
    for key in (RECOGNIZE, STREAM):
        if key == STREAM and STREAM not in _signature_keys(data):
            continue
        data, count = restore_float_constants(data, references, flatbuffer.signature_subgraph(data, key))
        restored += count
    return data, restored


def _signature_keys(data: bytes) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    return list(Interpreter(model_content=data).get_signature_list())


_CLIPPED_LSTM_OPS = ("UNIDIRECTIONAL_SEQUENCE_LSTM", "LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM")


def disable_lstm_cell_clip(data: bytes) -> tuple[bytes, int]:
    """Sets ``cell_clip`` to 0 (off) in every fused LSTM op, so the kernel matches Keras.

    The converter's Keras-LSTM fusion (``ConvertKerasLSTMLayer`` in TensorFlow's
    ``compiler/mlir/lite/utils/lstm_utils.cc``) hard-codes ``cell_clip = 10.0``; the TFLite kernel
    then clamps the cell state to [-10, 10] after every step, which ``keras.layers.LSTM`` never
    does. A trained LSTM whose cell state leaves that range (the AN4 run reaches |c| = 69) then
    differs from Keras by up to ~2 in the LSTM output (docs/export.md, "Parity on a trained AN4
    model"). The option is a float in each op's options table (field 1 of ``LSTMOptions``,
    ``UnidirectionalSequenceLSTMOptions`` and ``BidirectionalSequenceLSTMOptions``); it is
    overwritten in place, so nothing else in the file moves.

    Args:
        data: The bytes of a .tflite file.

    Returns:
        ``(patched bytes, number of ops whose clip was cleared)``.

    Example:
        >>> data, cleared = disable_lstm_cell_clip(converter.convert())
    """
    wanted = {getattr(schema.BuiltinOperator, name) for name in _CLIPPED_LSTM_OPS}
    buffer = bytearray(data)
    model = schema.Model.GetRootAs(buffer, 0)
    cleared = 0
    for g in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(g)
        for i in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) not in wanted:
                continue
            options = op.BuiltinOptions()  # a flatbuffers Table over `buffer`
            field = options.Offset(6) if options is not None else 0  # vtable slot of cell_clip
            if field and struct.unpack_from("<f", buffer, options.Pos + field)[0] != 0.0:
                struct.pack_into("<f", buffer, options.Pos + field, 0.0)
                cleared += 1
    return bytes(buffer), cleared


def split_fed_lstm_inputs(data: bytes) -> int:
    """Number of fused-LSTM inputs that a ``SPLIT_V`` produces (0 once the per-gate fold worked)."""
    model = flatbuffer.unpack(data)
    codes = flatbuffer.builtin_codes(model)
    count = 0
    for subgraph in model.subgraphs:
        split_outputs = {int(out) for op in subgraph.operators or []
                         if codes[op.opcodeIndex] == schema.BuiltinOperator.SPLIT_V for out in op.outputs}
        count += sum(int(index) in split_outputs for op in subgraph.operators or []
                     if codes[op.opcodeIndex] == schema.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM
                     for index in op.inputs)
    return count


def _initial_value_chains(model, min_elements: int):
    """Yields (subgraph, [constant index, (DEQUANTIZE output index)]) of every ASSIGN_VARIABLE whose value
    is an all-zero float32/float16 constant of at least ``min_elements`` elements, read by nothing else."""
    codes = flatbuffer.builtin_codes(model)
    widths = {schema.TensorType.FLOAT32: 4, schema.TensorType.FLOAT16: 2}
    for subgraph in model.subgraphs:
        ops = subgraph.operators or []
        producers = {out: op for op in ops for out in op.outputs}
        consumers = {}
        for op in ops:
            for index in op.inputs:
                consumers.setdefault(index, []).append(op)
        for op in ops:
            if codes[op.opcodeIndex] != schema.BuiltinOperator.ASSIGN_VARIABLE:
                continue
            value = op.inputs[1]
            chain = [value]   # the constant, or a float16 constant behind a DEQUANTIZE (float16 export)
            producer = producers.get(value)
            if producer is not None and codes[producer.opcodeIndex] == schema.BuiltinOperator.DEQUANTIZE:
                chain.insert(0, producer.inputs[0])
            # Only values that feed nothing but variable initialisation (and that DEQUANTIZE).
            readers = [r for index in chain for r in consumers.get(index, [])]
            if any(codes[r.opcodeIndex] not in (schema.BuiltinOperator.ASSIGN_VARIABLE,
                                                schema.BuiltinOperator.DEQUANTIZE) for r in readers):
                continue
            constant = subgraph.tensors[chain[0]]
            buffer = model.buffers[constant.buffer] if constant.buffer else None
            width = widths.get(constant.type)
            if (width is None or buffer is None or buffer.data is None
                    or len(buffer.data) < width * min_elements or np.any(np.asarray(buffer.data))):
                continue
            yield subgraph, chain, width


def zero_initial_values(data: bytes, min_elements: int) -> int:
    """Number of all-zero float initial values of resource variables that `shrink_unread_initial_values`
    would replace (0 once it ran)."""
    model = flatbuffer.unpack(data)
    return sum(1 for _ in _initial_value_chains(model, min_elements))


def shrink_unread_initial_values(data: bytes, min_elements: int) -> tuple[bytes, int]:
    """Replaces every all-zero float32/float16 initial value of a resource variable by a ``FILL``.

    The converter writes a variable's initial value into the file as a constant assigned once
    (``CALL_ONCE`` → ``ASSIGN_VARIABLE``, for float16 exports behind a ``DEQUANTIZE``). For the
    float32 weight caches of `SharedWeightsModule` those zeros would only waste bytes, so the
    initial value is computed at load instead: ``FILL(shape, 0.0)`` (builtin), the same shape and
    dtype as before. (Cutting the constant to one element instead makes the first real write
    re-size the variable, which corrupts LiteRT 2.3's heap: measured, "free(): invalid pointer".)
    Constants that any other op reads are left alone.

    Args:
        data: The converted .tflite bytes.
        min_elements: Only constants with at least this many elements are replaced.

    Returns:
        ``(new bytes, number of initial values replaced)``.
    """
    model = flatbuffer.unpack(data)
    chains = list(_initial_value_chains(model, min_elements))
    if not chains:
        return data, 0
    fill_code = next((i for i, c in enumerate(flatbuffer.builtin_codes(model))
                      if c == schema.BuiltinOperator.FILL), None)
    if fill_code is None:
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.FILL
        code.version = 1
        model.operatorCodes.append(code)
        fill_code = len(model.operatorCodes) - 1

    def constant(subgraph, values: np.ndarray, tensor_type: int, name: str) -> int:
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(values.tobytes(), np.uint8)
        model.buffers.append(buffer)
        tensor = schema.TensorT()
        tensor.shape = np.array(values.shape, np.int32)
        tensor.type = tensor_type
        tensor.buffer = len(model.buffers) - 1
        tensor.name = name
        subgraph.tensors.append(tensor)
        return len(subgraph.tensors) - 1

    codes = flatbuffer.builtin_codes(model)
    for subgraph, chain, _ in chains:
        target = subgraph.tensors[chain[-1]]          # the float32 value ASSIGN_VARIABLE reads
        dims = constant(subgraph, np.asarray(target.shape, np.int32), schema.TensorType.INT32,
                        "dsnn_zero_init_shape")
        zero = constant(subgraph, np.zeros([], np.float32), schema.TensorType.FLOAT32, "dsnn_zero")
        ops = subgraph.operators
        if len(chain) == 2:   # float16 constant -> DEQUANTIZE: turn that op into the FILL
            fill = next(op for op in ops if chain[1] in op.outputs)
        else:                 # float32 constant: a new FILL writes a new tensor the ASSIGN reads
            out = schema.TensorT()
            out.shape = np.array(target.shape, np.int32)
            out.type = schema.TensorType.FLOAT32
            out.name = "dsnn_zero_init"
            subgraph.tensors.append(out)
            fill = schema.OperatorT()
            fill.outputs = np.array([len(subgraph.tensors) - 1], np.int32)
            assign = next(op for op in ops if codes[op.opcodeIndex] == schema.BuiltinOperator.ASSIGN_VARIABLE
                          and op.inputs[1] == chain[0])
            assign.inputs = np.array([assign.inputs[0], len(subgraph.tensors) - 1], np.int32)
            ops.insert(ops.index(assign), fill)
        fill.opcodeIndex = fill_code
        fill.inputs = np.array([dims, zero], np.int32)
        fill.builtinOptionsType = schema.BuiltinOptions.FillOptions
        fill.builtinOptions = schema.FillOptionsT()
    used = set()
    for g in model.subgraphs:   # buffers of the tensors still read (or exposed): the rest are dropped
        live = {int(i) for op in g.operators or [] for i in op.inputs if i >= 0}
        live |= {int(i) for i in list(g.inputs) + list(g.outputs)}
        used |= {g.tensors[i].buffer for i in live}
    used |= {m.buffer for m in model.metadata or []}
    used |= set(model.metadataBuffer or [])
    for index, buffer in enumerate(model.buffers):
        if index and index not in used and buffer.data is not None:
            buffer.data = None
    return flatbuffer.pack(model, len(data)), len(chains)


def share_quantized_lstm_weights(data: bytes) -> tuple[bytes, int]:
    """Points int8 ``FULLY_CONNECTED`` weights at the fused LSTM's int8 copy of the same matrix.

    The ``stream`` signature computes each LSTM gate with ``FULLY_CONNECTED`` ops whose float
    weights are the fused ``recognize`` kernel's per-gate tensors (stored once in a float file).
    Dynamic-range int8 quantizes the two differently (the fused kernel per tensor, the fully
    connected op per output channel), so a quantized file stores both. A hybrid
    ``FULLY_CONNECTED`` runs per-tensor int8 weights as well: each such weight that quantizes the
    same float matrix as one fused-LSTM weight tensor (every element within one step of each
    quantization) is pointed at that tensor's buffer and scale, and its own
    buffer is emptied. Where the converter left the fused LSTM in float32 (small layers), the
    weight is pointed at the float32 tensor instead: a float ``FULLY_CONNECTED``, as exact as the
    fused kernel.

    Args:
        data: The bytes of a dynamic-range int8 .tflite file.

    Returns:
        ``(bytes, number of weight tensors shared)``.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = flatbuffer.unpack(data)
    codes = flatbuffer.builtin_codes(model)
    lstm_code, fc_code = schema.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM, schema.BuiltinOperator.FULLY_CONNECTED
    int8 = schema.TensorType.INT8

    def values(tensor) -> Optional[np.ndarray]:
        buffer = model.buffers[tensor.buffer]
        if buffer.data is None or tensor.type != int8 or tensor.quantization is None \
                or tensor.quantization.scale is None:
            return None
        return np.frombuffer(bytes(bytearray(buffer.data)), np.int8).reshape([int(d) for d in tensor.shape])

    sources = {}   # shape -> [(dequantized, tensor, scale: 0 for a float32 tensor)]
    for graph in model.subgraphs:
        for op in graph.operators:
            if codes[op.opcodeIndex] != lstm_code:
                continue
            for index in list(op.inputs)[1:9]:
                tensor = graph.tensors[index] if index >= 0 else None
                if tensor is None or model.buffers[tensor.buffer].data is None:
                    continue
                shape = tuple(int(d) for d in tensor.shape)
                if tensor.type == schema.TensorType.FLOAT32:   # the converter keeps small LSTMs float
                    floats = np.frombuffer(bytes(bytearray(model.buffers[tensor.buffer].data)), np.float32)
                    sources.setdefault(shape, []).append((floats.reshape(shape), tensor, 0.0))
                    continue
                q = values(tensor)
                if q is not None and len(tensor.quantization.scale) == 1:
                    scale = float(tensor.quantization.scale[0])
                    sources.setdefault(shape, []).append((q.astype(np.float32) * scale, tensor, scale))
    shared, emptied = 0, set()
    for graph in model.subgraphs:
        for op in graph.operators:
            if codes[op.opcodeIndex] != fc_code or len(op.inputs) < 2:
                continue
            tensor = graph.tensors[op.inputs[1]]
            q = values(tensor)
            if q is None or q.ndim != 2 or len(tensor.quantization.scale) != q.shape[0]:
                continue
            rows = np.asarray(tensor.quantization.scale, np.float32)
            dequantized = q.astype(np.float32) * rows[:, np.newaxis]
            # Both quantize the same float matrix: within one step of each other (the fused kernel's
            # quantizer rounds up to a whole step); another gate's matrix is far outside that.
            matches = {bytes(bytearray(model.buffers[src.buffer].data)): src
                       for d, src, scale in sources.get(tuple(q.shape), [])
                       if np.all(np.abs(d - dequantized) <= 1.01 * (rows[:, np.newaxis] + scale))}
            if len(matches) != 1:
                continue
            source = next(iter(matches.values()))
            emptied.add(tensor.buffer)
            tensor.buffer = source.buffer
            tensor.type = source.type               # int8 per tensor, or float32 (a plain float FC)
            tensor.quantization = source.quantization
            shared += 1
    if not shared:
        return data, 0
    still_used = {t.buffer for g in model.subgraphs for t in g.tensors}
    for index in emptied - still_used:
        model.buffers[index].data = None
    return flatbuffer.pack(model, len(data)), shared


__all__ = ["add_metadata_entry", "disable_lstm_cell_clip", "fold_concat_split", "keep_frontend_float",
           "share_quantized_lstm_weights",
           "restore_float_constants", "shrink_unread_initial_values", "split_fed_lstm_inputs",
           "zero_initial_values"]
