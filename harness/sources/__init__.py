"""Model sources: anything a user points the harness at, turned into a frozen graph + spec.

`resolve()` is cheap (it reads file names and hashes bytes; no TensorFlow) so a cache key
exists before any freezing; `Source.freeze()` does the TensorFlow work."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from harness.errors import ModelSourceError, UsageError
from harness.spec import InputArg, ModelSpec

DEFAULT_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class Frozen:
    """A frozen GraphDef (serialized) and the spec that names its tensors."""

    graph_def: bytes
    spec: ModelSpec


class Source(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    def key(self) -> str:
        """Digest of everything the frozen graph depends on (file bytes, options)."""
        ...

    def freeze(self) -> Frozen: ...


@dataclass(frozen=True)
class ModelRequest:
    """What the user asked for: a built-in name or a path, plus the options that pick tensors."""

    model: str
    inputs: tuple[InputArg, ...] = ()
    outputs: tuple[str, ...] = ()
    signature: str | None = None

    @classmethod
    def of(
        cls,
        model: str,
        inputs: Sequence[str | InputArg] = (),
        outputs: Sequence[str] = (),
        signature: str | None = None,
    ) -> ModelRequest:
        parsed = tuple(i if isinstance(i, InputArg) else InputArg.parse(i) for i in inputs)
        return cls(model, parsed, tuple(outputs), signature)


def resolve(request: ModelRequest) -> Source:
    from harness.sources import checkpoint, frozen_pb, keras_file, saved_model, zoo

    model = request.model
    if model in zoo.MODELS:
        _no_tensor_options(request, f"built-in model {model!r}")
        return zoo.MODELS[model]()
    path = Path(model)
    if request.signature is not None and not saved_model.is_saved_model(path):
        raise UsageError(f"--signature is only for SavedModel directories; {model} is not one")
    if saved_model.is_saved_model(path):
        _only_descriptions(request, "a SavedModel (tensors come from its signature)")
        return saved_model.SavedModelSource(path, request.signature or DEFAULT_SIGNATURE)
    if path.suffix in (".keras", ".h5"):
        _only_descriptions(request, "a Keras file (tensors come from the model)")
        return keras_file.KerasSource(path)
    if path.suffix == ".pb" and path.is_file():
        return frozen_pb.FrozenGraphSource(path, *_node_options(request))
    if checkpoint.is_checkpoint_prefix(path):
        return checkpoint.CheckpointSource(path, *_node_options(request))
    if path.is_dir():
        raise ModelSourceError(f"{model}: a directory without saved_model.pb; give a SavedModel directory")
    if path.exists():
        raise ModelSourceError(
            f"{model}: unknown model format; give a checkpoint prefix, a .pb, a SavedModel directory, "
            "a .keras/.h5 file, or a built-in name"
        )
    raise ModelSourceError(
        f"{model}: no such built-in model or file; built-in models are {sorted(zoo.MODELS)}, "
        f"a checkpoint is given by its prefix (PREFIX.meta, PREFIX.index, PREFIX.data-*)"
    )


def _node_options(request: ModelRequest) -> tuple[tuple[InputArg, ...], tuple[str, ...]]:
    if not request.inputs or not request.outputs:
        raise UsageError(
            f"{request.model}: a graph or checkpoint needs its node names: "
            "--input NAME[:SHAPE] and --output NAME (each repeatable)"
        )
    return request.inputs, request.outputs


def _no_node_options(request: ModelRequest, what: str) -> None:
    if request.inputs or request.outputs:
        raise UsageError(f"{request.model}: --input/--output are not used for {what}")


def _only_descriptions(request: ModelRequest, what: str) -> None:
    """Tensors come from the model; `--input NAME:SHAPE` may still describe an input (ranges
    of its dynamic dims, its values), not pick one, and --output has nothing to do."""
    if request.outputs:
        raise UsageError(f"{request.model}: --output is not used for {what}")
    plain = [str(i) for i in request.inputs if not i.ranges and i.values is None]
    if plain:
        raise UsageError(f"{request.model}: --input {plain[0]} picks nothing for {what}; --input here only "
                         "describes an input, e.g. tokens:?x1..128 (a dynamic dim's range) or ids[0,30522) (its values)")


def _no_tensor_options(request: ModelRequest, what: str) -> None:
    _no_node_options(request, what)
    if request.signature is not None:
        raise UsageError(f"--signature is not used for {what}")
