"""The one runner interface every backend implements.

    with runner:                      # activate(): load the model, allocate
        outputs = runner.infer(feed)  # dict[str, ndarray] -> dict[str, ndarray]

Feeds and outputs are keyed by the spec's public names whatever the backend, so any two
runners' outputs can be compared directly."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import numpy as np

from harness.errors import HarnessError
from harness.spec import ModelSpec


class Runner(ABC):
    backend: str = ""

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
        if not self.is_active:
            raise HarnessError(f"{self.name} runner for {self.spec.name!r} is not active; use it in a `with` block")
        return self.infer_checked(self.spec.check_feed(feed))

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
