"""Stage 2: frozen graph -> ONNX fp32 (tf2onnx), checked with onnx.checker."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.artifacts import ArtifactStore, digest_json
from harness.errors import ArtifactError
from harness.export import export_onnx
from harness.machine import installed_version
from harness.rewrite import REWRITES
from harness.spec import ModelSpec
from harness.stages import Step
from harness.stages.freeze import FrozenModel


@dataclass(frozen=True)
class OnnxModel:
    name: str
    spec: ModelSpec
    path: Path
    opset: int
    reused: bool
    seconds: float
    digest: str  # of the file, as its cache entry recorded (and checked) it: keys what is made from it


def export(store: ArtifactStore, frozen: FrozenModel, opset: int, step: Step) -> OnnxModel:
    key = digest_json(["onnx", frozen.digest, opset, installed_version("tf2onnx"), installed_version("onnx"),
                       frozen.spec.to_dict(), REWRITES])
    start = time.perf_counter()

    def build(tmp: Path) -> dict[str, Any]:
        from harness.sources import Frozen

        with step(f"exporting {frozen.name} to ONNX (tf2onnx, opset {opset})"):
            info = export_onnx(Frozen(frozen.graph_path.read_bytes(), frozen.spec), tmp / "model.onnx", opset)
        return {**info, "model_digest": frozen.digest}

    entry = store.get_or_build("onnx", frozen.name, key, build)
    if not entry.file("model.onnx").is_file():
        raise ArtifactError(f"{entry.path}: cache entry has no model.onnx; delete the directory and retry")
    return OnnxModel(frozen.name, frozen.spec, entry.file("model.onnx"), opset, entry.reused,
                     time.perf_counter() - start, entry.meta["files"]["model.onnx"])
