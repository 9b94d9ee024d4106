"""Stage 1: a model source -> its frozen GraphDef ("persist the model") and spec."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.artifacts import ArtifactStore, digest_bytes, digest_json
from harness.machine import installed_version
from harness.sources import Source
from harness.spec import ModelSpec
from harness.stages import Step


@dataclass(frozen=True)
class FrozenModel:
    name: str
    spec: ModelSpec
    graph_path: Path
    digest: str  # of the frozen GraphDef: what goldens are checked against
    reused: bool


def freeze(store: ArtifactStore, source: Source, step: Step) -> FrozenModel:
    key = digest_json(["frozen", source.key(), installed_version("tensorflow"), installed_version("keras")])

    def build(tmp: Path) -> dict[str, Any]:
        with step(f"freezing {source.name} ({source.kind})"):
            frozen = source.freeze()
        (tmp / "graph.pb").write_bytes(frozen.graph_def)
        return {"spec": frozen.spec.to_dict(), "digest": digest_bytes(frozen.graph_def), "source": source.kind}

    entry = store.get_or_build("frozen", source.name, key, build)
    return FrozenModel(source.name, ModelSpec.from_dict(entry.meta["spec"]), entry.file("graph.pb"),
                       entry.meta["digest"], entry.reused)
