"""Recipes the engine worker builds its runner from: plain data (paths, the spec as a dict),
so they cross the process boundary; the runner itself is made in the worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.backends.base import Runner
from harness.serving.worker import RunnerRecipe
from harness.spec import ModelSpec


def onnxruntime_runner(path: str, spec: dict[str, Any], precision: str, providers: list[str]) -> Runner:
    from harness.backends.onnxrt import OrtRunner

    return OrtRunner(Path(path), ModelSpec.from_dict(spec), precision, providers)


def tensorflow_runner(path: str, spec: dict[str, Any]) -> Runner:
    from harness.backends.tf import TFRunner

    return TFRunner(Path(path), ModelSpec.from_dict(spec))


def tensorrt_runner(plan: str, spec: dict[str, Any], precision: str, library: str, max_batch: int,
                    runtime_cache: str | None, cuda_graph: bool) -> Runner:
    from harness.backends.trt.runner import TrtRunner

    return TrtRunner(Path(plan), ModelSpec.from_dict(spec), precision, library, max_batch,
                     Path(runtime_cache) if runtime_cache else None, cuda_graph)


def recipe_for(runner: Runner) -> RunnerRecipe:
    """The recipe that makes, in another process, a runner like `runner` (not activated here)."""
    from harness.backends.onnxrt import OrtRunner
    from harness.backends.tf import TFRunner
    from harness.backends.trt.runner import TrtRunner

    spec = runner.spec.to_dict()
    if isinstance(runner, OrtRunner):
        return RunnerRecipe(f"{__name__}:onnxruntime_runner", {
            "path": str(runner.onnx_path), "spec": spec, "precision": runner.precision,
            "providers": list(runner.providers)})
    if isinstance(runner, TrtRunner):
        return RunnerRecipe(f"{__name__}:tensorrt_runner", {
            "plan": str(runner.plan), "spec": spec, "precision": runner.precision, "library": runner.backend,
            "max_batch": runner.max_batch, "runtime_cache": str(runner.runtime_cache_path or "") or None,
            "cuda_graph": runner.cuda_graph})
    if isinstance(runner, TFRunner):
        return RunnerRecipe(f"{__name__}:tensorflow_runner", {"path": str(runner.graph_path), "spec": spec})
    raise TypeError(f"no recipe for {type(runner).__name__}")
