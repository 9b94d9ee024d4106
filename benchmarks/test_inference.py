"""Latency of the TensorFlow baseline and of every engine x precision on the model under test
(--harness-model, default inception_v3), per batch size (--harness-batch-sizes).

Each engine's rounds alternate in blocks with rounds of TensorFlow on the same inputs, and
its speedup (TensorFlow's 10th-percentile time over the engine's, the median's on rows with
too few rounds for a 10th percentile; with a 95% interval) comes from those
interleaved rounds (`harness.measure`), so drift of a shared machine hits both sides of the
ratio.  TensorFlow's own row is timed alone, for its latency.  Round counts come from a
warmed-up estimate (the first call, which traces and allocates, is discarded), at least 20.
Batch 1 is the latency figure (one request at a time, MLPerf's SingleStream); the largest
batch is the throughput figure (Offline). `extra_info` carries p50/p90/p99 latency (with the
percentiles too few rounds support listed as low-confidence), samples/s and the speedup."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from harness.backends.base import Runner
from harness.measure import PERCENTILES, SPEEDUP_QUANTILE, RoundPlan, Speedup, rounds_needed, time_beside, warm_estimate
from harness.timing import REFERENCE, Latency, Row

TARGET_SECONDS = 2.0  # per row alone; an interleaved row gets twice this (half of it is TensorFlow)


def _measure(benchmark: Any, runner: Runner, batch: int, rows: list[Row], largest: int,
             reference: Runner | str | None = None) -> None:
    """Time `runner`; `reference`: the TensorFlow runner to interleave with, or why there is none."""
    if getattr(benchmark, "disabled", False):
        pytest.skip("benchmarks are disabled (--benchmark-disable): nothing is timed")
    if runner.max_batch is not None and batch > runner.max_batch:
        pytest.skip(f"batch {batch} is over {runner.name}'s max batch {runner.max_batch}: one call cannot take it "
                    "(build with a larger --harness-max-batch)")
    feed = runner.spec.check_feed(runner.spec.random_feed(batch, seed=batch))

    def plain() -> None:
        runner.infer_checked(feed)

    model = runner.spec.name
    benchmark.group = f"{model} batch {batch}"
    gpu: list[Any] = []  # TensorRT runners: CUDA-event times of each call
    if hasattr(runner, "timings"):
        def call() -> None:
            plain()
            gpu.append(runner.timings)
    else:
        call = plain
    beside = None
    if isinstance(reference, Runner):
        ref = reference

        def reference_call() -> None:
            ref.infer_checked(feed)

        beside = time_beside(benchmark, call, reference_call, 2 * TARGET_SECONDS, plain=plain, rewarm=True)
        seconds, plan = beside.seconds, beside.plan
    else:
        plan = RoundPlan.of(warm_estimate(plain), TARGET_SECONDS)
        benchmark.pedantic(call, rounds=plan.rounds, iterations=1, warmup_rounds=0)
        seconds = benchmark.stats.stats.data

    latency = Latency.of(seconds)
    speedup = None
    if beside is not None:
        speedup = beside.speedup
    elif runner.name == REFERENCE:
        speedup = Speedup.exact(1.0)
    why = "" if speedup is not None else str(reference or "TensorFlow did not run beside it")
    rows.append(Row(model, runner.name, batch, latency.p50, benchmark.extra_info, speedup, latency.rounds, why))
    scenario = "SingleStream" if batch == 1 else "Offline" if batch == largest else "batch"
    from harness.machine import visible_device

    benchmark.extra_info.update(
        model=model,
        device=visible_device(),  # where it ran: a GPU's index, name, driver, compute capability; or the CPU
        backend=runner.backend,
        engine=runner.name,  # backend-precision: what "engine" means everywhere
        precision=runner.precision,
        batch=batch,
        scenario=scenario,
        p50_ms=latency.p50 * 1e3,
        p90_ms=latency.p90 * 1e3,
        p99_ms=latency.p99 * 1e3,
        rounds=latency.rounds,
        low_confidence=latency.low_confidence,  # percentiles with fewer rounds than they need
        rounds_needed={f"p{q}": rounds_needed(q) for q in PERCENTILES},
        samples_per_s=batch / latency.p50,
        speedup_vs_tensorflow=None if speedup is None else speedup.point,
        speedup_interval=None if speedup is None or beside is None else [speedup.low, speedup.high],
    )
    if beside is not None:
        benchmark.extra_info.update(
            speedup_confidence=beside.speedup.confidence,
            tensorflow_interleaved_p50_ms=float(np.median(beside.reference_seconds)) * 1e3,
            interleave_block=plan.block,
            speedup_percentile=beside.speedup.percentile,
            speedup_method=f"TensorFlow's time at the percentile above over the engine's ({SPEEDUP_QUANTILE}th where "
                           "there are 100 rounds, up to the median at 20), timed in alternating blocks of "
                           f"{plan.block} round(s); interval: percentile bootstrap over whole blocks",
        )
    elif why:
        benchmark.extra_info.update(no_speedup=why)
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


def test_engine(benchmark: Any, batch: int, engine: Any, harness_benchmark_rows: list[Row], pytestconfig: Any,
                request: pytest.FixtureRequest) -> None:
    try:  # the reference beside every engine; an engine is still timed where TensorFlow can't run
        reference: Runner | str = request.getfixturevalue("tf_runner")
    except pytest.skip.Exception as e:
        reference = f"TensorFlow unavailable: {e.msg}"
    _measure(benchmark, engine.runner, batch, harness_benchmark_rows,
             max(pytestconfig.getoption("harness_batch_sizes")), reference)
    if engine.calibration is not None:  # int8: what it was calibrated on travels to the JSON and the report
        benchmark.extra_info.update(calibration=engine.calibration.description,
                                    calibration_synthetic=engine.calibration.synthetic)
