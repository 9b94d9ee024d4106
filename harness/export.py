"""Frozen graph -> ONNX with tf2onnx: dynamic batch, public tensor names, checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import ExportError
from harness.sources import Frozen
from harness.tfimport import import_tensorflow, import_tf2onnx

DEFAULT_OPSET = 17
BATCH_DIM = "batch"


def export_onnx(frozen: Frozen, out: Path, opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """Write `out` (an ONNX file whose inputs and outputs carry the spec's public names)
    and return what to record about it."""
    tf = import_tensorflow()
    tf2onnx = import_tf2onnx()
    import onnx

    spec = frozen.spec
    graph_def = tf.compat.v1.GraphDef.FromString(frozen.graph_def)
    try:
        model, _ = tf2onnx.convert.from_graph_def(
            graph_def,
            input_names=[t.tensor for t in spec.inputs],
            output_names=[t.tensor for t in spec.outputs],
            opset=opset,
        )
    except Exception as e:  # tf2onnx raises bare Exceptions/ValueErrors for unsupported ops
        raise ExportError(
            f"{spec.name}: tf2onnx {tf2onnx.__version__} could not convert the frozen graph at opset {opset}: "
            f"{_first_line(e)}. If an op is unsupported, try another --opset or replace the op in the model"
        ) from e
    _rename_io(model, {t.tensor: t.name for t in (*spec.inputs, *spec.outputs)})
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims):
            dims[0].ClearField("dim_value")
            dims[0].dim_param = BATCH_DIM
    for key, value in {"harness.model": spec.name, "harness.tf2onnx": tf2onnx.__version__}.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    # tf2onnx does not raise on an op it cannot convert: it leaves the TF op in the graph.
    unconverted = [n for n in model.graph.node if n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type)]
    if unconverted:
        ops = sorted({n.op_type for n in unconverted})
        raise ExportError(
            f"{spec.name}: tf2onnx {tf2onnx.__version__} cannot convert the TensorFlow op(s) {ops} "
            f"(nodes {[n.name for n in unconverted][:5]}); replace them in the model or try another --opset"
        )
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"{spec.name}: the exported ONNX model is invalid: {_first_line(e)}") from e
    out.write_bytes(model.SerializeToString())
    return {"opset": opset, "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__, "tensorflow": tf.__version__}


def _rename_io(model: Any, names: dict[str, str]) -> None:
    graph = model.graph
    for node in graph.node:
        for i, n in enumerate(node.input):
            if n in names:
                node.input[i] = names[n]
        for i, n in enumerate(node.output):
            if n in names:
                node.output[i] = names[n]
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name in names:
            value.name = names[value.name]


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:500]
