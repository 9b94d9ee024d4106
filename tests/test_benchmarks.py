"""The benchmark suite (the README's main job) run on the small built-in model: the JSON it
writes has a row per engine x batch size with percentiles, throughput and the speedup
measured in the same run, and the machine information."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.machine import cpu_info, versions

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("tensorflow", reason="tensorflow not importable")
    pytest.importorskip("onnxruntime", reason="onnxruntime not importable")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/", "--benchmark-only", "--harness-model", "digits",
         "-p", "no:cacheprovider", "-q", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )


def test_benchmark_suite_writes_comparable_rows(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = _bench("--harness-batch-sizes", "1,4", f"--benchmark-json={out}", f"--harness-report={tmp_path / 'report'}",
                    "--harness-serve-seconds", "0.5", "--harness-serve-concurrency", "1,2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"harness: report written to {tmp_path / 'report' / 'report.html'} (3 plots)" in result.stdout
    assert "speedup over TensorFlow" in result.stdout and "runner overhead" in result.stdout
    assert "harness: serving load test" in result.stdout and "serving overhead" in result.stdout
    data = json.loads(out.read_text())
    rows = {(b["extra_info"]["engine"], b["extra_info"]["precision"], b["extra_info"]["batch"]): b["extra_info"]
            for b in data["benchmarks"] if "engine" in b["extra_info"]}
    engines = [("tensorflow", "fp32")] + [("onnxruntime", p) for p in ("fp32", "fp16", "int8")]
    assert set(rows) == {(e, p, b) for e, p in engines for b in (1, 4)}
    for (_, _, batch), info in rows.items():
        assert 0 < info["p50_ms"] <= info["p90_ms"] <= info["p99_ms"]
        assert info["samples_per_s"] == pytest.approx(batch / (info["p50_ms"] / 1e3))
        assert info["speedup_vs_tensorflow"] > 0
        assert info["scenario"] == {1: "SingleStream", 4: "Offline"}[batch]
    for batch in (1, 4):
        tf = rows[("tensorflow", "fp32", batch)]["p50_ms"]
        assert tf and rows[("tensorflow", "fp32", batch)]["speedup_vs_tensorflow"] == 1.0
        for engine, precision in engines[1:]:
            row = rows[(engine, precision, batch)]
            assert row["speedup_vs_tensorflow"] == pytest.approx(tf / row["p50_ms"])
    assert {b["group"] for b in data["benchmarks"] if "engine" in b["extra_info"]} == {"digits batch 1", "digits batch 4"}
    assert data["machine_info"]["harness"]["versions"]["tensorflow"]
    serving = {b["extra_info"]["batching"]: b["extra_info"] for b in data["benchmarks"] if "batching" in b["extra_info"]}
    assert set(serving) == {"off", "on"}
    for info in serving.values():
        assert [s["concurrency"] for s in info["sweep"]] == [1, 2] and all(s["errors"] == 0 for s in info["sweep"])
        assert info["serving_p50_ms"] > info["engine_p50_ms"] > 0
    # The report shows every engine x precision x batch measured, one table row each.
    report = (tmp_path / "report" / "report.md").read_text()
    for (engine, precision, batch) in rows:
        assert f"| {engine} | {precision} | {batch} |" in report


def test_gate_fails_on_a_baseline_the_run_cannot_meet_and_passes_on_one_it_can(tmp_path: Path) -> None:
    fast = ("--harness-batch-sizes", "1", "--harness-precisions", "fp32,int8", "-k", "not overhead and not serving")
    written = tmp_path / "measured.json"
    result = _bench(*fast, f"--harness-update-baseline={written}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    measured = json.loads(written.read_text())["models"]["digits"]
    assert set(measured) == {"onnxruntime-fp32", "onnxruntime-int8"} and all(measured[e]["1"] > 0 for e in measured)

    def baseline(ratio: float) -> Path:
        path = tmp_path / f"baseline-{ratio}.json"
        path.write_text(json.dumps({"models": {"digits": {e: {"1": ratio} for e in measured},
                                               "inception_v3": {"onnxruntime-fp32": {"1": 1e9}}}}))
        return path

    unreachable = _bench(*fast, f"--harness-gate={baseline(1e6)}", "--harness-max-slowdown=0.5")
    assert unreachable.returncode == 1, unreachable.stdout[-3000:]
    assert "harness gate" in unreachable.stdout and "FAILED" in unreachable.stdout
    assert "digits onnxruntime-int8 batch 1: speedup" in unreachable.stdout
    assert "vs baseline 1000000.00x (floor 500000.00x) REGRESSED" in unreachable.stdout
    assert "inception_v3" not in unreachable.stdout.split("harness gate")[1]  # other models are not judged

    reachable = _bench(*fast, f"--harness-gate={baseline(0.01)}", "--harness-max-slowdown=0.5")
    assert reachable.returncode == 0, reachable.stdout[-3000:] + reachable.stderr[-3000:]
    assert "harness gate" in reachable.stdout and "passed" in reachable.stdout


def test_gate_arithmetic_and_baseline_errors(tmp_path: Path) -> None:
    from harness.errors import UsageError
    from harness.timing import Row, check_gate, load_baseline, speedups, update_baseline

    rows = [Row("m", "tensorflow-fp32", 1, 0.010), Row("m", "onnxruntime-int8", 1, 0.004),
            Row("m", "onnxruntime-fp32", 8, 0.050)]  # no reference at batch 8: no speedup
    measured = speedups(rows)
    assert measured == {("m", "tensorflow-fp32", 1): 1.0, ("m", "onnxruntime-int8", 1): 2.5}
    results = check_gate(measured, {"models": {"m": {"onnxruntime-int8": {"1": 2.9, "32": 2.0}}}}, 0.15)
    by_batch = {r.batch: r for r in results}
    assert by_batch[1].floor == pytest.approx(2.465) and by_batch[1].passed  # 2.5 >= 2.9 * 0.85
    assert by_batch[32].measured is None and "not measured" in str(by_batch[32])
    assert not check_gate(measured, {"models": {"m": {"onnxruntime-int8": {"1": 3.0}}}}, 0.15)[0].passed

    path = tmp_path / "b.json"
    path.write_text(json.dumps({"models": {"other": {"onnxruntime-fp32": {"1": 1.5}}}}))
    update_baseline(path, measured, {"cpu": "x"})
    data = load_baseline(path)
    assert data["models"]["m"] == {"onnxruntime-int8": {"1": 2.5}} and "other" in data["models"]

    for text, message in [("{", "not valid JSON"), ("{}", "no 'models' table"),
                          ('{"models": {"m": {"e": {"one": 2}}}}', "m/e/one")]:
        path.write_text(text)
        with pytest.raises(UsageError, match=message):
            load_baseline(path)
    with pytest.raises(UsageError, match="cannot read it"):
        load_baseline(tmp_path / "absent.json")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    fake = tmp_path / "cpuinfo"
    fake.write_text("model name\t: Test CPU 9000\nflags\t\t: fpu sse avx2 fma avx512f avx512_vnni\n")
    info = cpu_info(fake)
    assert info["model"] == "Test CPU 9000"
    assert info["speed_flags"] == ["avx2", "fma", "avx512f", "avx512_vnni"]


def test_versions_are_the_installed_ones() -> None:
    import numpy

    assert versions()["numpy"] == numpy.__version__
