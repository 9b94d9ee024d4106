"""Benchmark suite wiring: batch sizes from --harness-batch-sizes. The `engine` fixture
(every backend x precision), the speedup table, the machine information and the gate
come from the harness plugin."""

from __future__ import annotations

from typing import Any

import pytest


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "batch" in metafunc.fixturenames:
        metafunc.parametrize("batch", metafunc.config.getoption("harness_batch_sizes"), ids=lambda b: f"batch{b}")

# Filled by the overhead benchmark: backend -> (runner time / bare time, interval low, high).
OVERHEAD: dict[str, tuple[float, float, float]] = {}
# Filled by the serving benchmark: one table per run of the load sweep.
SERVING: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SERVING:
        terminalreporter.section("harness: serving load test (closed loop on loopback)")
        for table in SERVING:
            for line in table.splitlines():
                terminalreporter.line(line)
    if OVERHEAD:
        terminalreporter.section("harness: runner overhead")
        for backend, (ratio, low, high) in sorted(OVERHEAD.items()):
            terminalreporter.line(f"{backend}: harness runner / bare loop of the library's own call: "
                                  f"{ratio:.3f}x [{low:.3f}, {high:.3f}] (timed interleaved, batch 1)")
