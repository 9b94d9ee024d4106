"""The wall-time gate over several processes (`harness gate RUN.json ...`): where wall time's
variance lives on a shared machine (between processes), each row's speedup is combined from
every process and judged on an interval of the spread between them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.cli import main
from harness.measure import Speedup
from harness.timing import across_processes, spread_between

KEY = ("m", "onnxruntime-fp32", 8)


def _processes(rng: np.random.Generator, true: float, k: int, spread: float = 0.08) -> list[dict[Any, Speedup]]:
    """k processes' speedups for one row: each process off by a lognormal factor (the between-
    process spread measured on a 2-core VM: about 8%), each with a tight interval of its own."""
    out = []
    for _ in range(k):
        point = true * float(np.exp(rng.normal(0, spread)))
        out.append({KEY: Speedup(point, point * 0.98, point * 1.02)})
    return out


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("pooled", [False, True])
def test_the_combined_interval_covers_the_true_speedup_about_as_often_as_it_says(k: int, pooled: bool) -> None:
    rng = np.random.default_rng(3)
    trials = 1000
    intervals = []
    for _ in range(trials):
        # the baseline's own recording: 10 other processes, whose spread is pooled with these k's
        known = spread_between(_processes(rng, 20.0, 10)) if pooled else None
        intervals.append(across_processes(_processes(rng, 20.0, k), known)[KEY])
    covered = sum(s.low <= 20.0 <= s.high for s in intervals)
    # a 95% interval; each process's own +-2% interval (the width a single process claims) would
    # cover the true value in about a fifth of trials here, and fails this
    assert 0.93 * trials <= covered <= 0.97 * trials, covered
    if pooled and k == 3:  # the point of pooling: 3 processes alone pay t = 4.3 for guessing their spread
        alone = [across_processes(_processes(rng, 20.0, 3))[KEY] for _ in range(trials)]
        width = np.median([s.high / s.low for s in intervals]) - 1
        assert width < 0.75 * (np.median([s.high / s.low for s in alone]) - 1)


def test_the_point_is_the_geometric_mean_and_one_process_keeps_its_own_interval() -> None:
    runs = [{KEY: Speedup(p, p * 0.98, p * 1.02)} for p in (10.0, 40.0, 20.0)]
    assert across_processes(runs)[KEY].point == pytest.approx(20.0)  # not the mean (23.3) nor the first (10)
    one = across_processes(runs[:1])[KEY]
    assert (one.low, one.high) == (9.8, 10.2)  # nothing to say about the spread between processes
    known = across_processes(runs[:1], {KEY: (0.05, 9)})[KEY]  # unless the baseline recorded it
    assert known.low < 9.0 and known.high > 11.0


def _run(path: Path, speedups: dict[tuple[str, int], float], cls: str = "CPU A, 2 cores; no GPU") -> Path:
    """A pytest-benchmark file of the suite's shape with the given speedups (engine, batch)."""
    benchmarks = []
    for (engine, batch), s in speedups.items():
        backend, precision = engine.split("-")
        benchmarks.append({"name": f"test_engine[{engine}-{batch}]", "extra_info": {
            "model": "m", "engine": engine, "backend": backend, "precision": precision, "batch": batch,
            "p50_ms": 10 / s, "p90_ms": 11 / s, "p99_ms": 12 / s, "samples_per_s": batch * 100 * s,
            "speedup_vs_tensorflow": s, "speedup_interval": [s * 0.97, s * 1.03]}})
    path.write_text(json.dumps({"machine_info": {"harness": {"class": cls, "cpu": {"model": "CPU A"}, "gpus": []}},
                                "datetime": "2026-12-07T00:00:00", "benchmarks": benchmarks}))
    return path


def test_the_gate_fails_a_slowdown_every_process_shows_and_passes_the_noise(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(11)
    rows = [("onnxruntime-fp32", 1), ("onnxruntime-fp32", 8)]
    recorded = [_run(tmp_path / f"base{i}.json", {r: 20 * float(np.exp(rng.normal(0, 0.08))) for r in rows})
                for i in range(5)]
    baseline = tmp_path / "baseline.json"
    assert main(["gate", *map(str, recorded), "--baseline", str(baseline), "--update-baseline"]) == 0
    table = json.loads(baseline.read_text())["machines"]["CPU A, 2 cores; no GPU"]
    assert table["recorded"]["m"]["processes"] == 5
    sd, df = table["between_processes"]["m"]["onnxruntime-fp32"]["8"]
    assert df == 4 and 0.02 < sd < 0.2  # the 8% drawn above, as 5 processes estimate it
    clean = [_run(tmp_path / f"clean{i}.json", {r: 20 * float(np.exp(rng.normal(0, 0.08))) for r in rows})
             for i in range(5)]
    capsys.readouterr()
    assert main(["gate", *map(str, clean), "--baseline", str(baseline), "--max-slowdown", "0.15"]) == 0
    assert "(these runs' pooled with the baseline's)" in capsys.readouterr().out
    # 20% slower at batch 8 only, in every process, under the same noise
    slowed = [_run(tmp_path / f"slow{i}.json", {r: (16 if r[1] == 8 else 20) * float(np.exp(rng.normal(0, 0.02)))
                                                for r in rows}) for i in range(5)]
    capsys.readouterr()
    assert main(["gate", *map(str, slowed), "--baseline", str(baseline), "--max-slowdown", "0.10"]) == 1
    out = capsys.readouterr().out
    assert "m onnxruntime-fp32 batch 8: speedup" in out and "REGRESSED" in out.split("batch 8: speedup")[1]
    assert "batch 1: speedup" in out and "REGRESSED" not in out.split("batch 1: speedup")[1].split("\n")[0]


def test_the_gate_refuses_runs_of_two_classes_and_fails_runs_without_speedups(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _run(tmp_path / "a.json", {("onnxruntime-fp32", 1): 20.0})
    b = _run(tmp_path / "b.json", {("onnxruntime-fp32", 1): 20.0}, cls="CPU B, 2 cores; no GPU")
    baseline = tmp_path / "baseline.json"
    assert main(["gate", str(a), "--baseline", str(baseline), "--update-baseline"]) == 0
    assert main(["gate", str(a), str(b), "--baseline", str(baseline)]) == 2
    assert "2 machine classes" in capsys.readouterr().err
    # a run whose rows have no speedup (TensorFlow could not run beside them) judges nothing: a failure
    none = tmp_path / "none.json"
    doc = json.loads(a.read_text())
    doc["benchmarks"][0]["extra_info"]["speedup_vs_tensorflow"] = None
    none.write_text(json.dumps(doc))
    assert main(["gate", str(none), "--baseline", str(baseline)]) == 1
    assert "FAILED: m: no speedup measured, so none could be judged (no process measured its speedup)" in capsys.readouterr().out


def test_rows_some_processes_missed_fail_unless_allowed_and_a_rerecorded_row_drops_its_spread(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = {("onnxruntime-fp32", 1): 20.0, ("onnxruntime-fp32", 8): 40.0}
    runs = [_run(tmp_path / f"r{i}.json", {k: v * (1 + 0.01 * i) for k, v in rows.items()}) for i in range(3)]
    baseline = tmp_path / "baseline.json"
    assert main(["gate", *map(str, runs), "--baseline", str(baseline), "--update-baseline"]) == 0
    short = _run(tmp_path / "short.json", {("onnxruntime-fp32", 1): 20.0})  # batch 8 not measured here
    capsys.readouterr()
    assert main(["gate", str(runs[0]), str(runs[1]), str(short), "--baseline", str(baseline)]) == 1
    assert "FAILED: m onnxruntime-fp32 batch 8: measured in 2 of 3 processes" in capsys.readouterr().out
    assert main(["gate", str(runs[0]), str(runs[1]), str(short), "--baseline", str(baseline), "--allow-missing"]) == 0
    # batch 1 recorded again from one process: its spread is gone (one process measures none), batch 8's kept
    from harness.machine import machine_class
    from harness.timing import load_baseline, spread_for, update_baseline

    update_baseline(baseline, {("m", "onnxruntime-fp32", 1): Speedup.exact(21.0)}, machine_class(),
                    {}, class_name="CPU A, 2 cores; no GPU")
    assert set(spread_for(load_baseline(baseline), "CPU A, 2 cores; no GPU")) == {("m", "onnxruntime-fp32", 8)}


@pytest.mark.parametrize("bad", [[0.05], [float("inf"), 4], [0.05, 0], "0.05"])
def test_a_broken_spread_in_the_baseline_is_a_usage_error(tmp_path: Path, bad: Any) -> None:
    from harness.errors import UsageError
    from harness.timing import load_baseline

    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"format": 2, "machines": {"c": {"models": {}, "between_processes": {
        "m": {"onnxruntime-fp32": {"8": bad}}}}}}))
    with pytest.raises(UsageError, match=r"between_processes m/onnxruntime-fp32/8 = .*expected \[sd of the logs"):
        load_baseline(path)
