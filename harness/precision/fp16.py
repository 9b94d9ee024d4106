"""FP32 ONNX -> FP16 ONNX: weights and compute in float16; inputs and outputs stay float32
unless asked otherwise, so callers feed and read the same arrays in every precision."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import ExportError
from harness.lazy import lazy_import
from harness.precision import FLOAT_ELEM_TYPES


def convert_fp16(src: Path, dst: Path, keep_io_types: bool = True, keep_nodes: Sequence[str] = ()) -> dict[str, object]:
    """`keep_nodes`: nodes left in float32 (a mixed-precision model, harness debug --fix)."""
    import onnx

    float16 = lazy_import("onnxconverter_common.float16", "onnxconverter-common")

    model = onnx.load(str(src))
    block = [*_casts_from_integers(model), *keep_nodes]
    _unshare_initializers(model, set(float16.DEFAULT_OP_BLOCK_LIST), set(block))
    try:
        # Weights beyond float16's range are clipped to it (and tiny ones to +-1e-7) rather
        # than becoming inf or 0; the converter warns once per weight, which is only noise.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            converted = float16.convert_float_to_float16(model, keep_io_types=keep_io_types,
                                                         node_block_list=block)
    except Exception as e:  # the converter raises bare exceptions on graphs it cannot handle
        raise ExportError(f"{src}: float16 conversion failed ({type(e).__name__}: {e})") from e
    try:
        onnx.checker.check_model(converted, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"{src}: the float16 conversion made an invalid model ({str(e).splitlines()[0][:300]})") from e
    onnx.save(converted, str(dst))
    return {"keep_io_types": keep_io_types}


def _casts_from_integers(model: Any) -> list[str]:
    """Casts from an integer or bool tensor to float32 (tf2onnx writes one before comparing token
    ids, e.g. Keras 3's negative-index fix-up `ids < 0`).  The converter marks their outputs
    float16 but leaves the cast's `to` at float32, an invalid model; kept in float32, they get
    a proper cast to float16 after them."""
    import onnx

    found: list[str] = []

    def visit(graph: Any, outer: dict[str, int]) -> None:  # loop bodies too (a GRU stays a Loop)
        types = {**outer, **{v.name: v.type.tensor_type.elem_type
                             for v in (*graph.input, *graph.value_info, *graph.output)}}
        types.update({t.name: t.data_type for t in graph.initializer})
        for n in graph.node:
            if (n.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in n.attribute)
                    and n.input[0] in types and types[n.input[0]] not in FLOAT_ELEM_TYPES):
                found.append(n.name)
            for a in n.attribute:
                for sub in (a.g, *a.graphs) if a.HasField("g") else a.graphs:
                    visit(sub, types)

    visit(onnx.shape_inference.infer_shapes(model).graph, {})
    return found


def _unshare_initializers(model: Any, blocked_ops: set[str], blocked_nodes: set[str]) -> list[str]:
    """Give nodes the converter keeps in float32 their own copy of a float initializer they share
    with nodes it converts.  tf2onnx folds equal constants into one (a detector's NMS score
    threshold 0.3 and a 0.3 in its box head); the converter then keeps that one in float32 for
    NonMaxSuppression and leaves the converted Mul reading a float32 input: an invalid model."""
    import onnx

    graph = model.graph
    floats = {t.name: t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    kept: dict[str, list[Any]] = {}
    converted: set[str] = set()
    for node in graph.node:
        keep = node.op_type in blocked_ops or node.name in blocked_nodes
        for name in node.input:
            if name in floats:
                (kept.setdefault(name, []).append(node) if keep else converted.add(name))
    copied = []
    for name, nodes in kept.items():
        if name not in converted:
            continue
        copy = onnx.TensorProto()
        copy.CopyFrom(floats[name])
        copy.name = f"{name}__float32"
        graph.initializer.append(copy)
        for node in nodes:
            node.input[:] = [copy.name if i == name else i for i in node.input]
        copied.append(name)
    return copied
