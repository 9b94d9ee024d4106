"""harness debug: the tensor where a precision breaks, and --fix's mixed-precision model, on
models the tests build with a known fault: fp16 overflowing in one dense layer, int8 with one
branch calibrated on data 100 times too small, and a healthy model with nothing to fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.debug import find_mixed
from harness.sources import ModelRequest
from harness.workspace import CalibrationOptions, Workspace

pytest_plugins = ["pytester"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("tensorflow", reason="tensorflow not importable")
    from tests.zoo import branchy_mlp, overflowing_mlp

    root = tmp_path_factory.mktemp("debug")
    workspace = Workspace(root / "artifacts", root / "golden", quiet=True)
    requests = {}
    for model in (overflowing_mlp(), overflowing_mlp(scale=1.0), branchy_mlp()):
        path = root / f"{model.name}.keras"
        model.save(path)
        requests[model.name] = ModelRequest.of(str(path))
        workspace.write_golden(requests[model.name])
    x = np.random.default_rng(5).standard_normal((64, 8)).astype(np.float32)
    x[:, 0] *= 0.01  # feature 0, which only the branch reads, 100 times smaller than in use
    np.savez(root / "calibration.npz", x=x)
    return {"workspace": workspace, "requests": requests, "calibration": CalibrationOptions(source=root / "calibration.npz")}


def test_debug_names_the_layer_where_fp16_overflows(models: dict[str, Any]) -> None:
    report = models["workspace"].debug(models["requests"]["overflowing_mlp"], "fp16")
    assert report.passed is False
    first = report.first_overflow()
    assert first is not None and "wide" in first.node and first.overflow > 0
    assert report.ranking()[0] == first.node
    assert "first fp16 overflow" in report.summary() and "wide" in report.summary()


def test_fix_keeps_only_the_overflowing_layer_in_fp32_and_passes(models: dict[str, Any]) -> None:
    workspace: Workspace = models["workspace"]
    request = models["requests"]["overflowing_mlp"]
    mixed, _ = workspace.variant(request, "fp16-mixed")
    kept = json.loads((mixed.path.parent / "meta.json").read_text())["kept_in_fp32"]
    assert kept and all("wide" in name for name in kept)  # nothing downstream had to be kept
    comparison = workspace.compare(request, ["onnxruntime"], ["fp16", "fp16-mixed"])
    passed = {r.precision: r.passed for r in comparison.results}
    assert passed == {"fp16": False, "fp16-mixed": True}


def test_debug_names_the_badly_calibrated_branch_and_fix_passes_int8(models: dict[str, Any]) -> None:
    workspace: Workspace = models["workspace"]
    request, calibration = models["requests"]["branchy_mlp"], models["calibration"]
    report = workspace.debug(request, "int8", calibration)
    saturated = report.first_saturated()
    assert report.passed is False and saturated is not None and saturated.saturated > 0.5
    worst = max(report.rows, key=lambda r: r.saturated)
    assert "branch" in worst.tensor or "cropping" in worst.tensor  # the branch's input and its layer
    healthy = [r for r in report.rows if "main" in r.tensor]
    assert healthy and all(r.saturated < 0.05 for r in healthy)
    mixed, _ = workspace.variant(request, "int8-mixed", calibration)
    kept = json.loads((mixed.path.parent / "meta.json").read_text())["kept_unquantized"]
    assert not any("main" in name for name in kept)  # the well-calibrated branch stays int8
    comparison = workspace.compare(request, ["onnxruntime"], ["int8-mixed"], calibration=calibration)
    assert comparison.passed, str(comparison)


def test_a_healthy_model_has_nothing_to_fix(models: dict[str, Any]) -> None:
    report = models["workspace"].debug(models["requests"]["healthy_mlp"], "fp16")
    assert report.passed and report.nothing_to_fix()
    assert report.first_overflow() is None and report.first_jump() is None
    assert "nothing to fix" in report.summary()


def test_find_mixed_returns_the_shortest_passing_prefix() -> None:
    ranking = [f"n{i}" for i in range(40)]
    calls: list[int] = []

    def passes(kept: list[str]) -> bool:
        calls.append(len(kept))
        return len(kept) >= 11

    kept, runs = find_mixed(ranking, passes, budget=20)
    assert kept == ranking[:11] and runs == len(calls) <= 12
    assert find_mixed(ranking, lambda kept: False, budget=5) == (None, 5)
    assert find_mixed(ranking, lambda kept: True)[0] == []


def test_debug_on_fail_attaches_the_summary_to_a_failing_engine_test(models: dict[str, Any], tmp_path: Path,
                                                                      pytester: pytest.Pytester) -> None:
    request = models["requests"]["overflowing_mlp"]
    pytester.makepyfile(test_fp16="""
def test_golden(engine, golden, harness_tolerances):
    assert golden.check(engine.runner, harness_tolerances).passed
""")
    workspace: Workspace = models["workspace"]
    result = pytester.runpytest_subprocess(
        "--harness-model", request.model, "--harness-backends", "onnxruntime",
        "--harness-precisions", "fp16", "--harness-artifacts", str(workspace.store.root),
        "--harness-golden-dir", str(workspace.golden_dir), "--harness-debug-on-fail", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*harness debug fp16*", "*first fp16 overflow*wide*"])


def test_the_report_shows_a_debug_run(models: dict[str, Any], tmp_path: Path) -> None:
    from harness.artifacts import atomic_write_json
    from harness.report import write_report

    report = models["workspace"].debug(models["requests"]["overflowing_mlp"], "fp16")
    atomic_write_json(tmp_path / "debug.json", report.to_dict())
    written = write_report(tmp_path / "report", [], debug=[tmp_path / "debug.json"])
    assert [p.name for p in written.plots] == ["debug-overflowing_mlp-fp16.png"]
    text = written.markdown.read_text()
    assert "first fp16 overflow" in text and "wide" in text
