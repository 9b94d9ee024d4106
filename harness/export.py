"""Frozen graph -> ONNX with tf2onnx: dynamic batch, public tensor names, checked."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.errors import ExportError
from harness.rewrite import rewrite_for_tf2onnx, rewrite_onnx_for_tensorrt
from harness.sources import Frozen
from harness.tfimport import import_tensorflow, import_tf2onnx

DEFAULT_OPSET = 17
BATCH_DIM = "batch"
CATCH_ERRORS = "TF2ONNX_CATCH_ERRORS"  # tf2onnx's switch for its optimizers' deep copies


_EXPORT_LOCK = threading.Lock()  # the patch below and tf2onnx's switch are process-wide


@contextlib.contextmanager
def _fresh_node_protos() -> Iterator[None]:
    """tf2onnx rewrites every node's protobuf in place after each optimizer pass (`update_proto`:
    clear the attributes, extend with new ones). With upb-backed protobuf a cleared message's
    memory stays in its arena until the whole message dies, so every pass kept another copy of
    every weight: +91 MB per pass on InceptionV3, 22 passes.  A new NodeProto per rewrite lets
    the old one go. The exported InceptionV3 bytes were checked to be the same with and without
    it (sha256 0c96752a..., scripts/pipeline_profile.py prints it)."""
    import onnx
    from tf2onnx import graph

    original = graph.Node.update_proto
    rebuilt = {"input", "output", "attribute"}  # what update_proto writes itself

    def update_proto(self: Any, external_tensor_storage: Any = None) -> None:
        old = self._op
        fresh = onnx.NodeProto()
        for field, value in old.ListFields():  # every field set, as set (proto2 presence shows)
            if field.name in rebuilt:
                continue
            if hasattr(value, "extend"):  # a repeated field (metadata_props, ...)
                getattr(fresh, field.name).extend(value)
            else:
                setattr(fresh, field.name, value)
        self._op = fresh
        original(self, external_tensor_storage)

    graph.Node.update_proto = update_proto
    try:
        yield
    finally:
        graph.Node.update_proto = original


def export_onnx(frozen: Frozen, out: Path, opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """Write `out` (an ONNX file whose inputs and outputs carry the spec's public names)
    and return what to record about it."""
    tf = import_tensorflow()
    tf2onnx = import_tf2onnx()
    import onnx

    spec = frozen.spec
    graph_def, rewrites = rewrite_for_tf2onnx(tf.compat.v1.GraphDef.FromString(frozen.graph_def))

    def convert(catch_errors: bool) -> Any:
        # tf2onnx runs each of its graph optimizers on a deep copy of the graph by default, so a
        # failing one can be skipped: InceptionV3's export peaked at 6.05 GB that way, 3.80 GB
        # without.  So first without; only if that fails, again with the copies.  (tf2onnx 1.17
        # turns the copies off whenever the variable is set, whatever its value: unset it to
        # have them.)
        previous = os.environ.get(CATCH_ERRORS)
        if catch_errors:
            os.environ.pop(CATCH_ERRORS, None)
        else:
            os.environ[CATCH_ERRORS] = "FALSE"
        try:
            model, _ = tf2onnx.convert.from_graph_def(
                graph_def,
                input_names=[t.tensor for t in spec.inputs],
                output_names=[t.tensor for t in spec.outputs],
                opset=opset,
            )
            return model
        finally:
            if previous is None:
                os.environ.pop(CATCH_ERRORS, None)
            else:
                os.environ[CATCH_ERRORS] = previous

    try:
        with _EXPORT_LOCK:
            retried = ""
            try:
                with _fresh_node_protos():
                    model = convert(catch_errors=False)
            except Exception as first:  # noqa: BLE001 - an optimizer failed without its safety net: retry with it
                retried = f"{type(first).__name__}: {_first_line(first)}"
                model = convert(catch_errors=True)
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
    rewrites.update(rewrite_onnx_for_tensorrt(model))
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"{spec.name}: the exported ONNX model is invalid: {_first_line(e)}") from e
    out.write_bytes(model.SerializeToString())
    record = {"opset": opset, "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__, "tensorflow": tf.__version__}
    if rewrites:
        record["rewrites"] = rewrites
    if retried:  # said, not hidden: the lean first pass failed (memory goes back up), see why
        record["tf2onnx_retried_with_copies"] = retried
    return record


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
