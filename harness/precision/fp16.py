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
    try:
        # Weights beyond float16's range are clipped to it (and tiny ones to +-1e-7) rather
        # than becoming inf or 0; the converter warns once per weight, which is only noise.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            converted = float16.convert_float_to_float16(model, keep_io_types=keep_io_types,
                                                         node_block_list=[*_casts_from_integers(model), *keep_nodes])
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
