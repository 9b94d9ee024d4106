"""What the harness runner costs: the same engine called through `Runner.infer` (feed
validation included) and through the library's own call in a bare loop, batch 1, for each
CPU backend. The ratio of medians per backend is printed at the end of the run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from benchmarks.conftest import OVERHEAD

ROUNDS = 50


def _bare(backend: str, runner: Any, feed: dict[str, np.ndarray]) -> Callable[[], object]:
    """The library's own call on the runner's loaded model, without the harness around it."""
    if backend == "onnxruntime":
        session, names = runner.session, runner.spec.output_names
        return lambda: session.run(names, feed)
    if backend == "openvino":
        request = runner._request
        return lambda: request.infer(feed)
    fn, tf = runner._fn, runner._tf  # tensorflow: the pruned graph function
    inputs = [feed[t.name] for t in runner.spec.inputs]
    return lambda: [o.numpy() for o in fn(*[tf.constant(x) for x in inputs])]


@pytest.mark.parametrize("path", ["bare", "runner"])
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "tensorflow"])
def test_overhead(benchmark: Any, backend: str, path: str, harness_workspace: Any, harness_request: Any) -> None:
    from harness.errors import BackendUnavailable

    try:
        if backend == "tensorflow":
            runner = harness_workspace.tf_runner(harness_request)
        else:
            runner = harness_workspace.engine(harness_request, backend, "fp32").runner
        runner.activate()
    except BackendUnavailable as e:
        pytest.skip(e.reason)
    try:
        feed = runner.spec.random_feed(1, seed=0)
        call = _bare(backend, runner, feed) if path == "bare" else (lambda: runner.infer(feed))
        benchmark.group = f"{runner.spec.name} harness overhead"
        benchmark.pedantic(call, rounds=ROUNDS, iterations=1, warmup_rounds=3)
    finally:
        runner.deactivate()
    OVERHEAD[(backend, path)] = float(np.median(benchmark.stats.stats.data))
    benchmark.extra_info.update(backend=backend, path=path, median_ms=OVERHEAD[(backend, path)] * 1e3)
