"""The built-in models against their committed goldens, the property that makes the
InceptionV3 goldens meaningful, and negative controls that prove the check can fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.compare import DEFAULT_TOLERANCES
from harness.sources import ModelRequest
from harness.workspace import Workspace

pytest.importorskip("tensorflow", reason="tensorflow not importable")
pytest.importorskip("onnxruntime", reason="onnxruntime not importable")

BUILTINS = ["digits", pytest.param("inception_v3", marks=pytest.mark.slow)]
FP32 = DEFAULT_TOLERANCES["fp32"]


@pytest.mark.parametrize("name", BUILTINS)
def test_onnxruntime_fp32_matches_golden(name: str, harness_workspace: Workspace) -> None:
    request = ModelRequest.of(name)
    golden = harness_workspace.golden(request)  # also proves the committed golden is not stale
    with harness_workspace.ort_runner(request) as runner:
        comparison = golden.check(runner, FP32)
    assert comparison.passed, str(comparison)


@pytest.mark.parametrize("name", BUILTINS)
def test_tensorflow_reproduces_golden(name: str, harness_workspace: Workspace) -> None:
    request = ModelRequest.of(name)
    golden = harness_workspace.golden(request)
    with harness_workspace.tf_runner(request) as runner:
        comparison = golden.check(runner, FP32)
    assert comparison.passed, str(comparison)


@pytest.mark.slow
def test_inception_v3_is_well_conditioned(harness_workspace: Workspace) -> None:
    """Seeded InceptionV3 with default batch-norm statistics gives logits that hardly depend on
    the input (std ~0.0016, one top-1 class for all inputs); with recomputed statistics the
    logits must vary across inputs and so must the top-1 class."""
    golden = harness_workspace.golden(ModelRequest.of("inception_v3"))
    logits = golden.outputs["logits"]
    assert logits.shape == (4, 1000)
    spread_across_inputs = float(logits.std(axis=0).mean())
    assert spread_across_inputs > 0.05, f"logits barely depend on the input (std across inputs {spread_across_inputs:.4f})"
    assert len(set(logits.argmax(1).tolist())) >= 2, f"same top-1 class for every input: {logits.argmax(1)}"


def test_digits_classifier_is_trained(harness_workspace: Workspace) -> None:
    golden = harness_workspace.golden(ModelRequest.of("digits"))
    assert golden.labels is not None and len(golden.labels) == 360
    accuracy = float(np.mean(golden.outputs["logits"].argmax(1) == golden.labels))
    # A trained 10-class CNN on held-out digits; chance is 0.1.
    assert accuracy >= 0.95, f"held-out accuracy {accuracy:.3f}"


def test_golden_store_is_small() -> None:
    size = sum(p.stat().st_size for p in Path("golden").rglob("*") if p.is_file())
    assert size < 5e6, f"golden/ is {size / 1e6:.1f} MB"


# --- negative controls: the comparison must be able to fail ----------------------------------


def _perturbed(onnx_path: Path, out: Path, factor: float) -> Path:
    """Copy of the model with its largest weight tensor scaled by `factor`."""
    from tests.models import with_changed_weight

    return with_changed_weight(onnx_path, out, lambda m: max(m.graph.initializer, key=lambda t: int(np.prod(t.dims))),
                               lambda w: w * factor)


@pytest.mark.parametrize("name", BUILTINS)
def test_perturbed_weight_fails_fp32(name: str, harness_workspace: Workspace, tmp_path: Path) -> None:
    from harness.backends.onnxrt import OrtRunner

    request = ModelRequest.of(name)
    model = harness_workspace.onnx(request)
    golden = harness_workspace.golden(request)
    with OrtRunner(_perturbed(model.path, tmp_path / "perturbed.onnx", 1.01), model.spec) as runner:
        comparison = golden.check(runner, FP32)
    assert not comparison.passed
    assert "abs error  max" in str(comparison) and "smallest atol that would have passed" in str(comparison)


@pytest.mark.parametrize("name", BUILTINS)
def test_wrongly_scaled_input_fails_fp32(name: str, harness_workspace: Workspace) -> None:
    """Inputs in 0..255 where the model expects its normalised range: the classic
    preprocessing bug."""
    from harness.compare import compare

    request = ModelRequest.of(name)
    golden = harness_workspace.golden(request)
    with harness_workspace.ort_runner(request) as runner:
        raw = {k: (v * np.float32(255)).astype(v.dtype) for k, v in golden.inputs.items()}
        comparison = compare(runner.infer(raw), golden.outputs, FP32, runner.backend, runner.precision)
    assert not comparison.passed, str(comparison)
