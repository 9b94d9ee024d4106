"""What the harness runner costs: the same ONNX Runtime session called through
`OrtRunner.infer` (feed validation included) and through a bare `session.run` loop, batch 1.
The ratio of medians is printed at the end of the run."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from benchmarks.conftest import OVERHEAD

ROUNDS = 50


@pytest.mark.parametrize("path", ["bare", "runner"])
def test_overhead(benchmark: Any, path: str, ort_runner: Any) -> None:
    ort = ort_runner
    feed = ort.spec.random_feed(1, seed=0)
    session, names = ort.session, ort.spec.output_names
    call = (lambda: session.run(names, feed)) if path == "bare" else (lambda: ort.infer(feed))
    benchmark.group = f"{ort.spec.name} harness overhead"
    benchmark.pedantic(call, rounds=ROUNDS, iterations=1, warmup_rounds=3)
    OVERHEAD[path] = float(np.median(benchmark.stats.stats.data))
    benchmark.extra_info.update(path=path, median_ms=OVERHEAD[path] * 1e3)
