"""What a model takes and returns, independent of any framework.

Names are *public* names (what feeds and outputs are keyed by in every runner); `tensor`
is where the value lives in the frozen TensorFlow graph.  Dimension 0 is the batch and is
always dynamic (None)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.errors import InputError, UsageError

Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: Shape
    tensor: str = ""

    def check(self, value: Any) -> np.ndarray:
        """Return `value` as an array of this spec, or raise InputError naming the tensor."""
        array = np.asarray(value)
        if array.dtype != np.dtype(self.dtype):
            raise InputError(
                f"input {self.name!r}: dtype {array.dtype} given, the model takes {self.dtype}; "
                f"convert it with .astype(np.{self.dtype})"
            )
        if array.ndim != len(self.shape) or any(
            want is not None and got != want for got, want in zip(array.shape, self.shape)
        ):
            raise InputError(
                f"input {self.name!r}: shape {tuple(array.shape)} given, the model takes "
                f"{format_shape(self.shape)} (batch first)"
            )
        return array

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "tensor": self.tensor}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        return cls(data["name"], data["dtype"], tuple(data["shape"]), data.get("tensor", ""))


@dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def classes(self) -> tuple[str, ...]:
        """Outputs the model declares as class scores (built-in models do, in their metadata)."""
        return tuple(self.metadata.get("classes", ()))

    def check_feed(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Validate a feed: every input present, no extras, shapes and dtypes right, one batch size."""
        missing = [n for n in self.input_names if n not in feed]
        extra = [n for n in feed if n not in self.input_names]
        if missing or extra:
            raise InputError(
                f"model {self.name!r}: feed has {sorted(feed)}; it takes {self.input_names}"
                + (f" (missing {missing})" if missing else "")
                + (f" (unknown {extra})" if extra else "")
            )
        checked = {t.name: t.check(feed[t.name]) for t in self.inputs}
        batches = {a.shape[0] for a in checked.values()}
        if len(batches) > 1:
            raise InputError(f"model {self.name!r}: inputs have different batch sizes {sorted(batches)}")
        return checked

    def random_feed(self, batch: int, seed: int) -> dict[str, np.ndarray]:
        """Seeded inputs for models that have no representative data of their own."""
        rng = np.random.default_rng(seed)
        feed: dict[str, np.ndarray] = {}
        for t in self.inputs:
            shape = (batch, *[d if d is not None else 1 for d in t.shape[1:]])
            kind = np.dtype(t.dtype).kind
            if kind == "f":
                feed[t.name] = rng.standard_normal(shape).astype(t.dtype)
            elif kind in "iu":
                feed[t.name] = rng.integers(0, 10, shape).astype(t.dtype)
            elif kind == "b":
                feed[t.name] = rng.random(shape) < 0.5
            else:
                raise InputError(f"input {t.name!r}: cannot make random data of dtype {t.dtype}; give golden inputs")
        return feed

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        return cls(
            data["name"],
            tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
            tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
            dict(data.get("metadata", {})),
        )


def format_shape(shape: Shape) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


# In TensorFlow names a colon only precedes a tensor index ("input:0"), so whatever follows
# the last colon and is not a bare index is a SHAPE: "1x299x299x3", "?,8,8,1", "[10]".


@dataclass(frozen=True)
class InputArg:
    """A user's `--input NAME[:SHAPE]`; the batch dim of SHAPE is always made dynamic."""

    name: str
    shape: Shape | None = None

    @classmethod
    def parse(cls, text: str) -> InputArg:
        name, shape = text, None
        if ":" in text:
            head, _, tail = text.rpartition(":")
            if not tail.isdigit():
                name, shape = head, _parse_shape(tail, text)
        name = strip_tensor_index(name)
        if not name:
            raise UsageError(f"--input {text!r}: empty name; use NAME or NAME:SHAPE such as input:1x299x299x3")
        return cls(name, shape)

    def __str__(self) -> str:
        return self.name if self.shape is None else f"{self.name}:{format_shape(self.shape)}"


def _parse_shape(text: str, whole: str) -> Shape:
    parts = [p for p in re.split(r"[x,]", text.strip("[]")) if p != ""]
    dims: list[int | None] = []
    for p in parts:
        if p in ("?", "-1"):
            dims.append(None)
        elif p.isdigit() and int(p) > 0:
            dims.append(int(p))
        else:
            raise UsageError(f"--input {whole!r}: bad dimension {p!r}; dims are positive integers, ? or -1")
    if not dims:
        raise UsageError(f"--input {whole!r}: empty shape")
    return (None, *dims[1:])


def strip_tensor_index(name: str) -> str:
    """'input:0' -> 'input': users give either node or tensor names."""
    return name.removesuffix(":0")
