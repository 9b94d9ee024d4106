"""What the engine worker builds its runner from: each runner's own recipe (plain data, so
it crosses the process boundary; the runner itself is made in the worker)."""

from __future__ import annotations

from harness.backends.base import Runner, RunnerRecipe


def recipe_for(runner: Runner) -> RunnerRecipe:
    """The recipe that makes, in another process, a runner like `runner` (not activated here)."""
    return runner.recipe()
