"""Benchmark suite wiring: batch sizes from --harness-batch-sizes. The `engine` fixture
(every backend x precision), the speedup table, the machine information and the gate
come from the harness plugin."""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest

from harness.pytest_plugin import SECTIONS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "batch" in metafunc.fixturenames:
        metafunc.parametrize("batch", metafunc.config.getoption("harness_batch_sizes"), ids=lambda b: f"batch{b}")



class Overhead(NamedTuple):
    """The overhead benchmark's two measurements of one backend (see benchmarks/test_overhead.py)."""

    direct: tuple[float, float, float]  # runner / bare, timed interleaved: point, low, high
    by_added: tuple[float, float, float]  # 1 + added / bare
    added: float  # seconds the runner adds per call, and its interval
    added_low: float
    added_high: float
    bare: float  # the bare call's median seconds on the real engine


# Filled by the overhead benchmark, per backend.
OVERHEAD: dict[str, Overhead] = {}
# Filled by the model-zoo benchmark: (family, engine, speedup over TensorFlow).
ZOO: list[tuple[str, str, Any]] = []
# Filled by the serving benchmark: one table per run of the load sweep.
SERVING: list[str] = []
# xdist, in the controller: the sections the workers printed nothing of.
WORKER_SECTIONS: list[tuple[str, list[str]]] = []


OVERHEAD_TITLE = "harness: runner overhead"


def _sections() -> list[tuple[str, list[str]]]:
    """This process's end-of-run sections: (title, lines)."""
    sections = []
    if SERVING:
        sections.append(("harness: serving load test (closed loop on loopback)",
                         [line for table in SERVING for line in table.splitlines()]))
    if ZOO:
        sections.append((("harness: model zoo (ONNX Runtime over TensorFlow, batch 8 unless noted, 95% interval; "
                          "detectors' NMS inside each side's graph, timed)"),
                         [f"{family:<18} {engine:<18} {speedup}" for family, engine, speedup in ZOO]))
    if OVERHEAD:
        lines = [f"{backend}: {o.by_added[0]:.4f}x [{o.by_added[1]:.4f}, {o.by_added[2]:.4f}] "
                  f"(adds {o.added * 1e6:.1f} us [{o.added_low * 1e6:.1f}, {o.added_high * 1e6:.1f}] "
                  f"to {o.bare * 1e3:.4g} ms); direct {o.direct[0]:.3f}x [{o.direct[1]:.3f}, {o.direct[2]:.3f}]"
                  for backend, o in sorted(OVERHEAD.items())]
        sections.append((OVERHEAD_TITLE, lines))
    return sections


def pytest_sessionfinish(session: pytest.Session) -> None:
    if hasattr(session.config, "workeroutput"):  # an xdist worker: the controller prints them
        session.config.workeroutput["harness_sections"] = _sections()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    WORKER_SECTIONS.extend((title, list(lines)) for title, lines in
                           (getattr(node, "workeroutput", {}) or {}).get("harness_sections", []))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    merged: dict[str, list[str]] = {}
    for title, lines in [*_sections(), *WORKER_SECTIONS]:
        merged.setdefault(title, []).extend(lines)
    terminalreporter.config.stash[SECTIONS] = list(merged.items())  # the report has them too
    for title, lines in merged.items():
        terminalreporter.section(title)
        if title == OVERHEAD_TITLE:
            terminalreporter.line("harness runner over a bare loop of the library's own call, batch 1: the runner's "
                                  "own work per call (library call replayed on both paths) over the bare call's "
                                  "time; and the two timed directly, interleaved (95% intervals)")
        for line in lines:
            terminalreporter.line(line)
