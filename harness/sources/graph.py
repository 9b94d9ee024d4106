"""TensorFlow graph plumbing shared by the sources: parse, validate node names, freeze."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import ModelSourceError
from harness.sources import Frozen
from harness.spec import InputArg, ModelSpec, Shape, TensorSpec, format_shape
from harness.tfimport import import_tensorflow

PLACEHOLDERS = ("Placeholder", "PlaceholderWithDefault")


def parse_graph_def(data: bytes, path: Path) -> Any:
    tf = import_tensorflow()
    from google.protobuf.message import DecodeError

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as e:
        raise ModelSourceError(f"{path}: not a readable GraphDef ({e}); is it a frozen .pb written by TensorFlow?") from e
    if not graph_def.node:
        raise ModelSourceError(f"{path}: the GraphDef has no nodes; is it a frozen .pb written by TensorFlow?")
    return graph_def


def _suggest(name: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else ""


def check_nodes(graph_def: Any, inputs: Sequence[InputArg], outputs: Sequence[str], where: str) -> None:
    nodes = {n.name: n for n in graph_def.node}
    placeholders = [n.name for n in graph_def.node if n.op in PLACEHOLDERS]
    for i in inputs:
        if i.name not in nodes:
            raise ModelSourceError(
                f"{where}: no input node {i.name!r}{_suggest(i.name, placeholders)} "
                f"(placeholders in the graph: {placeholders[:10]})"
            )
        if nodes[i.name].op not in PLACEHOLDERS:
            raise ModelSourceError(
                f"{where}: input {i.name!r} is a {nodes[i.name].op}, not a placeholder; "
                f"placeholders in the graph: {placeholders[:10]}"
            )
    for o in outputs:
        node = o.rsplit(":", 1)[0] if ":" in o else o
        if node not in nodes:
            raise ModelSourceError(f"{where}: no output node {node!r}{_suggest(node, list(nodes))}")


def with_dynamic_batch(graph_def: Any, inputs: Sequence[InputArg], where: str) -> Any:
    """Copy of `graph_def` whose input placeholders have the user's shape (if given) and a
    dynamic batch, so the export gets a dynamic batch dimension too."""
    tf = import_tensorflow()
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    by_name = {i.name: i for i in inputs}
    for node in out.node:
        arg = by_name.get(node.name)
        if arg is None:
            continue
        shape_attr = node.attr["shape"].shape
        graph_dims = None if shape_attr.unknown_rank or not shape_attr.dim else [
            None if d.size < 0 else d.size for d in shape_attr.dim]
        if arg.shape is not None:
            dims: list[int | None] = list(arg.shape)
            if graph_dims is not None and (len(graph_dims) != len(dims) or any(
                    g is not None and d is not None and g != d for g, d in zip(graph_dims[1:], dims[1:]))):
                raise ModelSourceError(
                    f"{where}: --input {arg.name}:{format_shape(tuple(arg.shape))} conflicts with the graph, whose "
                    f"input {arg.name!r} has shape {format_shape(tuple(graph_dims))} (batch dimension aside); "
                    f"give the graph's shape, or leave it out: --input {arg.name}"
                )
        elif shape_attr.unknown_rank or not shape_attr.dim:
            raise ModelSourceError(
                f"{where}: input {arg.name!r} has no static shape in the graph; "
                f"give it, e.g. --input {arg.name}:1x299x299x3"
            )
        else:
            dims = [None if d.size < 0 else d.size for d in shape_attr.dim]
        dims[0] = None
        shape_attr.Clear()
        for d in dims:
            shape_attr.dim.add().size = -1 if d is None else d
    return out


def _shape(tensor: Any) -> Shape:
    if tensor.shape.rank is None:
        return (None,)
    dims = [d if d is None else int(d) for d in tensor.shape.as_list()]
    if dims:
        dims[0] = None
    return tuple(dims)


def spec_of_graph(
    graph_def: Any, name: str, inputs: Sequence[InputArg], outputs: Sequence[str], metadata: dict[str, Any]
) -> ModelSpec:
    """Spec from the frozen graph: public names are node names, dtypes/shapes from TF."""
    tf = import_tensorflow()
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")

    def tspec(node: str) -> TensorSpec:
        tensor = graph.get_tensor_by_name(node if ":" in node else f"{node}:0")
        public = node.removesuffix(":0")
        return TensorSpec(public, tensor.dtype.as_numpy_dtype.__name__, _shape(tensor), tensor.name)

    return ModelSpec(name, tuple(tspec(i.name) for i in inputs), tuple(tspec(o) for o in outputs), metadata)


def freeze_concrete(fn: Any, name: str, input_names: Sequence[str], output_names: Sequence[str],
                    metadata: dict[str, Any]) -> Frozen:
    """Freeze a TF2 concrete function; `input_names`/`output_names` are the public names of
    its (non-resource) inputs and flat outputs, in order."""
    tf = import_tensorflow()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # Control flow stays functional (`While`, `If`): lowered to TF1 control flow
    # (Enter/Exit/NextIteration, Switch/Merge) a Keras LSTM/GRU's TensorList ops are out of
    # tf2onnx's reach ("cannot convert TensorListReserve"); as While it converts them to an ONNX
    # Loop (or LSTM). Graphs with no control flow freeze to the same bytes either way (checked on
    # digits and InceptionV3); a graph with a tf.cond now freezes to an `If`.
    frozen = convert_variables_to_constants_v2(fn, lower_control_flow=False)
    graph_inputs = [t for t in frozen.inputs if t.dtype != tf.resource]
    if len(graph_inputs) != len(input_names) or len(frozen.outputs) != len(output_names):
        raise ModelSourceError(f"{name}: cannot match the frozen function's tensors to its signature")
    spec = ModelSpec(
        name,
        tuple(TensorSpec(n, t.dtype.as_numpy_dtype.__name__, _shape(t), t.name) for n, t in zip(input_names, graph_inputs)),
        tuple(TensorSpec(n, t.dtype.as_numpy_dtype.__name__, _shape(t), t.name) for n, t in zip(output_names, frozen.outputs)),
        metadata,
    )
    for t in spec.inputs:
        if len(t.shape) == 0:
            raise ModelSourceError(f"{name}: input {t.name!r} is a scalar; the harness needs a batch dimension")
    return Frozen(frozen.graph.as_graph_def().SerializeToString(deterministic=True), spec)


def freeze_keras(model: Any, name: str, metadata: dict[str, Any]) -> Frozen:
    """Freeze a Keras model called in inference mode, one placeholder per model input."""
    tf = import_tensorflow()
    input_names = [_keras_name(t, f"input_{i}") for i, t in enumerate(model.inputs)]
    specs = [
        tf.TensorSpec([None, *t.shape[1:]], t.dtype, name=n) for n, t in zip(input_names, model.inputs)
    ]
    output_names = list(getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(model.outputs))])
    if len(set(output_names)) != len(output_names) or len(output_names) != len(model.outputs):
        output_names = [f"output_{i}" for i in range(len(model.outputs))]

    def call(*args: Any) -> Any:
        out = model(list(args) if len(args) > 1 else args[0], training=False)
        if isinstance(out, dict):
            return [out[k] for k in output_names]
        return list(out) if isinstance(out, (list, tuple)) else [out]

    fn = tf.function(call).get_concrete_function(*specs)
    return freeze_concrete(fn, name, input_names, output_names, metadata)


def _keras_name(tensor: Any, default: str) -> str:
    # Keras 3 symbolic tensors are named like "keras_tensor_12"; the input layer's name is
    # what a user recognises.
    history = getattr(tensor, "_keras_history", None)
    layer = getattr(history, "operation", None) or (history[0] if history else None)
    return str(getattr(layer, "name", None) or default)


# Ops an index passes through unchanged on its way to a lookup (shape ops, casts, and Keras 3's
# negative-index fix-up `where(i < 0, i + n, i)`, entered through its `else` branch).
_INDEX_PASS = {"Identity", "Cast", "Reshape", "ExpandDims", "Squeeze", "StridedSlice", "Slice", "Transpose",
               "SelectV2", "Select"}
_GATHERS = {"GatherV2", "Gather", "ResourceGather"}


def infer_value_ranges(graph_def: Any, spec: ModelSpec) -> ModelSpec:
    """Integer inputs with no value range get one from the embedding table they index: [0, rows)
    of the smallest table any of them reaches (the indices of a `GatherV2` on a constant, axis 0).
    An integer input that reaches none (a mask) keeps none: generated inputs use 0/1."""
    from dataclasses import replace

    import numpy as np

    tf = import_tensorflow()
    nodes = {n.name: n for n in graph_def.node}
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for n in graph_def.node:
        for index, i in enumerate(n.input):
            consumers.setdefault(i.lstrip("^").split(":")[0], []).append((n, index))

    def const_rows(name: str, axis_name: str | None) -> int | None:
        node = nodes.get(name.split(":")[0])
        while node is not None and node.op == "Identity":
            node = nodes.get(node.input[0].split(":")[0])
        if node is None or node.op != "Const":
            return None
        if axis_name is not None:
            axis = nodes.get(axis_name.split(":")[0])
            if axis is None or axis.op != "Const" or int(tf.make_ndarray(axis.attr["value"].tensor)) != 0:
                return None
        dims = node.attr["value"].tensor.tensor_shape.dim
        return int(dims[0].size) if dims else None

    inputs = []
    for t in spec.inputs:
        if t.values is not None or np.dtype(t.dtype).kind not in "iu":
            inputs.append(t)
            continue
        rows: list[int] = []
        seen, frontier = set(), [t.tensor.split(":")[0]]
        while frontier:
            name = frontier.pop()
            if name in seen:
                continue
            seen.add(name)
            for node, index in consumers.get(name, []):
                if node.op in _GATHERS and index == 1:
                    found = const_rows(node.input[0], node.input[2] if node.op == "GatherV2" else None)
                    if found:
                        rows.append(found)
                elif node.op in _INDEX_PASS and (node.op not in ("SelectV2", "Select") or index > 0):
                    frontier.append(node.name)
        inputs.append(replace(t, values=(0, min(rows)), values_from="embedding table") if rows else t)
    return replace(spec, inputs=tuple(inputs))
