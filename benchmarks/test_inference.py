"""Latency of the TensorFlow baseline and of every engine x precision on the model under test
(--harness-model, default inception_v3), per batch size (--harness-batch-sizes).

At each batch size, TensorFlow and every engine the run asks for are timed in one round-robin
(`harness.measure.RoundRobin`, run by the first row of that batch size): each round, a turn of
each, so TensorFlow is timed once per round for all engines and drift of a shared machine hits
both sides of every ratio.  An engine stops when its speedup's 95% interval is narrow enough
(--harness-halfwidth) or at the batch size's time cap (--harness-max-seconds), and says which.
Each row's calls are its pytest-benchmark rounds.  Batch 1 is the latency figure (one request
at a time, MLPerf's SingleStream); the largest batch is the throughput figure (Offline).
`extra_info` carries p50/p90/p99 latency (percentiles too few calls support listed as
low-confidence), samples/s, the speedup with its interval, what stopped the row, and the share
of the machine other processes took while it was measured."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from harness.backends.base import Runner
from harness.measure import BUSY_SHARE, ESTIMATOR, PERCENTILES, rounds_needed
from harness.suite import BatchMeasurement
from harness.timing import REFERENCE, Latency, Row


def _count(counter: Any, request: Any, runner: Runner, batch: int, benchmark: Any) -> tuple[float | None, str]:
    """Instructions per call under Valgrind where --harness-count-instructions asks (and why not)."""
    if counter is None:
        return None, ""
    from harness.errors import HarnessError

    try:
        count = counter.count(request, runner)[batch]
    except HarnessError as e:
        reason = getattr(e, "reason", str(e))
        benchmark.extra_info.update(instructions_per_call=None, instructions_unavailable=reason)
        return None, reason
    from harness.counting import METHOD

    benchmark.extra_info.update(instructions_per_call=count.per_call, instructions_calls_counted=len(count.calls),
                                instructions_method=METHOD, instructions_aslr_off=count.aslr_off)
    return count.per_call, ""


def _record(benchmark: Any, runner: Runner, batch: int, result: BatchMeasurement, rows: list[Row],
            largest: int, robin: Any, counter: Any = None, request: Any = None) -> None:
    """The row of `runner` from its batch size's round-robin: pytest-benchmark's rounds, the
    harness's row and `extra_info`."""
    from harness.machine import visible_device
    from harness.thirdparty import record_rounds

    model = runner.spec.name
    benchmark.group = f"{model} batch {batch}"
    m = result.measured.get(runner.name)
    if m is None:
        pytest.fail(f"{runner.name} was not in the batch {batch} round-robin", pytrace=False)
    if m.error is not None:  # raised in the row that ran the round-robin; this row's failure says so
        pytest.fail(f"{runner.name} at batch {batch}: {m.stopped}", pytrace=False)
    record_rounds(benchmark, m.seconds)
    latency = Latency.of(m.seconds)
    speedup = m.speedup if result.measured.get(REFERENCE) is not None else None
    why = "" if speedup is not None else (result.no_reference or "TensorFlow did not run beside it")
    instructions, no_count = _count(counter, request, runner, batch, benchmark)
    rows.append(Row(model, runner.name, batch, latency.p50, benchmark.extra_info, speedup, latency.rounds, why,
                    stopped=m.stopped, others_share=m.others_share, instructions=instructions,
                    no_instructions=no_count))
    scenario = "SingleStream" if batch == 1 else "Offline" if batch == largest else "batch"
    share = m.others_share
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
        low_confidence=latency.low_confidence,  # percentiles with fewer calls than they need
        rounds_needed={f"p{q}": rounds_needed(q) for q in PERCENTILES},
        samples_per_s=batch / latency.p50,
        speedup_vs_tensorflow=None if speedup is None else speedup.point,
        speedup_interval=None if speedup is None or runner.name == REFERENCE else [speedup.low, speedup.high],
        stopped_by=m.stopped,  # "interval", "time cap", "reference", "rounds" (no reference)
        robin_rounds=len(m.rounds),
        turn_calls=m.block,
        target_halfwidth=robin.target_halfwidth,
        max_seconds=robin.max_seconds,
        others_cpu_share=share,  # what other processes took of the machine while this row was measured
        busy=m.busy,
        busy_threshold=BUSY_SHARE,
    )
    if speedup is not None and runner.name != REFERENCE:
        ref = result.measured[REFERENCE]
        benchmark.extra_info.update(
            speedup_confidence=speedup.confidence,
            speedup_estimator=speedup.estimator,
            tensorflow_interleaved_p50_ms=float(np.median(ref.seconds)) * 1e3,
            interleave_block=m.block,
            speedup_method=f"{ESTIMATOR}: each round times a turn of TensorFlow and of every engine still "
                           "measuring; TensorFlow's median turn over the engine's (a turn's figure: the median "
                           "of its calls); interval: percentile bootstrap over whole rounds",
        )
    elif why and runner.name != REFERENCE:
        benchmark.extra_info.update(no_speedup=why)
    gpu = result.gpu_timings.get(runner.name)
    if gpu:
        benchmark.extra_info.update(
            gpu_compute_p50_ms=float(np.median([t.compute_s for t in gpu])) * 1e3,
            gpu_with_copies_p50_ms=float(np.median([t.with_copies_s for t in gpu])) * 1e3,
            gpu_time_note="CUDA events: compute = execute_async_v3 alone, without host<->device copies; "
            "with_copies = host->device copy, execute, device->host copy; p50_ms above is end to end (host clock)",
        )


def _skip_if_disabled(benchmark: Any) -> None:
    if getattr(benchmark, "disabled", False):
        pytest.skip("benchmarks are disabled (--benchmark-disable): nothing is timed")


def test_tensorflow(benchmark: Any, batch: int, tf_runner: Runner, harness_benchmark_rows: list[Row],
                    harness_round_robin: Any, harness_request: Any, harness_calibration: Any,
                    harness_counter: Any, pytestconfig: Any) -> None:
    assert tf_runner.name == REFERENCE
    _skip_if_disabled(benchmark)
    result = harness_round_robin.measure(harness_request, harness_calibration, batch, tf_runner, benchmark)
    _record(benchmark, tf_runner, batch, result, harness_benchmark_rows, max(pytestconfig.getoption("harness_batch_sizes")),
            harness_round_robin, harness_counter, harness_request)


def test_engine(benchmark: Any, batch: int, engine: Any, harness_benchmark_rows: list[Row], pytestconfig: Any,
                harness_round_robin: Any, harness_request: Any, harness_calibration: Any,
                harness_counter: Any, request: pytest.FixtureRequest) -> None:
    _skip_if_disabled(benchmark)
    runner = engine.runner
    if runner.max_batch is not None and batch > runner.max_batch:
        pytest.skip(f"batch {batch} is over {runner.name}'s max batch {runner.max_batch}: one call cannot take it "
                    "(build with a larger --harness-max-batch)")
    try:  # the reference beside every engine; an engine is still timed where TensorFlow can't run
        reference: Runner | str = request.getfixturevalue("tf_runner")
    except pytest.skip.Exception as e:
        reference = f"TensorFlow unavailable: {e.msg}"
    result = harness_round_robin.measure(harness_request, harness_calibration, batch, reference, benchmark)
    _record(benchmark, runner, batch, result, harness_benchmark_rows, max(pytestconfig.getoption("harness_batch_sizes")),
            harness_round_robin, harness_counter, harness_request)
    if engine.calibration is not None:  # int8: what it was calibrated on travels to the JSON and the report
        benchmark.extra_info.update(calibration=engine.calibration.description,
                                    calibration_synthetic=engine.calibration.synthetic)
