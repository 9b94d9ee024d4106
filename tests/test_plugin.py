"""The pytest plugin as a user meets it: fixtures for the chosen model, validated options."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from harness.golden import BUILTIN_GOLDEN_DIR

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True, scope="module")
def _preload_heavy_modules() -> None:
    # runpytest_inprocess drops the modules a run imported; TensorFlow cannot be imported a
    # second time in one process, so import it (and its company) out here, once.
    for name in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            pass

USER_TEST = """
def test_golden(ort_runner, golden, harness_tolerances):
    comparison = golden.check(ort_runner, harness_tolerances)
    assert comparison.passed, str(comparison)

def test_spec(model_spec, onnx_model, tf_runner):
    assert model_spec.input_names == ["image"]
    assert onnx_model.path.is_file()
    assert tf_runner.is_active
"""


def _args(tmp: Path) -> list[str]:
    root = Path(__file__).resolve().parents[1]
    return ["--harness-model", "digits", "--harness-artifacts", str(root / ".harness"), "-p", "no:cacheprovider",
            "--rootdir", str(tmp)]


def test_fixtures_run_a_users_golden_test(pytester: pytest.Pytester) -> None:
    pytest.importorskip("tensorflow", reason="tensorflow not importable")
    pytest.importorskip("onnxruntime", reason="onnxruntime not importable")
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_inprocess(*_args(pytester.path))
    result.assert_outcomes(passed=2)


ENGINE_TEST = """
def test_engine(engine, golden, harness_tolerances):
    assert engine.plan.is_file() and engine.runner.is_active and engine.backend == "onnxruntime"
    comparison = golden.check(engine.runner, harness_tolerances)
    assert comparison.passed, str(comparison)
"""


def test_engine_fixture_covers_every_precision_under_the_projects_policy(pytester: pytest.Pytester) -> None:
    pytest.importorskip("tensorflow", reason="tensorflow not importable")
    pytest.importorskip("onnxruntime", reason="onnxruntime not importable")
    pytester.makepyfile(test_user=ENGINE_TEST)
    result = pytester.runpytest_inprocess(*_args(pytester.path), "-v", "--harness-backends", "onnxruntime")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_engine?onnxruntime-fp32? PASSED*", "*test_engine?onnxruntime-fp16? PASSED*",
                                 "*test_engine?onnxruntime-int8? PASSED*"])

    # A project policy no int8 engine can meet, for this model's output only: int8 fails,
    # with the statistics; the other precisions are untouched.
    pytester.makefile(".toml", pyproject="[tool.harness.model.digits.output.logits.tolerance.int8]\nmin_cosine = 0.99999999\n")
    result = pytester.runpytest_inprocess(*_args(pytester.path), "--harness-backends", "onnxruntime")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*onnxruntime-int8 output 'logits': FAIL*", "*cosine similarity*< 0.99999999*"])

    result = pytester.runpytest_inprocess(*_args(pytester.path), "--harness-precisions", "fp16", "-v",
                                          "--harness-backends", "onnxruntime")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_engine?onnxruntime-fp16? PASSED*"])


def test_engine_fixture_skips_tensorrt_engines_it_cannot_run_with_the_reason(pytester: pytest.Pytester) -> None:
    pytest.importorskip("tensorflow", reason="tensorflow not importable")
    pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx not importable")
    from harness.backends.trt.cuda import device_count

    if device_count():
        pytest.skip("a CUDA device is present: TensorRT engines may run here")
    pytester.makepyfile(test_user=ENGINE_TEST)
    result = pytester.runpytest_inprocess(*_args(pytester.path), "-rs", "--harness-backends", "tensorrt_rtx,tensorrt",
                                          "--harness-engine-dir", str(pytester.path / "engines"))
    result.assert_outcomes(skipped=6)
    result.stdout.fnmatch_lines(["*no CUDA device: TensorRT plans run on an NVIDIA GPU*",
                                 "*SKIPPED*tensorrt *install it with: pip install tensorrt *"])
    # The tensorrt_rtx plans were built (ahead of time) even though they cannot run here.
    assert len(list((pytester.path / "engines" / "plans").glob("digits-tensorrt_rtx-*/model.plan"))) == 3


def test_a_bad_policy_is_reported(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", pyproject="[tool.harness.tolerance.int8]\nmin_cosin = 0.9\n")
    pytester.makepyfile(test_x="def test_x(harness_tolerances): pass")
    result = pytester.runpytest_inprocess("--rootdir", str(pytester.path), "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*pyproject.toml ?tool.harness?.tolerance.int8: unknown field?s? ?'min_cosin'?*"])


def test_a_stale_or_missing_golden_fails_with_the_command(pytester: pytest.Pytester) -> None:
    pytest.importorskip("tensorflow", reason="tensorflow not importable")
    pytest.importorskip("onnxruntime", reason="onnxruntime not importable")
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_inprocess(*_args(pytester.path), "--harness-golden-dir", str(pytester.path / "empty"))
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*GoldenMissing: *empty/digits: no golden data*write it with: harness golden digits*"])
    # One line that names the file and the fix, not a fixture traceback.
    assert "raise GoldenMissing" not in result.stdout.str() and "workspace.py" not in result.stdout.str()

    stale = pytester.path / "stale"
    shutil.copytree(BUILTIN_GOLDEN_DIR / "digits", stale / "digits")
    meta = json.loads((stale / "digits" / "meta.json").read_text())
    (stale / "digits" / "meta.json").write_text(json.dumps({**meta, "model_digest": "0" * 64}))
    result = pytester.runpytest_inprocess(*_args(pytester.path), "--harness-golden-dir", str(stale))
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([("*GoldenStale: *stale golden: made from model digest 000000000000*"
                                 "regenerate it with: harness golden digits --golden-dir=*")])
    assert "raise GoldenStale" not in result.stdout.str()


def test_options_are_validated_when_parsed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(): pass")
    result = pytester.runpytest_inprocess("--harness-opset", "seventeen")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--harness-opset*'seventeen'*an integer from 9 to 21*"])


def test_help_states_defaults(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--help")
    result.stdout.fnmatch_lines(["*--harness-model*", "*(default: inception_v3)*", "*--harness-artifacts*"])


def test_one_core_pins_the_process_and_gives_one_thread_everywhere(pytester: pytest.Pytester) -> None:
    """--harness-one-core (the wall-time gate's setting): this process on one CPU, TensorFlow told
    one thread before it starts, the CPU engines one thread; refused beside xdist, whose workers
    would all share the one CPU. In a subprocess: pinning this test process would pin the suite."""
    pytester.makepyfile(test_x="""
import os

def test_pinned(harness_workspace):
    assert len(os.sched_getaffinity(0)) == 1
    assert os.environ["TF_NUM_INTRAOP_THREADS"] == os.environ["TF_NUM_INTEROP_THREADS"] == "1"
    assert harness_workspace.threads == 1
""")
    result = pytester.runpytest_subprocess("--harness-one-core", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    if len(os.sched_getaffinity(0)) > 1:  # without it: nothing pinned, the test above fails
        pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(failed=1)
    pytest.importorskip("xdist", reason="pytest-xdist not importable")
    result = pytester.runpytest_subprocess("--harness-one-core", "-n", "2", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--harness-one-core pins the process to one CPU*run it without -n*"])
