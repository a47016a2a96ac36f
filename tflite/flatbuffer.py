"""Reading a .tflite flatbuffer without TensorFlow: operators, metadata entries, constants, unpack/pack.

Uses the TFLite schema bindings that ship with ai-edge-litert (``schema_py_generated``, which needs
only the ``flatbuffers`` package and numpy), so a device-side tool can inspect an exported file.
Every rewrite of the bytes lives in `tflite.rewrites`; its ``add_metadata_entry``,
``fold_concat_split`` and ``restore_float_constants`` stay reachable here under their old names.

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
from dsnn_keras.lazy import lazy_exports

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


def float_constants(data: bytes) -> list[np.ndarray]:
    """Every float32 constant tensor of every subgraph (values with their shapes).

    Used on a float conversion of the frontend alone to know the exact values its constants
    (mel filterbank, window, log floor) must have in any other conversion of the same frontend.
    """
    model = unpack(data)
    constants = []
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            values = constant_values(model, tensor)
            if values is not None and tensor.type == schema.TensorType.FLOAT32:
                constants.append(values)
    return constants


def constant_values(model: "schema.ModelT", tensor: "schema.TensorT") -> Optional[np.ndarray]:
    """The values of a float32, float16 or int8 constant tensor of an unpacked model, or None."""
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


def signature_subgraph(data: bytes, key: str) -> int:
    """The subgraph index a signature runs (raises `FlatbufferError` if there is no such signature)."""
    model = unpack(data)
    for signature in model.signatureDefs or []:
        name = signature.signatureKey.decode() if isinstance(signature.signatureKey, bytes) else signature.signatureKey
        if name == key:
            return int(signature.subgraphIndex)
    raise FlatbufferError(f"no signature {key!r}")


_constant_values = constant_values   # the old private name
# The rewrites moved to tflite.rewrites (which imports this module: re-exported lazily, no cycle).
_MOVED = {name: "tflite.rewrites" for name in ("add_metadata_entry", "fold_concat_split", "restore_float_constants")}
__getattr__, __dir__ = lazy_exports(__name__, _MOVED)
