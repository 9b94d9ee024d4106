"""Latency of the TensorFlow baseline and of every engine x precision on the model under test
(--harness-model, default inception_v3), per batch size (--harness-batch-sizes).

Each engine's speedup is against TensorFlow's median measured in this same run, computed once
every row is measured (the plugin fills `speedup_vs_tensorflow` in before the JSON is written). Inputs are made before timing; each round is one call on an
already active runner. Batch 1 is the latency figure (one request at a time, MLPerf's
SingleStream); the largest batch is the throughput figure (Offline). `extra_info` carries
p50/p90/p99 latency, samples/s and the speedup over TensorFlow at the same batch size."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from harness.backends.base import Runner
from harness.timing import REFERENCE, Latency, Row

TARGET_SECONDS = 2.0  # per benchmark, so batch 32 of InceptionV3 stays affordable on 2 cores
MIN_ROUNDS, MAX_ROUNDS = 5, 200


def _measure(benchmark: Any, runner: Runner, batch: int, rows: list[Row], largest: int) -> None:
    if getattr(benchmark, "disabled", False):
        pytest.skip("benchmarks are disabled (--benchmark-disable): nothing is timed")
    feed = runner.spec.check_feed(runner.spec.random_feed(batch, seed=batch))
    start = time.perf_counter()
    runner.infer_checked(feed)  # warm-up, and an estimate of one call
    estimate = time.perf_counter() - start
    rounds = int(np.clip(TARGET_SECONDS / max(estimate, 1e-6), MIN_ROUNDS, MAX_ROUNDS))

    model = runner.spec.name
    benchmark.group = f"{model} batch {batch}"
    gpu: list[Any] = []  # TensorRT runners: CUDA-event times of each call
    if hasattr(runner, "timings"):
        def call() -> None:
            runner.infer_checked(feed)
            gpu.append(runner.timings)

        benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=1)
    else:
        benchmark.pedantic(runner.infer_checked, args=(feed,), rounds=rounds, iterations=1, warmup_rounds=1)

    latency = Latency.of(benchmark.stats.stats.data)
    row = Row(model, runner.name, batch, latency.p50, benchmark.extra_info)
    rows.append(row)
    scenario = "SingleStream" if batch == 1 else "Offline" if batch == largest else "batch"
    benchmark.extra_info.update(
        model=model,
        backend=runner.backend,
        engine=runner.name,  # backend-precision: what "engine" means everywhere
        precision=runner.precision,
        batch=batch,
        scenario=scenario,
        p50_ms=latency.p50 * 1e3,
        p90_ms=latency.p90 * 1e3,
        p99_ms=latency.p99 * 1e3,
        samples_per_s=row.samples_per_s,
        speedup_vs_tensorflow=None,  # filled in at the end of the run
    )
    if gpu:
        benchmark.extra_info.update(
            gpu_compute_p50_ms=float(np.median([t.compute_s for t in gpu])) * 1e3,
            gpu_with_copies_p50_ms=float(np.median([t.with_copies_s for t in gpu])) * 1e3,
            gpu_time_note="CUDA events: compute = execute_async_v3 alone, without host<->device copies; "
            "with_copies = host->device copy, execute, device->host copy; p50_ms above is end to end (host clock)",
        )


def test_tensorflow(benchmark: Any, batch: int, tf_runner: Runner, harness_benchmark_rows: list[Row],
                    pytestconfig: Any) -> None:
    assert tf_runner.name == REFERENCE
    _measure(benchmark, tf_runner, batch, harness_benchmark_rows, max(pytestconfig.getoption("harness_batch_sizes")))


def test_engine(benchmark: Any, batch: int, engine: Any, harness_benchmark_rows: list[Row], pytestconfig: Any) -> None:
    _measure(benchmark, engine.runner, batch, harness_benchmark_rows, max(pytestconfig.getoption("harness_batch_sizes")))
    if engine.calibration is not None:  # int8: what it was calibrated on travels to the JSON and the report
        benchmark.extra_info.update(calibration=engine.calibration.description,
                                    calibration_synthetic=engine.calibration.synthetic)
