"""The one runner interface every backend implements.

    with runner:                      # activate(): load the model, allocate
        outputs = runner.infer(feed)  # dict[str, ndarray] -> dict[str, ndarray]

Feeds and outputs are keyed by the spec's public names whatever the backend, so any two
runners' outputs can be compared directly."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import numpy as np

from harness.errors import HarnessError
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

    def infer_batched(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """`infer` over a feed of any size, in chunks of at most `max_batch` samples (a golden
        of 360 digits through a TensorRT plan built for 32), outputs joined in order."""
        self._require_active()
        checked = self.spec.check_feed(feed)
        total = len(next(iter(checked.values()))) if checked else 0
        if self.max_batch is None or total <= self.max_batch:
            return self.infer_checked(checked)
        parts = [self.infer_checked({k: v[i : i + self.max_batch] for k, v in checked.items()})
                 for i in range(0, total, self.max_batch)]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

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
