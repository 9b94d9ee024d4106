"""Latency of the TensorFlow baseline and each engine on the model under test
(--harness-model, default inception_v3), per batch size (--harness-batch-sizes).

Inputs are made before timing; each round is one `infer` call on an already active runner.
`extra_info` carries p50/p90/p99 latency, samples/s and the speedup over TensorFlow at the
same batch size, measured in this run."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from benchmarks.conftest import MEDIANS, RUNNER_FIXTURES

TARGET_SECONDS = 2.0  # per benchmark, so batch 32 of InceptionV3 stays affordable on 2 cores
MIN_ROUNDS, MAX_ROUNDS = 5, 200


def test_latency(benchmark: Any, engine: str, batch: int, request: pytest.FixtureRequest) -> None:
    runner = request.getfixturevalue(RUNNER_FIXTURES[engine])
    feed = runner.spec.check_feed(runner.spec.random_feed(batch, seed=batch))
    start = time.perf_counter()
    runner.infer_checked(feed)  # warm-up, and an estimate of one call
    estimate = time.perf_counter() - start
    rounds = int(np.clip(TARGET_SECONDS / max(estimate, 1e-6), MIN_ROUNDS, MAX_ROUNDS))

    model = runner.spec.name
    benchmark.group = f"{model} batch {batch}"
    benchmark.pedantic(runner.infer_checked, args=(feed,), rounds=rounds, iterations=1, warmup_rounds=1)

    times = np.asarray(benchmark.stats.stats.data)
    median = float(np.median(times))
    MEDIANS[(model, batch, runner.name)] = median
    baseline = MEDIANS.get((model, batch, "tensorflow-fp32"))
    benchmark.extra_info.update(
        model=model,
        engine=runner.backend,
        precision=runner.precision,
        batch=batch,
        p50_ms=median * 1e3,
        p90_ms=float(np.percentile(times, 90)) * 1e3,
        p99_ms=float(np.percentile(times, 99)) * 1e3,
        samples_per_s=batch / median,
        speedup_vs_tensorflow=(baseline / median) if baseline else None,
    )
