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
Range = tuple[int, int, int]  # a dynamic dimension's (min, opt, max): a TensorRT optimization profile's
INT_DEFAULT_VALUES = (0, 2)  # an integer input whose range is unknown: valid for masks and any lookup table


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: Shape
    tensor: str = ""
    # Per dimension, the (min, opt, max) of a dynamic one besides the batch, else None; () if
    # none is given. Golden and benchmark inputs use opt; TensorRT's profile takes all three.
    ranges: tuple[Range | None, ...] = ()
    # An integer input's values, [lo, hi): given (`--input ids[0,30522)`) or inferred from the
    # embedding table the input indexes; `values_from` says which.
    values: tuple[int, int] | None = None
    values_from: str = ""

    def range_of(self, axis: int) -> Range | None:
        return self.ranges[axis] if axis < len(self.ranges) else None

    def feed_shape(self, batch: int) -> tuple[int, ...]:
        """The shape of generated inputs: dynamic dims at their profile's opt, else 1."""
        dims = [batch]
        for axis, d in enumerate(self.shape[1:], start=1):
            r = self.range_of(axis)
            dims.append(d if d is not None else (r[1] if r else 1))
        return tuple(dims)

    def value_range(self) -> tuple[int, int]:
        return self.values or INT_DEFAULT_VALUES

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
        for axis, r in enumerate(self.ranges):
            if r is not None and not r[0] <= array.shape[axis] <= r[2]:
                raise InputError(f"input {self.name!r}: dimension {axis} is {array.shape[axis]}, outside the range "
                                 f"{r[0]}..{r[2]} the model was described with (--input {self.name}:...)")
        return array

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "tensor": self.tensor}
        # Only when set, so the dict of a spec without them (and every key made from it) is unchanged.
        if any(self.ranges):
            data["ranges"] = [list(r) if r else None for r in self.ranges]
        if self.values is not None:
            data["values"], data["values_from"] = list(self.values), self.values_from
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        ranges = tuple((r[0], r[1], r[2]) if r else None for r in data.get("ranges", ()))
        values = data.get("values")
        return cls(data["name"], data["dtype"], tuple(data["shape"]), data.get("tensor", ""), ranges,
                   (values[0], values[1]) if values else None, data.get("values_from", ""))

    def described(self, arg: InputArg) -> TensorSpec:
        """This input as `--input` describes it: ranges of dynamic dims, a value range."""
        from dataclasses import replace

        ranges: list[Range | None] = [None] * len(self.shape)
        if arg.shape is not None:
            if len(arg.shape) != len(self.shape) or any(
                    a is not None and d is not None and a != d for a, d in zip(arg.shape[1:], self.shape[1:])):
                raise UsageError(f"--input {arg}: the model's input {self.name!r} has shape {format_shape(self.shape)}")
            for axis, r in enumerate(arg.ranges):
                if r is not None and self.shape[axis] is not None:
                    raise UsageError(f"--input {arg}: dimension {axis} of {self.name!r} is fixed at "
                                     f"{self.shape[axis]}; a range is only for a dynamic one")
                ranges[axis] = r
        values, source = self.values, self.values_from
        if arg.values is not None:
            if np.dtype(self.dtype).kind not in "iu":
                raise UsageError(f"--input {arg}: a value range is for integer inputs; {self.name!r} is {self.dtype}")
            values, source = arg.values, "given"
        return replace(self, ranges=tuple(ranges) if any(ranges) else self.ranges, values=values, values_from=source)


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
            shape = t.feed_shape(batch)
            kind = np.dtype(t.dtype).kind
            if kind == "f":
                feed[t.name] = rng.standard_normal(shape).astype(t.dtype)
            elif kind in "iu":
                feed[t.name] = rng.integers(*t.value_range(), shape).astype(t.dtype)
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
    """A user's `--input NAME[:SHAPE][[LO,HI)]`.  The batch dim of SHAPE is always made dynamic;
    another dim may be `?`, or a range that is dynamic and becomes TensorRT's profile:
    `MIN..MAX` (opt = max) or `MIN/OPT/MAX`.  `[LO,HI)` is an integer input's values."""

    name: str
    shape: Shape | None = None
    ranges: tuple[Range | None, ...] = ()
    values: tuple[int, int] | None = None

    @classmethod
    def parse(cls, text: str) -> InputArg:
        rest, values = text, None
        found = re.fullmatch(r"(.*)\[\s*(-?\d+)\s*,\s*(-?\d+)\s*\)", text)
        if found:
            rest, values = found[1], (int(found[2]), int(found[3]))
            if values[0] >= values[1]:
                raise UsageError(f"--input {text!r}: value range [{values[0]},{values[1]}) is empty; "
                                 "give [LO,HI) with LO < HI, HI excluded")
        name: str = rest
        shape: Shape | None = None
        ranges: tuple[Range | None, ...] = ()
        if ":" in rest:
            head, _, tail = rest.rpartition(":")
            if not tail.isdigit():
                name, (shape, ranges) = head, _parse_shape(tail, text)
        name = strip_tensor_index(name)
        if not name:
            raise UsageError(f"--input {text!r}: empty name; use NAME or NAME:SHAPE such as input:1x299x299x3")
        return cls(name, shape, ranges, values)

    def __str__(self) -> str:
        text = self.name
        if self.shape is not None:
            text += ":" + "x".join(
                ("?" if d is None else str(d)) if not (r := self.range_of(axis)) else "/".join(map(str, r))
                for axis, d in enumerate(self.shape))
        if self.values is not None:
            text += f"[{self.values[0]},{self.values[1]})"
        return text

    def range_of(self, axis: int) -> Range | None:
        return self.ranges[axis] if axis < len(self.ranges) else None


def _parse_shape(text: str, whole: str) -> tuple[Shape, tuple[Range | None, ...]]:
    parts = [p for p in re.split(r"[x,]", text.strip("[]")) if p != ""]
    dims: list[int | None] = []
    ranges: list[Range | None] = []
    for axis, p in enumerate(parts):
        r = _parse_range(p, whole) if (".." in p or "/" in p) else None
        if r is not None and axis == 0:
            raise UsageError(f"--input {whole!r}: the batch dimension's range comes from --min-batch/--max-batch")
        if r is not None or p in ("?", "-1"):
            dims.append(None)
        elif p.isdigit() and int(p) > 0:
            dims.append(int(p))
        else:
            raise UsageError(f"--input {whole!r}: bad dimension {p!r}; dims are positive integers, ?, -1, "
                             "or a range MIN..MAX or MIN/OPT/MAX")
        ranges.append(r)
    if not dims:
        raise UsageError(f"--input {whole!r}: empty shape")
    return (None, *dims[1:]), (tuple(ranges) if any(ranges) else ())


def _parse_range(text: str, whole: str) -> Range:
    parts = text.split("..") if ".." in text else text.split("/")
    if not all(p.isdigit() for p in parts) or len(parts) not in (2, 3) or (".." in text and len(parts) != 2):
        raise UsageError(f"--input {whole!r}: bad range {text!r}; use MIN..MAX or MIN/OPT/MAX (positive integers)")
    low, high = int(parts[0]), int(parts[-1])
    opt = int(parts[1]) if len(parts) == 3 else high
    if not 0 < low <= opt <= high:
        raise UsageError(f"--input {whole!r}: range {text!r} needs 0 < MIN <= OPT <= MAX")
    return low, opt, high


def strip_tensor_index(name: str) -> str:
    """'input:0' -> 'input': users give either node or tensor names."""
    return name.removesuffix(":0")
