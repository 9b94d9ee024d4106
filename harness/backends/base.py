"""The one runner interface every backend implements.

    with runner:                      # activate(): load the model, allocate
        outputs = runner.infer(feed)  # dict[str, ndarray] -> dict[str, ndarray]

Feeds and outputs are keyed by the spec's public names whatever the backend, so any two
runners' outputs can be compared directly."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import numpy as np

from harness.errors import HarnessError, InputError
from harness.spec import ModelSpec


@dataclass(frozen=True)
class RunnerRecipe:
    """How another process (the serving worker) makes a runner: `factory` is "module:function"
    returning an inactive Runner, called there with `kwargs` (all picklable)."""

    factory: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> Any:
        module, _, name = self.factory.partition(":")
        return getattr(importlib.import_module(module), name)(**self.kwargs)


def make_runner(runner_class: str, spec: Mapping[str, Any], **kwargs: Any) -> Runner:
    """A runner of `runner_class` ("module:Class") from its recipe's plain data."""
    module, _, name = runner_class.partition(":")
    cls = getattr(importlib.import_module(module), name)
    return cls(spec=ModelSpec.from_dict(spec), **kwargs)  # type: ignore[no-any-return]


class Runner(ABC):
    backend: str = ""
    max_batch: int | None = None  # the largest batch one call takes (a TensorRT plan's profile); None: any

    def __init__(self, spec: ModelSpec, precision: str = "fp32") -> None:
        self.spec = spec
        self.precision = precision
        self.is_active = False

    @property
    def name(self) -> str:
        return f"{self.backend}-{self.precision}"

    def activate(self) -> None:
        if not self.is_active:
            self._activate()
            self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            self.is_active = False
            self._deactivate()

    def infer(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        self._require_active()
        return self.infer_checked(self.spec.check_feed(feed))

    def _require_active(self) -> None:
        if not self.is_active:
            raise HarnessError(f"{self.name} runner for {self.spec.name!r} is not active; use it in a `with` block")

    def recipe(self) -> RunnerRecipe:
        """How to make this runner again in another process: the runner says, from its own
        constructor arguments (`recipe_args`), so the serving worker needs no list of classes."""
        cls = type(self)
        return RunnerRecipe(f"{__name__}:make_runner", {
            "runner_class": f"{cls.__module__}:{cls.__qualname__}", "spec": self.spec.to_dict(), **self.recipe_args()})

    def recipe_args(self) -> dict[str, Any]:
        """The constructor arguments besides the spec, as plain picklable data."""
        raise NotImplementedError(f"{type(self).__name__} cannot be rebuilt in another process (no recipe_args)")

    @property
    def data_dependent(self) -> tuple[str, ...]:
        """Outputs known, before running, to have a number of rows that depends on the data (a
        TensorRT plan says); others are found out by running."""
        return ()

    def infer_batched(self, feed: Mapping[str, Any], ragged: bool = True) -> dict[str, np.ndarray]:
        """`infer` over a feed of any size, in chunks of at most `max_batch` samples (a golden
        of 360 digits through a TensorRT plan built for 32), outputs joined in order.  With
        `ragged`, a model whose input takes one sample (batch dimension 1), or one with an output
        that has no row per sample (a per-image NMS whose number of boxes depends on the image),
        is run one sample at a time and such outputs come back as rows per sample
        (`join_samples`); without it (the serving worker, which answers requests as they came),
        outputs are joined as they are."""
        self._require_active()
        one = ragged and any(t.shape and t.shape[0] == 1 for t in self.spec.inputs)
        # Checked whole where the model takes any batch; one sample at a time (below) where it takes one.
        checked = self.spec.check_feed(feed) if not one else {k: np.asarray(v) for k, v in feed.items()}
        scalars = [k for k, v in checked.items() if v.ndim == 0]
        if scalars:
            raise InputError(f"model {self.spec.name!r}: input(s) {scalars} are scalars; a feed is batch first")
        total = len(next(iter(checked.values()))) if checked else 0
        step = 1 if one or (ragged and self.data_dependent) else self.max_batch or max(total, 1)
        if total <= step:
            out = self.infer_checked(self.spec.check_feed(checked) if one else checked)
            if not ragged or total == 0 or all(_has_row_per_sample(a, total) for a in out.values()):
                return out
            if total == 1:  # one sample: its whole output is its own
                return join_samples([out], [1])
            step = 1  # an output with no row per sample: one sample at a time
        parts = self._run_in_steps(checked, total, step)
        if not ragged:
            return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        sizes = [min(step, total - i) for i in range(0, total, step)]
        if step > 1 and not all(_has_row_per_sample(a, n) for p, n in zip(parts, sizes) for a in p.values()):
            parts, sizes = self._run_in_steps(checked, total, 1), [1] * total  # as above: one sample at a time
        return join_samples(parts, sizes)

    def _run_in_steps(self, feed: Mapping[str, np.ndarray], total: int, step: int) -> list[dict[str, np.ndarray]]:
        return [self.infer_checked(self.spec.check_feed({k: v[i : i + step] for k, v in feed.items()}))
                for i in range(0, total, step)]

    @abstractmethod
    def infer_checked(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run a feed already validated against the spec (benchmarks call this directly)."""

    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _deactivate(self) -> None: ...

    def __enter__(self) -> Self:
        self.activate()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.deactivate()


SHAPE = ":shape"  # suffix of an output's shape per sample, where it depends on the data


def by_sample(outputs: Mapping[str, Any]) -> list[str]:
    """The outputs kept per sample (`join_samples`): those with a `NAME:shape`."""
    return [o[: -len(SHAPE)] for o in outputs if o.endswith(SHAPE)]


def _has_row_per_sample(array: Any, samples: int) -> bool:
    return np.ndim(array) > 0 and len(array) == samples


def join_samples(parts: Sequence[Mapping[str, np.ndarray]], sizes: Sequence[int]) -> dict[str, np.ndarray]:
    """Outputs of consecutive calls (`sizes` samples each) joined along the batch.  An output
    whose calls do not all return one row per sample of one shape (per-image NMS: (1, K, 4) or
    (K, 4) with K depending on the image) must come from calls of one sample each: each sample's
    whole output is kept, zero-padded to the largest in every dimension, `(samples, *largest)`,
    with each sample's own shape under `NAME:shape` (`sample_output` gives it back)."""
    joined: dict[str, np.ndarray] = {}
    for name in parts[0]:
        arrays = [np.asarray(p[name]) for p in parts]
        if all(_has_row_per_sample(a, n) for a, n in zip(arrays, sizes)) and len({a.shape[1:] for a in arrays}) == 1:
            joined[name] = np.concatenate(arrays)
            continue
        if any(n != 1 for n in sizes):
            raise HarnessError(f"output {name!r} has no row per sample (shapes {[a.shape for a in arrays]} for "
                               f"{sizes} samples): run it one sample per call")
        if len({a.ndim for a in arrays}) != 1:
            raise HarnessError(f"output {name!r}: samples' outputs of different ranks {[a.shape for a in arrays]}")
        largest = tuple(np.max([a.shape for a in arrays], axis=0)) if arrays[0].ndim else ()
        padded = np.zeros((len(arrays), *largest), np.result_type(*arrays))
        for i, a in enumerate(arrays):
            padded[sample_index(i, a.shape)] = a
        joined[name] = padded
        joined[name + SHAPE] = np.array([a.shape for a in arrays], np.int64).reshape(len(arrays), -1)
    return joined


def sample_index(i: int, shape: Any) -> tuple[Any, ...]:
    """The index of sample i's own `shape` in a padded (samples, *largest) array."""
    return (i, *(slice(0, int(d)) for d in shape))


def sample_output(outputs: Mapping[str, np.ndarray], name: str, i: int) -> np.ndarray:
    """Sample i's output `name` as a call on that sample alone returned it: cut from its padding
    where the output's shape depends on the data, else its row i (keeping the batch axis)."""
    shapes = outputs.get(name + SHAPE)
    array = np.asarray(outputs[name])
    if shapes is None:
        return array[i : i + 1]
    return array[sample_index(i, shapes[i])]


def per_sample_shapes(outputs: Mapping[str, np.ndarray], name: str) -> list[tuple[int, ...]]:
    """Each sample's shape of output `name`, as `sample_output` returns it."""
    shapes = outputs.get(name + SHAPE)
    array = np.asarray(outputs[name])
    if shapes is None:
        return [(1, *array.shape[1:])] * len(array)
    return [tuple(int(d) for d in row) for row in shapes]
