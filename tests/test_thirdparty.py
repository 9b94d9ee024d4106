"""Each assumption harness.thirdparty makes about pytest-benchmark's internals, tested by name:
a pytest-benchmark release that breaks one fails here, saying which."""

from __future__ import annotations

import time
from typing import Any

import pytest

from harness.thirdparty import _Replay, benchmark_clock, record_rounds


def _enabled(benchmark: Any) -> None:
    if getattr(benchmark, "disabled", False):
        pytest.skip("pytest-benchmark is disabled in this run (--benchmark-disable): its fixture records nothing")


def test_the_benchmark_fixture_keeps_its_timer_and_gc_setting(benchmark: Any, pytestconfig: pytest.Config) -> None:
    timer, disable_gc = benchmark_clock(benchmark)
    # The fixture was made with --benchmark-timer (time.perf_counter unless given) and --benchmark-disable-gc.
    assert f"{timer.__module__}.{timer.__name__}" == str(pytestconfig.getoption("benchmark_timer"))
    assert disable_gc is bool(pytestconfig.getoption("benchmark_disable_gc"))
    assert not hasattr(object(), "_timer") and benchmark_clock(object()) == (time.perf_counter, False)


def test_recorded_rounds_are_the_rounds_pytest_benchmark_reports(benchmark: Any) -> None:
    _enabled(benchmark)
    seconds = [0.004, 0.001, 0.003, 0.002]
    record_rounds(benchmark, seconds)
    stats = benchmark.stats.stats  # what the table and the JSON are made of
    assert list(stats.data) == pytest.approx(seconds) and stats.rounds == 4
    assert stats.median == pytest.approx(0.0025) and stats.min == pytest.approx(0.001)
    assert not isinstance(benchmark._timer, _Replay)  # the fixture's own clock is back


def test_recording_nothing_is_refused(benchmark: Any) -> None:
    with pytest.raises(ValueError, match="no rounds"):
        record_rounds(benchmark, [])


def test_the_benchmark_session_can_be_turned_back_on_and_gives_this_process_json(benchmark: Any,
                                                                                pytestconfig: pytest.Config) -> None:
    """Under xdist a worker turns pytest-benchmark's session back on and sends its JSON on: both
    go through `config._benchmarksession` (its disabled, json, benchmarks, get_machine_info)."""
    from harness.thirdparty import _session, reenable_in_worker, worker_json

    _enabled(benchmark)
    session = _session(pytestconfig)
    assert session is not None and hasattr(session, "benchmarks") and callable(session.get_machine_info)
    disabled, json_path = session.disabled, session.json
    try:
        reenable_in_worker(pytestconfig)
        assert session.disabled is False and session.json is None
    finally:
        session.disabled, session.json = disabled, json_path
    record_rounds(benchmark, [0.001, 0.002])
    doc = worker_json(pytestconfig)  # this session's rows so far; the fixture's own is added at its teardown
    if session.benchmarks:  # earlier tests of this run recorded some
        assert doc is not None and {"machine_info", "commit_info", "benchmarks"} <= set(doc)
        assert len(doc["benchmarks"]) == len(session.benchmarks)
    else:
        assert doc is None


def test_a_finished_rows_rounds_are_read_back(benchmark: Any) -> None:
    from harness.thirdparty import round_seconds

    _enabled(benchmark)
    record_rounds(benchmark, [0.004, 0.001, 0.002])
    assert sorted(round_seconds(benchmark)) == pytest.approx([0.001, 0.002, 0.004])


def test_output_written_while_uncaptured_reaches_the_terminal(pytestconfig: pytest.Config,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The plugin's progress lines: pytest's capture manager lets them through while inside."""
    import sys

    from harness.thirdparty import terminal_uncaptured

    print("captured line")
    with terminal_uncaptured(pytestconfig) as uncaptured:
        print("uncaptured line")
        sys.stdout.flush()
    assert uncaptured is (pytestconfig.pluginmanager.get_plugin("capturemanager") is not None)
    out = capsys.readouterr().out
    assert "captured line" in out and ("uncaptured line" not in out) == uncaptured


def test_an_xdist_worker_is_known_by_its_public_workerinput() -> None:
    from types import SimpleNamespace

    from harness.thirdparty import xdist_worker_index

    assert xdist_worker_index(SimpleNamespace(workerinput={"workerid": "gw3"})) == 3
    assert xdist_worker_index(SimpleNamespace()) is None  # the controller, or no xdist
    assert xdist_worker_index(SimpleNamespace(workerinput={"workerid": "weird"})) is None


def test_pytest_benchmark_reads_benchmark_only_after_the_plugin_can_hand_it_on() -> None:
    """The plugin clears --benchmark-only in a tryfirst pytest_configure under xdist: that works
    while pytest-benchmark's own pytest_configure is not tryfirst and its session reads the
    option when it is made there; and the warning silenced by its text still has that text."""
    import inspect

    import pytest_benchmark.plugin
    import pytest_benchmark.session

    from harness.thirdparty import XDIST_WARNING

    assert not pytest_benchmark.plugin.pytest_configure.pytest_impl.get("tryfirst")  # type: ignore[attr-defined]
    assert "BenchmarkSession(config)" in inspect.getsource(pytest_benchmark.plugin.pytest_configure)
    assert "config.getoption('benchmark_only')" in inspect.getsource(pytest_benchmark.session.BenchmarkSession.__init__)
    assert XDIST_WARNING in inspect.getsource(pytest_benchmark.session)


def test_handing_benchmark_only_on_clears_it_and_sets_the_harness_flag() -> None:
    from types import SimpleNamespace

    from harness.thirdparty import hand_benchmark_only_to_workers

    config = SimpleNamespace(option=SimpleNamespace(benchmark_only=True))
    hand_benchmark_only_to_workers(config, "harness_benchmark_only")
    assert config.option.benchmark_only is False and config.option.harness_benchmark_only is True
