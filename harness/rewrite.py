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
