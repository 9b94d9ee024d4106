"""fp16 and int8 variants of the built-in models: golden checks under the default policy, the
int8 graph in the form TensorRT takes, the calibration cache, negative controls that must
fail, and accuracy on the labeled digits."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.backends.onnxrt import OrtRunner
from harness.errors import ArtifactError, HarnessError, InputError
from harness.policy import TolerancePolicy
from harness.precision.calibration import CalibrationData, load_calibration
from harness.sources import ModelRequest
from harness.workspace import CalibrationOptions, Workspace

pytest.importorskip("tensorflow", reason="tensorflow not importable")
pytest.importorskip("onnxruntime", reason="onnxruntime not importable")
pytest.importorskip("onnxconverter_common", reason="onnxconverter-common not importable")

BUILTINS = ["digits", pytest.param("inception_v3", marks=pytest.mark.slow)]
DEFAULT_POLICY = TolerancePolicy()
# This repository's policy: the defaults, with digits tightened and InceptionV3's int8 judged by
# cosine only (its random-weight logits are near-ties; pyproject.toml has the measurements).
REPO_POLICY = TolerancePolicy.from_pyproject(Path(__file__).resolve().parents[1] / "pyproject.toml")


@pytest.mark.parametrize("precision", ["fp16", "int8"])
@pytest.mark.parametrize("name", BUILTINS)
def test_variant_matches_golden_under_the_repository_policy(name: str, precision: str,
                                                           harness_workspace: Workspace) -> None:
    request = ModelRequest.of(name)
    golden = harness_workspace.golden(request)
    engine = harness_workspace.engine(request, "onnxruntime", precision)
    with engine.runner:
        comparison = golden.check(engine.runner, REPO_POLICY)
    print(comparison)
    assert comparison.passed, str(comparison)
    assert all(r.precision == precision for r in comparison.results)


@pytest.mark.parametrize("name", BUILTINS)
def test_tensorrt_form_int8_matches_golden_under_the_repository_policy(name: str,
                                                                      harness_workspace: Workspace) -> None:
    """The symmetric int8 file TensorRT builds, run by ONNX Runtime: what CI can check of it."""
    request = ModelRequest.of(name)
    model, _ = harness_workspace.variant(request, "int8", target="tensorrt")
    with OrtRunner(model.path, model.spec, "int8", exact_qdq=True) as runner:
        comparison = harness_workspace.golden(request).check(runner, REPO_POLICY)
    assert comparison.passed, str(comparison)


def test_repository_policy_tightens_digits_int8(harness_workspace: Workspace) -> None:
    policy = TolerancePolicy.from_pyproject(Path("pyproject.toml"))
    assert policy.tolerance("int8", "digits", "logits").min_top1 == 0.99
    request = ModelRequest.of("digits")
    engine = harness_workspace.engine(request, "onnxruntime", "int8")
    with engine.runner:
        comparison = harness_workspace.golden(request).check(engine.runner, policy)
    assert comparison.passed, str(comparison)


# --- the int8 graph is what TensorRT accepts ------------------------------------------------


def test_int8_graph_has_symmetric_qdq_with_per_channel_weights(harness_workspace: Workspace) -> None:
    import onnx
    from onnx import numpy_helper

    model, calibration = harness_workspace.variant(ModelRequest.of("digits"), "int8", target="tensorrt")
    assert calibration is not None and (model.path.parent / "calibration.json").is_file()
    graph = onnx.load(str(model.path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    quantize = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    dequantize = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    assert quantize and dequantize
    produced_by_q = {n.output[0] for n in quantize}
    # Every activation Q feeds a DQ: explicit pairs, nothing left quantized at the end.
    assert produced_by_q <= {n.input[0] for n in dequantize}
    for node in quantize + dequantize:
        zero_point = inits[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), f"{node.name}: zero point {zero_point}"
    # Weights: DQ of an int8 initializer, one scale per output channel of each Conv/MatMul.
    consumers = {i: n for n in graph.node if n.op_type in ("Conv", "MatMul", "Gemm") for i in n.input}
    weight_dqs = [n for n in dequantize if n.input[0] in inits and n.output[0] in consumers]
    assert len(weight_dqs) == 4, [n.name for n in weight_dqs]  # conv1, conv2, fc1, logits
    for node in weight_dqs:
        weight, scale = inits[node.input[0]], inits[node.input[1]]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        assert weight.dtype == np.int8
        assert scale.ndim == 1 and scale.size == weight.shape[axis] > 1, f"{node.name}: scale {scale.shape}"
    # Activations: one scalar scale per tensor.
    for node in quantize:
        assert inits[node.input[1]].size == 1, f"{node.name}: activation scale is not per-tensor"


# --- calibration cache ----------------------------------------------------------------------


@pytest.fixture
def fresh(tmp_path: Path) -> Workspace:
    """Its own artifact cache, the committed goldens."""
    return Workspace(tmp_path / "artifacts", quiet=True)


def test_calibration_is_reused_until_model_or_data_change(fresh: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    request = ModelRequest.of("digits")
    options = CalibrationOptions(samples=200)
    start = time.perf_counter()
    first = fresh.calibration(request, options)
    first_s = time.perf_counter() - start
    again = Workspace(fresh.store.root, quiet=True)  # a new process would see the same cache
    start = time.perf_counter()
    second = again.calibration(request, options)
    second_s = time.perf_counter() - start
    with capsys.disabled():
        print(f"\ncalibration of digits: first {first_s:.2f} s (calibrated), second {second_s:.2f} s (reused)")
    assert not first.reused and second.reused and second.table == first.table

    fewer = again.calibration(request, CalibrationOptions(samples=100))  # other data: recalibrates
    assert not fewer.reused and fewer.table != first.table
    assert json.loads(fewer.table.read_text()) != json.loads(first.table.read_text())
    method = again.calibration(request, CalibrationOptions(samples=200, method="percentile"))
    assert not method.reused


def test_changed_calibration_cache_is_recalibrated_not_trusted(fresh: Workspace) -> None:
    request = ModelRequest.of("digits")
    table = fresh.calibration(request, CalibrationOptions()).table
    original = table.read_text()
    table.write_text(original.replace("0.", "9.", 5))
    with pytest.warns(UserWarning, match="calibration.json changed since it was built; rebuilding"):
        redone = Workspace(fresh.store.root, quiet=True).calibration(request, CalibrationOptions())
    assert not redone.reused and redone.table.read_text() == original


def test_unreadable_calibration_table_is_an_error(tmp_path: Path) -> None:
    from harness.precision.int8 import check_table

    table = tmp_path / "calibration.json"
    table.write_text('{"data": {"conv1": ')
    with pytest.raises(ArtifactError, match=r"calibration\.json: not a readable calibration table.*delete it"):
        check_table(table)


# --- calibration data ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_spec(harness_workspace: Workspace) -> object:
    return harness_workspace.frozen(ModelRequest.of("digits")).spec


def test_calibration_from_npy_npz_and_images(digits_spec: object, tmp_path: Path) -> None:
    from PIL import Image

    x = np.random.default_rng(0).random((5, 8, 8, 1), dtype=np.float32)
    np.save(tmp_path / "cal.npy", x)
    np.savez(tmp_path / "cal.npz", image=x)
    a = load_calibration(digits_spec, tmp_path / "cal.npy", None, 3)  # type: ignore[arg-type]
    b = load_calibration(digits_spec, tmp_path / "cal.npz", None, 3)  # type: ignore[arg-type]
    assert a.samples == b.samples == 3 and a.digest() == b.digest()
    np.testing.assert_array_equal(a.feed["image"], x[:3])

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(np.full((16, 16), 255 * i, np.uint8)).save(images / f"{i}.png")
    c = load_calibration(digits_spec, images, None, 10, preprocess="unit")  # type: ignore[arg-type]
    assert c.feed["image"].shape == (2, 8, 8, 1)
    assert c.feed["image"].min() == 0.0 and c.feed["image"].max() == 1.0  # resized, then preprocessed
    assert "2 of 2 samples" in c.description


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((4, 8, 8), np.float32), r"cal\.npy.*shape \(4, 8, 8\) given, the model takes \?x8x8x1"),
        (np.zeros((4, 8, 8, 1), np.float64), r"cal\.npy.*dtype float64 given, the model takes float32"),
        (np.zeros((0, 8, 8, 1), np.float32), r"cal\.npy: no samples"),
    ],
    ids=["shape", "dtype", "empty"],
)
def test_bad_calibration_arrays_are_named(digits_spec: object, tmp_path: Path, array: np.ndarray, message: str) -> None:
    np.save(tmp_path / "cal.npy", array)
    with pytest.raises(InputError, match=message):
        load_calibration(digits_spec, tmp_path / "cal.npy", None, 8)  # type: ignore[arg-type]


def test_bad_calibration_sources_are_named(digits_spec: object, tmp_path: Path) -> None:
    np.savez(tmp_path / "wrong.npz", pixels=np.zeros((2, 8, 8, 1), np.float32))
    with pytest.raises(InputError, match=r"wrong\.npz.*missing \['image'\]"):
        load_calibration(digits_spec, tmp_path / "wrong.npz", None, 8)  # type: ignore[arg-type]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: no images"):
        load_calibration(digits_spec, tmp_path / "empty", None, 8)  # type: ignore[arg-type]
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"a\.png: unreadable"):
        load_calibration(digits_spec, tmp_path / "broken", None, 8)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"missing\.npz: no such file"):
        load_calibration(digits_spec, tmp_path / "missing.npz", None, 8)  # type: ignore[arg-type]
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(InputError, match=r"bad\.npz: unreadable"):
        load_calibration(digits_spec, tmp_path / "bad.npz", None, 8)  # type: ignore[arg-type]


def test_bad_calibration_leaves_no_entry(fresh: Workspace, tmp_path: Path) -> None:
    np.save(tmp_path / "cal.npy", np.zeros((4, 8, 8), np.float32))
    with pytest.raises(HarnessError):
        fresh.variant(ModelRequest.of("digits"), "int8", CalibrationOptions(source=tmp_path / "cal.npy"))
    assert not (fresh.store.root / "calibration").exists() and not (fresh.store.root / "int8").exists()


# --- negative controls: broken variants fail the default policy ---------------------------


def _perturb_first_conv(src: Path, dst: Path, fraction: float) -> Path:
    from tests.models import with_changed_weight

    def first_conv_weight(model: Any) -> Any:
        conv = next(n for n in model.graph.node if n.op_type == "Conv")
        return next(i for i in model.graph.initializer if i.name == conv.input[1])

    noise = np.random.default_rng(0).standard_normal
    return with_changed_weight(src, dst, first_conv_weight, lambda w: w * (1 + fraction * noise(w.shape)))


@pytest.mark.parametrize("name", BUILTINS)
def test_fp16_with_perturbed_weights_fails(name: str, harness_workspace: Workspace, tmp_path: Path) -> None:
    from harness.precision.fp16 import convert_fp16

    request = ModelRequest.of(name)
    fp32 = harness_workspace.onnx(request)
    perturbed = _perturb_first_conv(fp32.path, tmp_path / "perturbed.onnx", 0.05)
    convert_fp16(perturbed, tmp_path / "fp16.onnx")
    with OrtRunner(tmp_path / "fp16.onnx", fp32.spec, "fp16") as runner:
        comparison = harness_workspace.golden(request).check(runner, DEFAULT_POLICY)
    assert not comparison.passed, str(comparison)
    assert "smallest atol that would have passed" in str(comparison)


@pytest.mark.parametrize("name", BUILTINS)
def test_int8_calibrated_on_zeros_fails(name: str, harness_workspace: Workspace, tmp_path: Path) -> None:
    from harness.precision.int8 import calibrate, quantize

    request = ModelRequest.of(name)
    fp32 = harness_workspace.onnx(request)
    golden = harness_workspace.golden(request)
    zeros = CalibrationData({k: np.zeros_like(v) for k, v in golden.inputs.items()}, "all zeros")
    calibrate(fp32.path, zeros, "minmax", tmp_path / "table.json")
    quantize(fp32.path, tmp_path / "table.json", "minmax", tmp_path / "int8.onnx")
    with OrtRunner(tmp_path / "int8.onnx", fp32.spec, "int8") as runner:
        comparison = golden.check(runner, REPO_POLICY)  # the policy that lets clean int8 pass must fail this
    assert not comparison.passed, str(comparison)
    assert any("cosine similarity" in f for r in comparison.results for f in r.failures)


# --- accuracy on labeled data (the MLPerf rule: >= 99% of fp32) ---------------------------


def test_digits_accuracy_per_precision(harness_workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    request = ModelRequest.of("digits")
    comparison = harness_workspace.compare(request, ["onnxruntime"], ["fp32", "fp16", "int8"], DEFAULT_POLICY)
    accuracy = {r.precision: r.accuracy for r in comparison.results}
    with capsys.disabled():
        print("\ndigits held-out top-1 accuracy: " + ", ".join(f"{p} {a:.4f}" for p, a in accuracy.items()))
    assert set(accuracy) == {"fp32", "fp16", "int8"} and all(a is not None for a in accuracy.values())
    fp32 = accuracy["fp32"]
    assert fp32 is not None and fp32 >= 0.95
    for precision in ("fp16", "int8"):
        value = accuracy[precision]
        assert value is not None and value >= 0.99 * fp32, f"{precision} accuracy {value:.4f} < 99% of fp32 {fp32:.4f}"


def test_accuracy_uses_the_labels() -> None:
    from harness.compare import compare_output
    from harness.policy import DEFAULT_TOLERANCES

    ref = np.eye(4, dtype=np.float32) * 5
    labels = np.array([0, 1, 2, 0])
    worse = ref.copy()
    worse[1] = [9, 0, 0, 0]
    r = compare_output("logits", worse, ref, DEFAULT_TOLERANCES["int8"], labels=labels, classes=True)
    assert r.reference_accuracy == 0.75 and r.accuracy == 0.5
    assert r.record()["accuracy"] == 0.5 and r.record()["tolerance"]["atol"] is None


def test_unknown_precision_is_a_usage_error(harness_workspace: Workspace) -> None:
    with pytest.raises(HarnessError, match="unknown precision 'int4'"):
        harness_workspace.variant(ModelRequest.of("digits"), "int4")


def test_second_variant_build_is_a_cache_hit(fresh: Workspace) -> None:
    request = ModelRequest.of("digits")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean rebuild must not warn
        built = [fresh.variant(request, p)[0] for p in ("fp16", "int8")]
    again = Workspace(fresh.store.root, quiet=True)
    reused = [again.variant(request, p)[0] for p in ("fp16", "int8")]
    assert not any(m.reused for m in built) and all(m.reused for m in reused)
    assert [m.path for m in built] == [m.path for m in reused]
