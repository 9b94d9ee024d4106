"""Benchmark suite wiring: batch sizes from --harness-batch-sizes. The `engine` fixture
(every backend x precision), the speedup table, the machine information and the gate
come from the harness plugin."""

from __future__ import annotations

from typing import Any

import pytest


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "batch" in metafunc.fixturenames:
        metafunc.parametrize("batch", metafunc.config.getoption("harness_batch_sizes"), ids=lambda b: f"batch{b}")

# Filled by the overhead benchmark: (backend, "bare" | "runner") -> median seconds per call.
OVERHEAD: dict[tuple[str, str], float] = {}
# Filled by the serving benchmark: one table per run of the load sweep.
SERVING: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SERVING:
        terminalreporter.section("harness: serving load test (closed loop on loopback)")
        for table in SERVING:
            for line in table.splitlines():
                terminalreporter.line(line)
    backends = sorted({b for b, _ in OVERHEAD if (b, "bare") in OVERHEAD and (b, "runner") in OVERHEAD})
    if backends:
        terminalreporter.section("harness: runner overhead")
        for backend in backends:
            bare, runner = OVERHEAD[(backend, "bare")], OVERHEAD[(backend, "runner")]
            terminalreporter.line(
                f"{backend}: median through the harness runner / bare loop of the library's own call: "
                f"{runner / bare:.3f} ({runner * 1e3:.3f} ms vs {bare * 1e3:.3f} ms)"
            )
