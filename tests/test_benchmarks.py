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


def test_benchmark_suite_writes_comparable_rows(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow", reason="tensorflow not importable")
    pytest.importorskip("onnxruntime", reason="onnxruntime not importable")
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/", "--benchmark-only", "--harness-model", "digits",
         "--harness-batch-sizes", "1,4", f"--benchmark-json={out}", "-p", "no:cacheprovider", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "speedup over TensorFlow" in result.stdout and "runner overhead" in result.stdout
    data = json.loads(out.read_text())
    rows = {(b["extra_info"]["engine"], b["extra_info"]["batch"]): b["extra_info"]
            for b in data["benchmarks"] if "engine" in b["extra_info"]}
    assert set(rows) == {(e, b) for e in ("tensorflow", "onnxruntime") for b in (1, 4)}
    for (engine, batch), info in rows.items():
        assert 0 < info["p50_ms"] <= info["p90_ms"] <= info["p99_ms"]
        assert info["samples_per_s"] == pytest.approx(batch / (info["p50_ms"] / 1e3))
        assert info["speedup_vs_tensorflow"] > 0
    assert rows[("tensorflow", 1)]["speedup_vs_tensorflow"] == 1.0
    assert data["machine_info"]["harness"]["versions"]["tensorflow"]


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    fake = tmp_path / "cpuinfo"
    fake.write_text("model name\t: Test CPU 9000\nflags\t\t: fpu sse avx2 fma avx512f avx512_vnni\n")
    info = cpu_info(fake)
    assert info["model"] == "Test CPU 9000"
    assert info["speed_flags"] == ["avx2", "fma", "avx512f", "avx512_vnni"]


def test_versions_are_the_installed_ones() -> None:
    import numpy

    assert versions()["numpy"] == numpy.__version__
