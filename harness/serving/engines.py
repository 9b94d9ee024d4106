"""What the engine worker builds its runner from: each runner's own recipe (plain data, so
it crosses the process boundary; the runner itself is made in the worker)."""

from __future__ import annotations

import numpy as np

from harness.backends.base import Runner, RunnerRecipe
from harness.spec import ModelSpec


def recipe_for(runner: Runner) -> RunnerRecipe:
    """The recipe that makes, in another process, a runner like `runner` (not activated here)."""
    return runner.recipe()


class NullRunner(Runner):
    """The model's inputs and outputs with no model: zeros of each output's shape (a dimension
    the model leaves open is its profile's opt, else 1). Served (`harness serve --null-engine`),
    it measures what serving costs with the engine taken out."""

    backend = "null"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)

    def recipe_args(self) -> dict[str, object]:
        return {}  # the spec is all there is

    def _activate(self) -> None:
        pass

    def _deactivate(self) -> None:
        pass

    def infer_checked(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = len(next(iter(feed.values())))
        return {t.name: np.zeros(t.feed_shape(batch), t.dtype) for t in self.spec.outputs}
