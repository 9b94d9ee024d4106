"""The benchmark suite's measurements: one round-robin per model and batch size over TensorFlow
and every engine the run's rows ask for (harness.measure.RoundRobin), measured once, when the
first row of that batch size runs, and handed to each row (`RoundRobins.measure`).

Which engines join is what pytest collected (after -k and deselection): a row that was not
asked for is not timed.  An engine that cannot be built or run here is left out; its own row
says why (the `engine` fixture's skip or failure)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError
from harness.measure import MAX_SECONDS, TARGET_HALFWIDTH, Measured, RoundRobin
from harness.timing import REFERENCE

# Every key a benchmark row's `extra_info` can carry (benchmarks/test_inference.py writes them; a
# test checks that each one written is here, and docs/reference.md is generated from this).
EXTRA_INFO = {
    "model": "the model's name",
    "device": "where it ran: a GPU's index, name, driver and compute capability, or the CPU",
    "backend": "tensorflow, onnxruntime, openvino, tensorrt or tensorrt_rtx",
    "engine": "backend-precision, e.g. onnxruntime-int8",
    "precision": "fp32, fp16, int8, bf16 or a -mixed variant",
    "batch": "samples per call",
    "scenario": "SingleStream (batch 1), Offline (the largest batch) or batch",
    "p50_ms": "median latency of one call (one batch), ms",
    "p90_ms": "90th percentile latency, ms",
    "p99_ms": "99th percentile latency, ms",
    "rounds": "calls timed",
    "low_confidence": "percentiles measured on fewer calls than they need",
    "rounds_needed": "calls each percentile needs (10 beyond it)",
    "samples_per_s": "batch / p50",
    "speedup_vs_tensorflow": "TensorFlow's time over the engine's (the estimator below); 1.0 for TensorFlow",
    "speedup_interval": "the speedup's 95% interval [low, high]",
    "speedup_confidence": "0.95",
    "speedup_estimator": "how the speedup was estimated (the baseline records it too)",
    "speedup_method": "the estimator in words",
    "tensorflow_interleaved_p50_ms": "TensorFlow's median call in the same round-robin, ms",
    "interleave_block": "calls per turn of this engine",
    "stopped_by": "interval (within --harness-halfwidth), time cap (--harness-max-seconds), reference, or rounds",
    "robin_rounds": "rounds of the round-robin this row took part in",
    "turn_calls": "timed calls per turn",
    "target_halfwidth": "--harness-halfwidth of the run",
    "max_seconds": "--harness-max-seconds of the run",
    "others_cpu_share": "share of the machine other processes took while the row was measured (/proc/stat)",
    "busy": "others_cpu_share over busy_threshold: the figures may be wrong either way",
    "busy_threshold": "0.10",
    "no_speedup": "why an engine row has no speedup (TensorFlow could not run beside it)",
    "instructions_per_call": "instructions per call counted under Valgrind (--harness-count-instructions)",
    "instructions_calls_counted": "calls counted one by one (after uncounted warm-up calls); the figure is the mean of the middle ones",
    "instructions_method": "how they were counted",
    "instructions_aslr_off": "the counting process ran without address randomization (null: not known)",
    "instructions_unavailable": "why this row could not be counted",
    "calibration": "int8: what the engine was calibrated on",
    "calibration_synthetic": "int8: calibrated on synthetic data (agreement is then no evidence of accuracy)",
    "gpu_compute_p50_ms": "TensorRT: median CUDA-event time of the engine alone, ms",
    "gpu_with_copies_p50_ms": "TensorRT: median CUDA-event time with host-device copies, ms",
    "gpu_time_note": "what the two GPU times cover",
    "timed_between": "under xdist: when the row held the host's timing lock (epoch seconds)",
    "xdist_worker": "under xdist: the worker that ran the row",
}


@dataclass(frozen=True)
class BatchMeasurement:
    """Every participant's measurement at one batch size, and why there is no reference if none."""

    batch: int
    measured: Mapping[str, Measured]
    no_reference: str = ""  # why TensorFlow did not run beside the engines
    gpu_timings: Mapping[str, list[Any]] = field(default_factory=dict)  # TensorRT runners: CUDA-event times per call


@dataclass
class RoundRobins:
    """`build(request, backend, precision, calibration)` -> an active engine (the plugin's cache,
    shared with the `engine` fixture; raises HarnessError when it cannot); `combos(request, batch)`
    -> the (backend, precision) rows collected at that batch."""

    build: Callable[[Any, str, str, Any], Any]
    combos: Callable[[Any, int], list[tuple[str, str]]]
    target_halfwidth: float = TARGET_HALFWIDTH
    max_seconds: float = MAX_SECONDS
    progress: Callable[[str], None] | None = None
    _done: dict[tuple[Any, Any, int], BatchMeasurement] = field(default_factory=dict)

    def measure(self, request: Any, calibration: Any, batch: int, reference: Any, benchmark: Any) -> BatchMeasurement:
        """The round-robin at `batch` (measured on the first call, then remembered); `reference`:
        the active TensorFlow runner, or why there is none (a string)."""
        key = (request, calibration, batch)
        if key not in self._done:
            self._done[key] = self._run(request, calibration, batch, reference, benchmark)
        return self._done[key]

    def _run(self, request: Any, calibration: Any, batch: int, reference: Any, benchmark: Any) -> BatchMeasurement:
        from harness.thirdparty import benchmark_clock

        runners = {}
        for backend, precision in self.combos(request, batch):
            try:
                built = self.build(request, backend, precision, calibration)
            except Exception:  # noqa: BLE001, S112 - its own row (the engine fixture) reports why
                continue
            if built.runner.max_batch is not None and batch > built.runner.max_batch:
                continue  # its row skips, naming the plan's max batch
            runners[built.runner.name] = built.runner
        gpu: dict[str, list[Any]] = {}
        calls = {name: self._call(runner, batch, gpu) for name, runner in runners.items()}
        timer, disable_gc = benchmark_clock(benchmark)
        model = (reference if not isinstance(reference, str) else next(iter(runners.values()), None))
        label = f"{getattr(getattr(model, 'spec', None), 'name', 'model')} batch {batch}"
        def run(ref: Any) -> BatchMeasurement:
            robin = RoundRobin(calls, None if isinstance(ref, str) else self._call(ref, batch, gpu),
                               self.target_halfwidth, self.max_seconds, timer, disable_gc, self.progress,
                               label=label, reference_name=REFERENCE)
            return BatchMeasurement(batch, robin.run(), ref if isinstance(ref, str) else "", gpu)

        try:
            return run(reference)
        except Exception as e:
            if isinstance(reference, str):
                raise
            return run(f"TensorFlow failed: {type(e).__name__}: {e}")

    @staticmethod
    def _call(runner: Any, batch: int, gpu: dict[str, list[Any]]) -> Callable[[], object]:
        feed = runner.spec.check_feed(runner.spec.random_feed(batch, seed=batch))
        infer = runner.infer_checked
        if not hasattr(runner, "timings"):
            return lambda: infer(feed)
        times = gpu.setdefault(runner.name, [])

        def call() -> None:  # a TensorRT runner: its CUDA-event times of the call, too
            infer(feed)
            times.append(runner.timings)

        return call


@dataclass
class Counter:
    """Instructions per call of each engine of the run (harness.counting), every batch size of
    the run counted in one Valgrind process per engine, when its first row asks."""

    root: Any  # the artifact directory: the client-request library is compiled there once
    batches: list[int]
    progress: Callable[[str], None] | None = None
    _done: dict[tuple[Any, str], Any] = field(default_factory=dict)

    def count(self, request: Any, runner: Any) -> Mapping[int, Any]:
        """{batch: harness.counting.Count}; raises BackendUnavailable (with why) where it cannot."""
        from harness.counting import count_instructions
        from harness.errors import BackendUnavailable

        key = (request, runner.name)
        if key not in self._done:
            try:
                if runner.backend in ("tensorrt", "tensorrt_rtx"):
                    raise BackendUnavailable("valgrind", "a TensorRT engine runs on the GPU; Valgrind counts CPU "
                                             "instructions only")
                batches = [b for b in self.batches if runner.max_batch is None or b <= runner.max_batch]
                self._done[key] = count_instructions(runner.recipe(), batches, self.root, progress=self.progress,
                                                     name=runner.name)
            except Exception as e:  # noqa: BLE001 - remembered: the engine's other rows say the same, not again
                self._done[key] = e if isinstance(e, HarnessError) else HarnessError(f"{runner.name}: counting failed: "
                                                                                      f"{type(e).__name__}: {e}")
        got = self._done[key]
        if isinstance(got, BaseException):
            raise got
        return got  # type: ignore[no-any-return]
