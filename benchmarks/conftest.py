"""Benchmark suite wiring: one benchmark per engine x batch size, TensorFlow first so each
engine's speedup over it is measured in the same run, and a speedup table at the end."""

from __future__ import annotations

from typing import Any

import pytest

from harness.workspace import BACKENDS

# Filled by the benchmarks: (model, batch, engine) -> median seconds per batch.
MEDIANS: dict[tuple[str, int, str], float] = {}
# Filled by the overhead benchmark: "bare" | "runner" -> median seconds per call.
OVERHEAD: dict[str, float] = {}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "batch" in metafunc.fixturenames:
        metafunc.parametrize("batch", metafunc.config.getoption("harness_batch_sizes"), ids=lambda b: f"batch{b}")
    if "engine" in metafunc.fixturenames:
        metafunc.parametrize("engine", BACKENDS)  # tensorflow first: the baseline


# The plugin's session-scoped, already active runner of each engine (loading is not what we
# time; a missing backend is a skip with its reason).
RUNNER_FIXTURES = {"tensorflow": "tf_runner", "onnxruntime": "ort_runner"}


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    from harness.machine import machine_info as harness_machine_info

    machine_info["harness"] = harness_machine_info()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    tw = terminalreporter
    if OVERHEAD.keys() >= {"bare", "runner"}:
        tw.section("harness: runner overhead")
        tw.line(f"median through the harness runner / bare session.run: {OVERHEAD['runner'] / OVERHEAD['bare']:.3f} "
                f"({OVERHEAD['runner'] * 1e3:.3f} ms vs {OVERHEAD['bare'] * 1e3:.3f} ms)")
    if not MEDIANS:
        return
    tw.section("harness: median latency per batch and speedup over TensorFlow (same run)")
    tw.line(f"{'model':14s} {'batch':>5s} {'engine':22s} {'median ms':>10s} {'samples/s':>10s} {'speedup':>8s}")
    for (model, batch, engine), median in sorted(MEDIANS.items()):
        base = MEDIANS.get((model, batch, "tensorflow-fp32"))
        speedup = f"{base / median:7.2f}x" if base else "       -"
        tw.line(f"{model:14s} {batch:5d} {engine:22s} {median * 1e3:10.2f} {batch / median:10.1f} {speedup:>8s}")
