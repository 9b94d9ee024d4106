"""TensorRT plans built for real with TensorRT for RTX on this CPU-only machine (ahead of
time), the plan cache, and checks that the TensorRT code calls only API that exists.

What needs a GPU of compute capability 8.0/8.6/8.9/12.x (running the plans) is not here:
tests/gpu/ exercises the cuda-python layer on a real GPU, and the engine fixture skips
execution with the reason."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness.errors import ExportError, UsageError
from harness.sources import ModelRequest
from harness.workspace import Workspace

trt = pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx not importable (pip install tensorrt-rtx-cu13)")
pytest.importorskip("tensorflow", reason="tensorflow not importable")
pytest.importorskip("onnxruntime", reason="onnxruntime not importable")

ROOT = Path(__file__).resolve().parents[1]
TRT_CODE = sorted((ROOT / "harness" / "backends" / "trt").glob("*.py"))
BUILTINS = ["digits", pytest.param("inception_v3", marks=pytest.mark.slow)]


@pytest.fixture
def fresh(tmp_path: Path, harness_workspace: Workspace) -> Workspace:
    """Its own plan cache; frozen graphs, ONNX and calibrations from the session's cache."""
    return Workspace(harness_workspace.store.root, quiet=True, engine_dir=tmp_path / "engines")


@pytest.mark.parametrize("name", BUILTINS)
def test_plans_build_in_every_precision(name: str, fresh: Workspace) -> None:
    request = ModelRequest.of(name)
    sizes = {}
    for precision in ("fp32", "fp16", "int8"):
        plan = fresh.plan(request, "tensorrt_rtx", precision)
        side = json.loads((plan.path.parent / "model.plan.json").read_text())
        assert side == plan.sidecar
        assert side["library"] == "tensorrt_rtx" and side["version"] == trt.__version__
        assert side["precision"] == precision and side["built_without_gpu"] is True
        assert side["device"] == {"gpu": None, "ahead_of_time": ["SM80", "SM86", "SM89", "SM120"]}
        assert side["options"]["max_batch"] == 32 and side["options"]["workspace"] == 1 << 30
        model, _ = fresh.variant(request, precision, target="tensorrt")
        from harness.artifacts import digest_bytes, file_digest

        assert side["onnx_sha256"] == file_digest(model.path)
        assert side["plan_sha256"] == digest_bytes(plan.path.read_bytes())
        sizes[precision] = plan.size
    if name == "inception_v3":
        # 23.8M weights dominate its plans: fp16 halves them, int8 quarters them, so the
        # precision really came from the ONNX (digits' plans are mostly kernels, not weights).
        assert sizes["fp16"] < 0.6 * sizes["fp32"] and sizes["int8"] < 0.8 * sizes["fp16"], sizes


def test_plan_cache_reuses_and_rebuilds(fresh: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    request = ModelRequest.of("digits")
    start = time.perf_counter()
    first = fresh.plan(request, "tensorrt_rtx", "int8")
    built_s = time.perf_counter() - start
    again = Workspace(fresh.store.root, quiet=True, engine_dir=fresh.engine_dir)
    start = time.perf_counter()
    second = again.plan(request, "tensorrt_rtx", "int8")
    reused_s = time.perf_counter() - start
    with capsys.disabled():
        print(f"\ndigits int8 tensorrt_rtx plan: built in {built_s:.2f} s, reused in {reused_s:.3f} s")
    assert not first.reused and second.reused and second.path == first.path

    # A truncated plan is detected by its hash and rebuilt with a warning, never loaded.
    data = first.path.read_bytes()
    first.path.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match=r"model\.plan changed since it was built; rebuilding"):
        rebuilt = Workspace(fresh.store.root, quiet=True, engine_dir=fresh.engine_dir).plan(
            request, "tensorrt_rtx", "int8")
    from harness.artifacts import digest_bytes

    assert not rebuilt.reused and rebuilt.path.stat().st_size == len(data)  # plans differ in a build stamp
    assert rebuilt.sidecar["plan_sha256"] == digest_bytes(rebuilt.path.read_bytes())

    # Other build options: another plan. Forced rebuild: built again, same place.
    from harness.backends.trt.build import BuildOptions

    other = Workspace(fresh.store.root, quiet=True, engine_dir=fresh.engine_dir,
                      build_options=BuildOptions(max_batch=8))
    small = other.plan(request, "tensorrt_rtx", "int8")
    assert not small.reused and small.path != first.path and small.sidecar["options"]["max_batch"] == 8
    forced = Workspace(fresh.store.root, quiet=True, engine_dir=fresh.engine_dir, rebuild=True)
    assert not forced.plan(request, "tensorrt_rtx", "int8").reused
    assert forced.plan(request, "tensorrt_rtx", "int8").reused is False  # memoized: rebuilt once per workspace


def test_plan_is_rebuilt_when_the_onnx_changes(tmp_path: Path, harness_workspace: Workspace) -> None:
    # Another opset gives other ONNX bytes for the same model: the plan's key changes.
    a = Workspace(harness_workspace.store.root, quiet=True, engine_dir=tmp_path / "e")
    b = Workspace(harness_workspace.store.root, quiet=True, engine_dir=tmp_path / "e", opset=16)
    request = ModelRequest.of("digits")
    plan_a, plan_b = a.plan(request, "tensorrt_rtx", "fp32"), b.plan(request, "tensorrt_rtx", "fp32")
    assert plan_a.sidecar["onnx_sha256"] != plan_b.sidecar["onnx_sha256"]
    assert not plan_b.reused and plan_a.path != plan_b.path


def test_unparsable_onnx_names_the_node(tmp_path: Path) -> None:
    import onnx
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("Mystery", ["x"], ["y"], name="the_bad_node", domain="custom")], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [-1, 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [-1, 3])],
    )
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)]),
              str(path))
    from harness.backends.trt.build import BuildOptions, build_plan
    from harness.spec import ModelSpec, TensorSpec

    spec = ModelSpec("bad", (TensorSpec("x", "float32", (None, 3)),), (TensorSpec("y", "float32", (None, 3)),))
    with pytest.raises(ExportError, match=r"bad\.onnx: TensorRT \(tensorrt_rtx .*\) cannot parse it: node 'the_bad_node' \(Mystery\)"):
        build_plan("tensorrt_rtx", path, spec, BuildOptions())


def test_a_failed_build_says_what_the_builder_logged(tmp_path: Path) -> None:
    """An int8 constant feeding a Cast instead of a DequantizeLinear: TensorRT-RTX refuses it and
    logs why; the message used to say "no reason given" (the log was read after the error)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 4), np.int8), "W")
    graph = helper.make_graph(
        [helper.make_node("Cast", ["W"], ["Wf"], to=onnx.TensorProto.FLOAT), helper.make_node("MatMul", ["x", "Wf"], ["y"])],
        "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [-1, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [-1, 4])], [weight])
    path = tmp_path / "quantized_constant.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    from harness.backends.trt.build import BuildOptions, build_plan
    from harness.errors import ArtifactError
    from harness.spec import ModelSpec, TensorSpec

    spec = ModelSpec("q", (TensorSpec("x", "float32", (None, 4)),), (TensorSpec("y", "float32", (None, 4)),))
    with pytest.raises(ArtifactError, match=r"quantized_constant\.onnx: tensorrt_rtx could not build a plan: .*"
                                            r"Quantized constant \(W\) is only allowed before DQ"):
        build_plan("tensorrt_rtx", path, spec, BuildOptions())


def test_an_output_whose_shape_depends_on_the_data_goes_to_the_builder(tmp_path: Path) -> None:
    """The harness no longer refuses a data-dependent output (the runner gives it to TensorRT's
    IOutputAllocator: tests/gpu/test_trt_contract.py); what TensorRT cannot do is TensorRT's to
    say. TensorRT for RTX 1.7 has no NonZero (its parser wants a plugin) nor NMS runner (checked
    through its network API too), so here the refusal is its own, naming the node."""
    import onnx
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("NonZero", ["x"], ["nz"], name="the_nms"), helper.make_node("Transpose", ["nz"], ["y"], perm=[1, 0])],
        "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.INT64, None)])
    path = tmp_path / "detector.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    from harness.backends.trt.build import BuildOptions, build_plan, data_dependent_outputs
    from harness.spec import ModelSpec, TensorSpec

    assert data_dependent_outputs(path) == {"y": "'the_nms' (NonZero)"}  # what the sidecar will list
    spec = ModelSpec("d", (TensorSpec("x", "float32", (None, 4)),), (TensorSpec("y", "int64", (None, 2)),))
    with pytest.raises(ExportError, match=r"cannot parse it: node 'the_nms' \(NonZero\): .*plugin") as refused:
        build_plan("tensorrt_rtx", path, spec, BuildOptions())
    assert "depends on the data" not in str(refused.value)  # the harness's own refusal is gone


def test_a_data_dependent_op_with_a_fixed_size_output_is_not_taken_for_one(tmp_path: Path) -> None:
    """NonZero inside, but the output's shape follows from the input's (a count of nonzeros per
    row would not; here the mask is reduced to a fixed shape): not listed."""
    import onnx
    from onnx import helper

    from harness.backends.trt.build import data_dependent_outputs

    graph = helper.make_graph(
        [helper.make_node("NonZero", ["x"], ["nz"], name="inner_nonzero"),
         helper.make_node("Relu", ["x"], ["y"])],
        "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4])])
    path = tmp_path / "fixed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert data_dependent_outputs(path) == {}


def test_equivalent_build_options_key_the_same_plan() -> None:
    from harness.backends.trt.build import BuildOptions

    assert BuildOptions().to_dict() == BuildOptions(opt_batch=32).to_dict()
    assert BuildOptions().to_dict() != BuildOptions(opt_batch=8).to_dict()


def test_bad_build_options_are_usage_errors() -> None:
    from harness.backends.trt.build import BuildOptions

    with pytest.raises(UsageError, match="min 1 <= opt 64 <= max 32"):
        BuildOptions(opt_batch=64)
    with pytest.raises(UsageError, match="optimization level 9"):
        BuildOptions(optimization_level=9)


def test_runner_skips_execution_without_a_suitable_gpu(fresh: Workspace) -> None:
    from harness.backends.trt.cuda import device_count, device_properties
    from harness.errors import BackendUnavailable

    engine = fresh.engine(ModelRequest.of("digits"), "tensorrt_rtx", "fp32")
    assert engine.plan.is_file() and engine.backend == "tensorrt_rtx"
    if device_count() and device_properties(0)[1] in {(8, 0), (8, 6), (8, 9), (12, 0), (12, 1)}:
        pytest.skip("a GPU tensorrt_rtx runs on is present: the golden tests run it instead")
    with pytest.raises(BackendUnavailable, match=r"no CUDA device|cannot run on compute capability"):
        engine.runner.activate()
    assert not engine.runner.is_active


def test_stub_only_tensorrt_is_reported_as_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.backends.trt import import_trt
    from harness.errors import BackendUnavailable

    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.pyi").write_text("class Builder: ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    with pytest.raises(BackendUnavailable, match="type stubs only"):
        import_trt("tensorrt")


def test_cli_build_prints_path_size_and_reuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    argv = ["build", "digits", "--backends", "tensorrt_rtx", "--precisions", "fp32,int8",
            "--engine-dir", str(tmp_path / "e"), "--compute-capability", "SM86"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all("built in" in line and "ahead of time for SM86" in line for line in out)
    assert all(line.split()[0].endswith("model.plan") and " MB " in line for line in out)
    assert main(argv) == 0
    assert all("reused in" in line for line in capsys.readouterr().out.splitlines())
    assert main([*argv, "--rebuild"]) == 0
    assert all("built in" in line for line in capsys.readouterr().out.splitlines())


def test_int8_plan_of_a_model_without_golden_or_calibration_data(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`harness build --precision int8` used to read the golden inputs to calibrate: a user's
    model with no golden failed with GoldenMissing. It calibrates on synthetic data now, and says so."""
    from harness.cli import main
    from tests.models import write_keras

    model = write_keras(tmp_path)
    argv = ["build", str(model), "--backends", "tensorrt_rtx", "--precisions", "int8", "--artifacts", str(tmp_path / "a"),
            "--golden-dir", str(tmp_path / "no-goldens"), "--compute-capability", "SM86"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "model.plan" in captured.out and "built in" in captured.out
    assert "seeded synthetic samples" in captured.err and "not evidence of accuracy" in captured.err
    assert not (tmp_path / "no-goldens").exists()


# --- the TensorRT code calls only API that exists ---------------------------------------

# Objects the TensorRT code holds, by the names it gives them, where no `trt_api.X`
# annotation names their class (TensorRT-RTX-only classes have no datacenter stub).
EXTRA_TYPES = {"runtime_cache": "IRuntimeCache"}


def api_problems(source: str, module: Any) -> list[str]:
    """Every `trt.A.B` chain and every attribute used on an object whose class is known (from
    a `trt_api.Class` annotation or EXTRA_TYPES) that `module` lacks."""
    tree = ast.parse(source)
    types = dict(EXTRA_TYPES)
    for node in ast.walk(tree):
        annotation, target = None, None
        if isinstance(node, ast.AnnAssign):
            annotation, target = node.annotation, node.target
        elif isinstance(node, ast.arg):
            annotation, target = node.annotation, node
        if annotation is None:
            continue
        for part in ast.walk(annotation):
            if isinstance(part, ast.Attribute) and isinstance(part.value, ast.Name) and part.value.id == "trt_api":
                name = target.arg if isinstance(target, ast.arg) else (
                    target.id if isinstance(target, ast.Name) else getattr(target, "attr", None))
                if name:
                    types[name] = part.attr
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        base = node.value
        chain = []
        while isinstance(base, ast.Attribute):
            chain.insert(0, base.attr)
            base = base.value
        if isinstance(base, ast.Name) and base.id == "trt":
            obj: Any = module
            for attr in [*chain, node.attr]:
                if not hasattr(obj, attr):
                    problems.append(f"line {node.lineno}: trt.{'.'.join([*chain, node.attr])}")
                    break
                obj = getattr(obj, attr)
            continue
        owner = node.value.id if isinstance(node.value, ast.Name) else (
            node.value.attr if isinstance(node.value, ast.Attribute) else None)
        if owner in types:
            cls = getattr(module, types[owner], None)
            if cls is None:
                problems.append(f"line {node.lineno}: class {types[owner]} (of {owner})")
            elif not hasattr(cls, node.attr):
                problems.append(f"line {node.lineno}: {types[owner]}.{node.attr} (on {owner})")
    return problems


@pytest.mark.parametrize("path", TRT_CODE, ids=lambda p: p.name)
def test_every_tensorrt_attribute_exists_in_tensorrt_rtx(path: Path) -> None:
    assert api_problems(path.read_text(), trt) == []


def test_api_check_catches_a_misspelling() -> None:
    source = (ROOT / "harness/backends/trt/build.py").read_text()
    bad = source.replace("config.builder_optimization_level", "config.builder_optimisation_level")
    bad = bad.replace("trt.MemoryPoolType.WORKSPACE", "trt.MemoryPoolType.WORK_SPACE")
    problems = api_problems(bad, trt)
    assert any("IBuilderConfig.builder_optimisation_level" in p for p in problems), problems
    assert any("trt.MemoryPoolType.WORK_SPACE" in p for p in problems), problems
    assert api_problems(source, trt) == []


MYPY_CONFIG = """[mypy]
python_version = 3.11
check_untyped_defs = true
ignore_missing_imports = true
[mypy-tensorrt_bindings.*]
ignore_errors = true
[mypy-tensorrt.*]
ignore_errors = true
"""


def _stub_path(tmp_path: Path) -> Path:
    """tensorrt-stubs installs tensorrt/ and tensorrt_bindings/ .pyi files without py.typed,
    so mypy ignores them where installed; and 10.13's stubs have two syntax errors (a
    parameter named `in`, a non-default parameter after defaults). A patched copy fixes both."""
    from importlib import metadata

    try:
        dist = metadata.distribution("tensorrt-stubs")
    except metadata.PackageNotFoundError:
        pytest.skip("tensorrt-stubs not installed (pip install --no-deps tensorrt-stubs)")
    root = Path(str(dist.locate_file("")))
    out = tmp_path / "stubs"
    if out.is_dir():
        return out
    for package in ("tensorrt", "tensorrt_bindings"):
        shutil.copytree(root / package, out / package, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    stub = out / "tensorrt_bindings" / "tensorrt.pyi"
    import re

    text = re.sub(r"([(,] *)in: ", r"\1in_: ", stub.read_text())
    text = text.replace("power: Weights = None, channel_axis: int)", "power: Weights = None, channel_axis: int = ...)")
    stub.write_text(text)
    return out


def _mypy(tmp_path: Path, files: list[Path]) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("mypy", reason="mypy not installed")
    stubs = _stub_path(tmp_path)
    (tmp_path / "mypy.ini").write_text(MYPY_CONFIG)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(tmp_path / "mypy.ini"), "--no-incremental",
         "--cache-dir", str(tmp_path / "cache"), *map(str, files)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={"MYPYPATH": str(stubs), "PATH": ""},
        check=False,
    )


def test_mypy_passes_on_the_tensorrt_code_against_tensorrt_stubs(tmp_path: Path) -> None:
    result = _mypy(tmp_path, TRT_CODE)
    assert result.returncode == 0, result.stdout + result.stderr

    # And it would catch a misspelled TensorRT call (the stubs are really in use).
    bad = tmp_path / "pkg" / "build_bad.py"
    bad.parent.mkdir()
    bad.write_text((ROOT / "harness/backends/trt/build.py").read_text().replace(
        "config.builder_optimization_level", "config.builder_optimisation_level"))
    result = _mypy(tmp_path, [bad])
    assert result.returncode == 1 and '"IBuilderConfig" has no attribute "builder_optimisation_level"' in result.stdout


def test_an_output_sized_by_nms_in_dimension_0_is_found_too(tmp_path: Path) -> None:
    """The exporter names dimension 0 of every output `batch`; NMS-selected boxes [N, 4] carry
    that name too, and must still be found out."""
    import onnx
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["selected"], name="the_nms"),
         helper.make_node("Constant", [], ["two"], value=helper.make_tensor("two", onnx.TensorProto.INT64, [1], [2])),
         helper.make_node("Gather", ["selected", "two"], ["index"], axis=1),
         helper.make_node("Squeeze", ["index"], ["flat"]),
         helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("zero", onnx.TensorProto.INT64, [1], [0])),
         helper.make_node("Squeeze", ["boxes", "zero"], ["all_boxes"]),
         helper.make_node("Gather", ["all_boxes", "flat"], ["kept"], axis=0)],
        "g", [helper.make_tensor_value_info("boxes", onnx.TensorProto.FLOAT, [1, 16, 4]),
              helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, [1, 1, 16])],
        [helper.make_tensor_value_info("kept", onnx.TensorProto.FLOAT, ["batch", 4])])
    path = tmp_path / "nms0.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    from harness.backends.trt.build import data_dependent_outputs

    assert data_dependent_outputs(path) == {"kept": "'the_nms' (NonMaxSuppression)"}
