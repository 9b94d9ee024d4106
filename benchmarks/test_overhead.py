"""What the harness runner costs: the same engine called through `Runner.infer` (feed
validation included) and through the library's own call, batch 1, for each CPU backend.

Two measurements per backend, printed at the end of the run:
- **direct**: the real engine through the runner and bare, timed in alternating blocks; the
  ratio at the percentile speedups use, with its 95% interval.  On a shared 2-core machine
  that interval is several percent wide, too wide to show a 1% target either way.
- **added**: the runner's own work per call (feed checks, output dict), measured with the
  library call replaced by a replay of its own answer on both paths, so the difference is
  the harness's microseconds and nothing else; divided by the bare call's time on the real
  engine, it is the overhead ratio, with an interval narrow enough to hold against 1.01x."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from benchmarks.conftest import OVERHEAD, Overhead

pytestmark = pytest.mark.harness_suite("overhead")  # --harness-suites overhead

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


@contextmanager
def _replayed(backend: str, runner: Any, feed: dict[str, np.ndarray]) -> Iterator[None]:
    """The runner's library call answers with a recording of its own answer: both paths still
    make the call (a Python method call on a stand-in), neither pays for the model."""
    if backend == "onnxruntime":
        attr, real = "session", runner.session
        answer = real.run(runner.spec.output_names, feed)
        stand_in: Any = type("Replay", (), {"run": lambda self, names, f: answer})()
    elif backend == "openvino":
        attr, real = "_request", runner._request
        answer = real.infer(feed)
        stand_in = type("Replay", (), {"infer": lambda self, f: answer})()
    else:
        attr, real = "_fn", runner._fn
        answer = real(*[runner._tf.constant(feed[t.name]) for t in runner.spec.inputs])
        stand_in = lambda *tensors: answer
    setattr(runner, attr, stand_in)
    try:
        yield
    finally:
        setattr(runner, attr, real)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "tensorflow"])
def test_overhead(benchmark: Any, backend: str, harness_workspace: Any, harness_request: Any) -> None:
    """The runner's calls are pytest-benchmark's rounds; the bare calls are interleaved with
    them in blocks (harness.measure), so the ratio is of two things timed in one stretch."""
    from harness.errors import BackendUnavailable
    from harness.measure import added_cost, time_beside

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
        with _replayed(backend, runner, feed):
            added = added_cost(through_runner, _bare(backend, runner, feed), target_seconds=TARGET_SECONDS)
    finally:
        runner.deactivate()
    ratio = beside.speedup  # bare time / runner time
    direct = (1 / ratio.point, 1 / ratio.high, 1 / ratio.low)
    bare_p50 = float(np.median(beside.reference_seconds))
    by_added = added.share_of(bare_p50)
    OVERHEAD[backend] = Overhead(direct, by_added, added.point, added.low, added.high, bare_p50)
    benchmark.extra_info.update(backend=backend, overhead=direct[0], overhead_interval=list(direct[1:]),
                                overhead_added=by_added[0], overhead_added_interval=list(by_added[1:]),
                                added_us=added.point * 1e6, added_us_interval=[added.low * 1e6, added.high * 1e6],
                                runner_p50_ms=float(np.median(beside.seconds)) * 1e3, bare_p50_ms=bare_p50 * 1e3)
