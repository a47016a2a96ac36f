"""Reading and editing a .tflite flatbuffer without TensorFlow: operator list and metadata entries.

Uses the TFLite schema bindings that ship with ai-edge-litert (``schema_py_generated``, which needs
only the ``flatbuffers`` package and numpy), so a device-side tool can inspect an exported file.

Example:
    >>> data = pathlib.Path("model.tflite").read_bytes()
    >>> sorted({op.name for op in operators(data)})[:3]
    ['ARG_MAX', 'CONV_2D', 'FULLY_CONNECTED']
    >>> read_metadata_entry(data, "dsnn")[:1]
    b'{'
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from dsnn_keras.errors import DsnnError

_FILE_IDENTIFIER = b"TFL3"
_BUILTIN_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items()
                  if not name.startswith("_") and isinstance(code, int)}


class FlatbufferError(DsnnError, ValueError):
    """The bytes are not a TFLite model, or a requested entry is missing."""


@dataclasses.dataclass(frozen=True)
class Operator:
    """One operator of one subgraph.

    Attributes:
        subgraph: Index of the subgraph holding the operator (0 is the first signature's).
        name: Builtin operator name (``"FULLY_CONNECTED"``), or ``"CUSTOM"``.
        custom_code: The custom op name for ``CUSTOM`` ops (Flex ops are ``"Flex..."``), else None.
    """

    subgraph: int
    name: str
    custom_code: Optional[str]

    @property
    def is_builtin(self) -> bool:
        return self.name != "CUSTOM" and self.custom_code is None


def _root(data: bytes) -> "schema.Model":
    if len(data) < 8 or data[4:8] != _FILE_IDENTIFIER:
        raise FlatbufferError("not a TFLite flatbuffer (file identifier 'TFL3' missing)")
    return schema.Model.GetRootAs(data, 0)


def operators(data: bytes) -> list[Operator]:
    """Lists every operator of every subgraph (IF/WHILE branches included).

    Args:
        data: The bytes of a .tflite file.

    Returns:
        One `Operator` per operator, in subgraph order.
    """
    model = _root(data)
    result = []
    for g in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(g)
        for i in range(subgraph.OperatorsLength()):
            code = model.OperatorCodes(subgraph.Operators(i).OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            custom = code.CustomCode()
            result.append(Operator(
                subgraph=g, name=_BUILTIN_NAMES.get(builtin, f"UNKNOWN_{builtin}"),
                custom_code=custom.decode("utf-8") if custom else None))
    return result


def sparse_tensor_count(data: bytes) -> int:
    """Number of tensors stored in a sparse format (``Tensor.sparsity`` set)."""
    model = _root(data)
    count = 0
    for g in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(g)
        for i in range(subgraph.TensorsLength()):
            if subgraph.Tensors(i).Sparsity() is not None:
                count += 1
    return count


def metadata_names(data: bytes) -> list[str]:
    """Names of the model's metadata entries (e.g. ``min_runtime_version``, ``dsnn``)."""
    model = _root(data)
    return [model.Metadata(i).Name().decode("utf-8") for i in range(model.MetadataLength())]


def read_metadata_entry(data: bytes, name: str) -> bytes:
    """Returns the buffer of the metadata entry ``name``.

    Raises:
        FlatbufferError: if the model has no such entry.
    """
    model = _root(data)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name().decode("utf-8") == name:
            buffer = model.Buffers(entry.Buffer())
            if buffer.DataLength() == 0 and buffer.Offset() > 1:
                return bytes(data[buffer.Offset():buffer.Offset() + buffer.Size()])
            return buffer.DataAsNumpy().tobytes() if buffer.DataLength() else b""
    raise FlatbufferError(f"no metadata entry named {name!r}; entries: {metadata_names(data)}")


def add_metadata_entry(data: bytes, name: str, payload: bytes) -> bytes:
    """Returns a copy of the model with metadata entry ``name`` set to ``payload`` (replaced if present).

    Args:
        data: The bytes of a .tflite file (as written by the converter).
        name: Metadata entry name.
        payload: The bytes to store.

    Returns:
        The new model bytes.
    """
    model = unpack(data)
    model.metadata = [m for m in (model.metadata or [])
                      if (m.name.decode() if isinstance(m.name, bytes) else m.name) != name]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(bytes(payload), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    return pack(model, len(data) + len(payload))


def unpack(data: bytes) -> "schema.ModelT":
    """The model as a mutable object (the schema's object API), for rewriting."""
    _root(data)
    return schema.ModelT.InitFromPackedBuf(bytearray(data), 0)


def pack(model: "schema.ModelT", size_hint: int = 0) -> bytes:
    """The bytes of a model object from `unpack` (with the ``TFL3`` file identifier)."""
    builder = flatbuffers.Builder(size_hint + 1024)
    builder.Finish(model.Pack(builder), file_identifier=_FILE_IDENTIFIER)
    return bytes(builder.Output())


def builtin_codes(model: "schema.ModelT") -> list[int]:
    """The builtin operator code of each entry of an unpacked model's ``operatorCodes``."""
    return [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]


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
    model = unpack(data)
    codes = builtin_codes(model)
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
    return pack(model, len(data)), folded


def float_constants(data: bytes) -> list[np.ndarray]:
    """Every float32 constant tensor of every subgraph (values with their shapes).

    Used on a float conversion of the frontend alone to know the exact values its constants
    (mel filterbank, window, log floor) must have in any other conversion of the same frontend.
    """
    model = unpack(data)
    constants = []
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            values = _constant_values(model, tensor)
            if values is not None and tensor.type == schema.TensorType.FLOAT32:
                constants.append(values)
    return constants


def _constant_values(model: "schema.ModelT", tensor: "schema.TensorT") -> Optional[np.ndarray]:
    dtype = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.FLOAT16: np.float16,
             schema.TensorType.INT8: np.int8}.get(tensor.type)
    buffer = model.buffers[tensor.buffer] if tensor.buffer else None
    if dtype is None or buffer is None or buffer.data is None or len(buffer.data) == 0:
        return None
    shape = tuple(int(d) for d in (tensor.shape if tensor.shape is not None else ()))
    values = np.frombuffer(np.asarray(buffer.data, np.uint8).tobytes(), dtype)
    if values.size != int(np.prod(shape, dtype=np.int64)):
        return None
    return values.reshape(shape)


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


def signature_subgraph(data: bytes, key: str) -> int:
    """The subgraph index a signature runs (raises `FlatbufferError` if there is no such signature)."""
    model = unpack(data)
    for signature in model.signatureDefs or []:
        name = signature.signatureKey.decode() if isinstance(signature.signatureKey, bytes) else signature.signatureKey
        if name == key:
            return int(signature.subgraphIndex)
    raise FlatbufferError(f"no signature {key!r}")


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
    model = unpack(data)
    codes = builtin_codes(model)
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
            values = _constant_values(model, source) if quantized else None
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
            values = _constant_values(model, tensor)
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
    return pack(model, len(data)), restored
