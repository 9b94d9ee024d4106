"""Stage 1: a model source -> its frozen GraphDef ("persist the model") and spec."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.artifacts import ArtifactStore, digest_bytes, digest_json
from harness.errors import UsageError
from harness.machine import installed_version
from harness.sources import Source
from harness.spec import InputArg, ModelSpec
from harness.stages import Step

# Bumped when what the freeze stage records about inputs changes (value ranges inferred from
# embedding tables): a spec cached before lacks them.
VALUE_RANGES = "values-1"


def describe(spec: ModelSpec, inputs: Sequence[InputArg]) -> ModelSpec:
    """`spec` with each `--input`'s description applied; a name the model lacks is an error."""
    from dataclasses import replace

    by_name = {t.name: t for t in spec.inputs}
    by_tensor = {t.tensor.split(":")[0]: t.name for t in spec.inputs}
    described = dict(by_name)
    for arg in inputs:
        name = arg.name if arg.name in by_name else by_tensor.get(arg.name)
        if name is None:
            raise UsageError(f"--input {arg}: {spec.name!r} has no input {arg.name!r}; its inputs are {spec.input_names}")
        described[name] = described[name].described(arg)  # several --input of one input add up
    return replace(spec, inputs=tuple(described[t.name] for t in spec.inputs))


@dataclass(frozen=True)
class FrozenModel:
    name: str
    spec: ModelSpec
    graph_path: Path
    digest: str  # of the frozen GraphDef: what goldens are checked against
    reused: bool


def freeze(store: ArtifactStore, source: Source, step: Step, inputs: Sequence[InputArg] = ()) -> FrozenModel:
    """`inputs`: the user's `--input`s, which may describe inputs further (dynamic dims' ranges,
    integer value ranges) whatever picked the tensors."""
    described = [str(i) for i in inputs if i.ranges or i.values is not None]
    key = digest_json(["frozen", source.key(), installed_version("tensorflow"), installed_version("keras"),
                       *([described] if described else []), VALUE_RANGES])

    def build(tmp: Path) -> dict[str, Any]:
        from harness.sources.graph import infer_value_ranges
        from harness.tfimport import import_tensorflow

        with step(f"freezing {source.name} ({source.kind})"):
            frozen = source.freeze()
        spec = describe(frozen.spec, inputs)
        graph_def = import_tensorflow().compat.v1.GraphDef.FromString(frozen.graph_def)
        spec = infer_value_ranges(graph_def, spec)
        (tmp / "graph.pb").write_bytes(frozen.graph_def)
        return {"spec": spec.to_dict(), "digest": digest_bytes(frozen.graph_def), "source": source.kind}

    entry = store.get_or_build("frozen", source.name, key, build)
    return FrozenModel(source.name, ModelSpec.from_dict(entry.meta["spec"]), entry.file("graph.pb"),
                       entry.meta["digest"], entry.reused)
