"""Runners the serving tests start in the engine worker (imported there by name)."""

from __future__ import annotations

import time

import numpy as np

from harness.backends.base import Runner
from harness.spec import ModelSpec, TensorSpec

SPEC = ModelSpec("slow", (TensorSpec("x", "float32", (None, 4)),), (TensorSpec("y", "float32", (None, 4)),))


class SlowDouble(Runner):
    """y = 2x after `delay` seconds: long enough for requests to be in flight at a stop."""

    backend = "test"

    def __init__(self, delay: float) -> None:
        super().__init__(SPEC)
        self.delay = delay

    def _activate(self) -> None:
        pass

    def _deactivate(self) -> None:
        pass

    def infer_checked(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(self.delay)
        return {"y": feed["x"] * np.float32(2)}


def slow_double(delay: float = 0.3) -> Runner:
    return SlowDouble(delay)
