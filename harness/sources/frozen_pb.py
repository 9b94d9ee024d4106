"""A frozen GraphDef (.pb) with user-given input and output node names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.artifacts import digest_json, file_digest
from harness.sources import Frozen
from harness.sources.graph import check_nodes, parse_graph_def, spec_of_graph, with_dynamic_batch
from harness.spec import InputArg
from harness.tfimport import import_tensorflow


@dataclass(frozen=True)
class FrozenGraphSource:
    path: Path
    inputs: tuple[InputArg, ...]
    outputs: tuple[str, ...]
    kind: str = "frozen-graph"

    @property
    def name(self) -> str:
        return Path(self.path).stem

    def key(self) -> str:
        return digest_json([self.kind, file_digest(Path(self.path)), [str(i) for i in self.inputs], list(self.outputs)])

    def freeze(self) -> Frozen:
        tf = import_tensorflow()
        path = Path(self.path)
        graph_def = parse_graph_def(path.read_bytes(), path)
        check_nodes(graph_def, self.inputs, self.outputs, str(path))
        # Drop what the outputs do not need (training ops, summaries): tf2onnx would try them.
        graph_def = tf.compat.v1.graph_util.extract_sub_graph(graph_def, [o.split(":")[0] for o in self.outputs])
        graph_def = with_dynamic_batch(graph_def, self.inputs, str(path))
        spec = spec_of_graph(graph_def, self.name, self.inputs, self.outputs, {"source": self.kind, "path": str(path)})
        return Frozen(graph_def.SerializeToString(deterministic=True), spec)
