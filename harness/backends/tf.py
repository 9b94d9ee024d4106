"""TensorFlow runner: the reference and the baseline.  It runs the frozen graph — the same
graph the ONNX export was made from — as a pruned graph function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.backends.base import Runner
from harness.spec import ModelSpec
from harness.tfimport import import_tensorflow


class TFRunner(Runner):
    backend = "tensorflow"

    def __init__(self, graph_path: Path, spec: ModelSpec) -> None:
        super().__init__(spec, "fp32")
        self.graph_path = Path(graph_path)
        self._fn: Any = None
        self._tf: Any = None

    def recipe_args(self) -> dict[str, Any]:
        return {"graph_path": str(self.graph_path)}

    def _activate(self) -> None:
        tf = self._tf = import_tensorflow()
        graph_def = tf.compat.v1.GraphDef.FromString(self.graph_path.read_bytes())
        wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
        graph = wrapped.graph
        self._fn = wrapped.prune(
            [graph.get_tensor_by_name(t.tensor) for t in self.spec.inputs],
            [graph.get_tensor_by_name(t.tensor) for t in self.spec.outputs],
        )

    def _deactivate(self) -> None:
        self._fn = None

    def infer_checked(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # The pruned function takes tensors only (a numpy array fails to bind).
        outputs = self._fn(*[self._tf.constant(feed[t.name]) for t in self.spec.inputs])
        return {t.name: o.numpy() for t, o in zip(self.spec.outputs, outputs)}
