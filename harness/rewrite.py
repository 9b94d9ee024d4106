"""Frozen-graph rewrites that let tf2onnx convert what it has no handler for, each exact
in meaning, so TensorFlow (which runs the original graph) stays the reference.

- `Erfc(x)` -> `1 - Erf(x)`: Keras 3's exact GELU is `0.5 * x * erfc(-x / sqrt(2))` and
  tf2onnx 1.17 converts `Erf` but not `Erfc`. In float32 the two differ by at most ~6e-8
  absolute (1 - erf loses erfc's relative precision only where erfc < 1e-7, which GELU then
  multiplies by x/2); an absolute difference that small is inside every precision's policy.

Only the top-level graph is rewritten: a rewrite inside a loop body (a FunctionDef) would
have to follow FunctionDef's own input naming; no model seen needs it yet, and tf2onnx's
error names the op if one does."""

from __future__ import annotations

from collections import Counter
from typing import Any

from harness.tfimport import import_tensorflow

# What the rewrites below do, in the ONNX cache key: a new rewrite re-exports what it may change.
REWRITES = ("Erfc->1-Erf", "EyeLike->Equal(Range,Range) v1")  # bump a version when a rewrite changes


def rewrite_for_tf2onnx(graph_def: Any) -> tuple[Any, dict[str, int]]:
    """A copy of `graph_def` with every rewritable op replaced, and how many of each."""
    tf = import_tensorflow()
    done: Counter[str] = Counter()
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        if node.op == "Erfc":
            out.node.extend(_erfc(tf, node))
            done["Erfc"] += 1
        else:
            out.node.add().CopyFrom(node)
    return (out if done else graph_def), dict(done)


def _erfc(tf: Any, node: Any) -> list[Any]:
    """`name = Erfc(x)` -> `name/one = Const 1`, `name/erf = Erf(x)`, `name = Sub(name/one, name/erf)`:
    the output keeps the node's name, so its consumers are untouched."""
    dtype = node.attr["T"].type
    one = tf.compat.v1.NodeDef(name=f"{node.name}/one", op="Const", device=node.device)
    one.attr["dtype"].type = dtype
    one.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(1, tf.dtypes.as_dtype(dtype), shape=[]))
    erf = tf.compat.v1.NodeDef(name=f"{node.name}/erf", op="Erf", input=[node.input[0]], device=node.device)
    erf.attr["T"].type = dtype
    sub = tf.compat.v1.NodeDef(name=node.name, op="Sub", input=[one.name, erf.name, *[i for i in node.input[1:] if i.startswith("^")]],
                               device=node.device)
    sub.attr["T"].type = dtype
    return [one, erf, sub]


def rewrite_onnx_for_tensorrt(model: Any) -> dict[str, int]:
    """Rewrite, in place, the exporter's ONNX nodes a TensorRT parser rejects, each exact in
    meaning; returns how many of each.

    - `EyeLike(x, k, dtype)` -> `Cast(Equal(Range(rows) + k, Range(cols)))`: tf2onnx emits
      EyeLike inside its CombinedNonMaxSuppression (a padded detection head), and TensorRT for
      RTX's parser has no importer for it.  Built from x's runtime shape, so a dynamic shape
      stays dynamic; ones and zeros in the same dtype, so nothing downstream changes.  Models
      below opset 15 are left as they are (the harness exports at 17 unless told otherwise)."""
    import onnx
    from onnx import helper

    done: Counter[str] = Counter()
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 15:  # the replacement's forms (Unsqueeze's axes input, CastLike) need opset 15
        return {}

    def rewrite(graph: Any) -> None:
        nodes = []
        for node in graph.node:
            for attr in node.attribute:  # subgraphs (Loop, If bodies) too
                for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                    rewrite(sub)
            if node.op_type != "EyeLike" or node.domain not in ("", "ai.onnx"):
                nodes.append(node)
                continue
            done["EyeLike"] += 1
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            p = f"{node.name or node.output[0]}/eye"

            def const(name: str, value: int, dims: list[int], p: str = p) -> Any:  # dims []: a scalar (Range's)
                tensor = helper.make_tensor(f"{p}/{name}", onnx.TensorProto.INT64, dims, [value])
                return helper.make_node("Constant", [], [f"{p}/{name}"], name=f"{p}/{name}", value=tensor)

            nodes += [
                const("zero", 0, []), const("one", 1, []), const("k", int(attrs.get("k", 0)), []),
                const("row_axes", 1, [1]), const("col_axes", 0, [1]),
                helper.make_node("Shape", [node.input[0]], [f"{p}/shape"], name=f"{p}/shape"),
                helper.make_node("Gather", [f"{p}/shape", f"{p}/zero"], [f"{p}/n"], name=f"{p}/n", axis=0),
                helper.make_node("Gather", [f"{p}/shape", f"{p}/one"], [f"{p}/m"], name=f"{p}/m", axis=0),
                helper.make_node("Range", [f"{p}/zero", f"{p}/n", f"{p}/one"], [f"{p}/rows"], name=f"{p}/rows"),
                helper.make_node("Range", [f"{p}/zero", f"{p}/m", f"{p}/one"], [f"{p}/cols"], name=f"{p}/cols"),
                helper.make_node("Unsqueeze", [f"{p}/rows", f"{p}/row_axes"], [f"{p}/rows2"], name=f"{p}/rows2"),
                helper.make_node("Add", [f"{p}/rows2", f"{p}/k"], [f"{p}/shifted"], name=f"{p}/shifted"),
                helper.make_node("Unsqueeze", [f"{p}/cols", f"{p}/col_axes"], [f"{p}/cols2"], name=f"{p}/cols2"),
                helper.make_node("Equal", [f"{p}/shifted", f"{p}/cols2"], [f"{p}/diagonal"], name=f"{p}/diagonal"),
                (helper.make_node("Cast", [f"{p}/diagonal"], [node.output[0]], name=node.name, to=int(attrs["dtype"]))
                 if "dtype" in attrs else
                 helper.make_node("CastLike", [f"{p}/diagonal", node.input[0]], [node.output[0]], name=node.name)),
            ]
        del graph.node[:]
        graph.node.extend(nodes)

    rewrite(model.graph)
    return dict(done)
