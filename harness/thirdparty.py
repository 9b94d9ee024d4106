"""What the harness needs from pytest-benchmark and pytest that is not their public API, in one
place, each assumption tested by name in tests/test_thirdparty.py (a release that breaks one
fails there).  pytest-xdist needs none: a worker is told by its public `config.workerinput`.

- `benchmark_clock`: the timer and gc setting a `benchmark` fixture was made with
  (`--benchmark-timer`, `--benchmark-disable-gc`), so the harness times the reference with the
  same clock as pytest-benchmark times the rows.  Read from the fixture's `_timer` and
  `_disable_gc` attributes.
- `reenable_in_worker`, `worker_json`: pytest-benchmark's session object (`config._benchmarksession`,
  its `disabled`, `json`, `benchmarks` and `get_machine_info()`), which the plugin needs under
  xdist: a worker turns the session back on and hands its rows' JSON to the controller.
- `record_rounds`: a row's times measured by the harness's round-robin (harness.measure), given
  to pytest-benchmark as that row's rounds.  pytest-benchmark times a call between two readings
  of the fixture's `_timer`; `pedantic` runs with a clock that replays the measured durations,
  so its statistics, table, JSON and --benchmark-compare see exactly the measured calls.
- `hand_benchmark_only_to_workers`: under xdist pytest-benchmark refuses `--benchmark-only` and
  warns it is disabled; the plugin clears the option before pytest-benchmark's session reads it
  (its `pytest_configure` is trylast, the plugin's tryfirst; the session reads `benchmark_only`
  when it is made) and silences that warning by its text.
- `round_seconds`: a finished row's rounds, in seconds (`benchmark.stats.stats.data`).
- `terminal_uncaptured`: pytest's capture manager's `global_and_fixture_disabled()` (what the
  `capsys.disabled()` fixture uses), so a plugin can print progress while tests run; pytest has
  no public API for it outside a fixture.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any


def _session(config: Any) -> Any:
    return getattr(config, "_benchmarksession", None)


def reenable_in_worker(config: Any) -> None:
    """pytest-benchmark turns itself off under xdist; an xdist worker timing benchmarks turns it
    back on and writes no JSON of its own (the controller writes one from every worker's)."""
    session = _session(config)
    if session is not None:
        session.disabled = False
        session.json = None


def worker_json(config: Any) -> dict[str, Any] | None:
    """This process's pytest-benchmark JSON (with every round's data), or None without rows."""
    session = _session(config)
    if session is None or not session.benchmarks:
        return None
    info = session.get_machine_info()
    commit = config.hook.pytest_benchmark_generate_commit_info(config=config)
    doc: dict[str, Any] = config.hook.pytest_benchmark_generate_json(
        config=config, benchmarks=session.benchmarks, include_data=True, machine_info=info, commit_info=commit)
    config.hook.pytest_benchmark_update_json(config=config, benchmarks=session.benchmarks, output_json=doc)
    return doc


def benchmark_clock(benchmark: Any) -> tuple[Callable[[], float], bool]:
    """(timer, disable_gc) of a pytest-benchmark fixture; perf_counter and False for anything else."""
    return getattr(benchmark, "_timer", time.perf_counter), bool(getattr(benchmark, "_disable_gc", False))


class _Replay:
    """A clock for pytest-benchmark's runner, which reads it once before and once after each
    round: each pair of readings is `seconds[i]` apart."""

    def __init__(self, seconds: Sequence[float]) -> None:
        self.seconds = list(seconds)
        self.now = 0.0
        self.reads = 0

    def __call__(self) -> float:
        if self.reads % 2:
            self.now += self.seconds[self.reads // 2]
        self.reads += 1
        return self.now


def record_rounds(benchmark: Any, seconds: Sequence[float]) -> None:
    """Make `seconds` the rounds of `benchmark` (one call each)."""
    if not seconds:
        raise ValueError("no rounds to record")
    if getattr(benchmark, "disabled", False):  # --benchmark-disable: pytest-benchmark records nothing
        return
    replay = _Replay(seconds)
    real = benchmark._timer
    benchmark._timer = replay
    try:
        benchmark.pedantic(_nothing, rounds=len(seconds), iterations=1, warmup_rounds=0)
    finally:
        benchmark._timer = real
    stats = getattr(benchmark, "stats", None)
    if stats is not None and isinstance(getattr(stats, "options", None), dict):
        stats.options["timer"] = real  # the JSON names the clock the calls were timed with, not the replay
    if replay.reads != 2 * len(seconds):
        raise RuntimeError(f"pytest-benchmark read its timer {replay.reads} times for {len(seconds)} rounds "
                           "(expected two a round): harness.thirdparty.record_rounds needs updating")


def _nothing() -> None:
    pass


XDIST_WARNING = "Benchmarks are automatically disabled because xdist"  # pytest-benchmark's text


def hand_benchmark_only_to_workers(config: Any, flag: str) -> None:
    """`--benchmark-only` becomes the option `flag` (the workers receive the controller's
    options), cleared for pytest-benchmark, which would otherwise refuse it under xdist; its
    "disabled because xdist" warning, true only of the controller, which times nothing, is
    silenced.  Call from a tryfirst `pytest_configure`."""
    import warnings

    config.option.benchmark_only = False
    setattr(config.option, flag, True)
    warnings.filterwarnings("ignore", message=XDIST_WARNING)


def round_seconds(benchmark: Any) -> list[float]:
    """Every round of a finished pytest-benchmark row, in seconds."""
    return [float(x) for x in benchmark.stats.stats.data]


@contextlib.contextmanager
def terminal_uncaptured(config: Any) -> Iterator[bool]:
    """Output capture off while inside (yields False where it could not be: no capture manager)."""
    capture = config.pluginmanager.get_plugin("capturemanager")
    if capture is None:
        yield False
        return
    with capture.global_and_fixture_disabled():
        yield True


def xdist_worker_index(config: Any) -> int | None:
    """This xdist worker's index (gw3 -> 3) from xdist's public `workerinput`; None outside a worker."""
    worker = getattr(config, "workerinput", {}).get("workerid", "")
    return int(worker[2:]) if isinstance(worker, str) and worker.startswith("gw") and worker[2:].isdigit() else None
