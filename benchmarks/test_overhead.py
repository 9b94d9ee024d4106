"""What the harness runner costs: the same engine called through `Runner.infer` (feed
validation included) and through the library's own call, batch 1, for each CPU backend,
timed in alternating blocks. The ratio (runner over bare, at the percentile speedups use, with
its 95% interval) per backend is printed at the end of the run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from benchmarks.conftest import OVERHEAD

TARGET_SECONDS = 2.0


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


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "tensorflow"])
def test_overhead(benchmark: Any, backend: str, harness_workspace: Any, harness_request: Any) -> None:
    """The runner's calls are pytest-benchmark's rounds; the bare calls are interleaved with
    them in blocks (harness.measure), so the ratio is of two things timed in one stretch."""
    from harness.errors import BackendUnavailable
    from harness.measure import time_beside

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

        def through_runner() -> None:
            runner.infer(feed)

        benchmark.group = f"{runner.spec.name} harness overhead"
        beside = time_beside(benchmark, through_runner, _bare(backend, runner, feed), 2 * TARGET_SECONDS)
    finally:
        runner.deactivate()
    ratio = beside.speedup  # bare time / runner time
    overhead = (1 / ratio.point, 1 / ratio.high, 1 / ratio.low)
    OVERHEAD[backend] = overhead
    benchmark.extra_info.update(backend=backend, overhead=overhead[0], overhead_interval=list(overhead[1:]),
                                runner_p50_ms=float(np.median(beside.seconds)) * 1e3,
                                bare_p50_ms=float(np.median(beside.reference_seconds)) * 1e3)
