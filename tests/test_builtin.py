"""The built-in models against their committed goldens, the property that makes the
InceptionV3 goldens meaningful, and negative controls that prove the check can fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.compare import DEFAULT_TOLERANCES
from harness.golden import BUILTIN_GOLDEN_DIR
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
    the input (std across inputs ~1e-4); with the statistics of real photos the logits must
    vary across inputs and so must the top-1 class, and the golden must raise no warning."""
    golden = harness_workspace.golden(ModelRequest.of("inception_v3"))
    assert golden.warnings(classes=["logits"]) == []
    logits = golden.outputs["logits"]
    assert logits.shape == (8, 1000)
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
    size = sum(p.stat().st_size for p in BUILTIN_GOLDEN_DIR.rglob("*") if p.is_file())
    assert size < 5e6, f"{BUILTIN_GOLDEN_DIR} is {size / 1e6:.1f} MB"


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


# --- the built-in models are the same bytes on every machine ---------------------------------

DIGEST_SCRIPT = """
import sys
import tensorflow as tf
threads = int(sys.argv[1])
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(threads)
from harness.artifacts import digest_bytes
from harness.sources.zoo import MODELS
for name in sys.argv[2:]:
    print(name, digest_bytes(MODELS[name]().freeze().graph_def))
"""

# Settings that change TensorFlow's float kernels the way another CPU does: the previous
# InceptionV3 recipe (batch-norm statistics computed at build time) gave a different frozen
# graph under ONEDNN_MAX_CPU_ISA=SSE41 than under the default ISA on the same machine.
# NPY_DISABLE_CPU_FEATURES does the same to numpy's SIMD dispatch (names it doesn't know are ignored).
NUMPY_SSE_ONLY = "X86_V3 X86_V4 AVX512_ICL AVX512_SPR AVX2 FMA3 AVX512F AVX512_SKX"
KERNEL_SETTINGS = [
    ("1", {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    ("2", {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "SSE41", "NPY_DISABLE_CPU_FEATURES": NUMPY_SSE_ONLY}),
    ("2", {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"}),
]


@pytest.mark.slow
def test_builtin_models_are_bit_reproducible_across_cpu_kernels(harness_workspace: Workspace) -> None:
    """The frozen graph of each built-in model has one digest under every thread count and
    oneDNN setting, equal to the committed golden's: nothing in it depends on float work done
    on the machine that builds it (InceptionV3's batch-norm statistics are committed data)."""
    import json
    import os
    import subprocess
    import sys

    names = ["digits", "inception_v3"]
    committed = {n: json.loads((BUILTIN_GOLDEN_DIR / n / "meta.json").read_text())["model_digest"] for n in names}
    assert {n: harness_workspace.frozen(ModelRequest.of(n)).digest for n in names} == committed
    procs = [
        subprocess.Popen([sys.executable, "-c", DIGEST_SCRIPT, threads, *names], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env})
        for threads, env in KERNEL_SETTINGS
    ]
    for (threads, env), proc in zip(KERNEL_SETTINGS, procs, strict=True):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        digests = dict(line.split() for line in out.splitlines() if line.strip())
        assert digests == committed, f"{threads} threads, {env}: {digests} != committed {committed}"


def test_calibration_data_are_never_the_golden_inputs() -> None:
    from harness.sources.zoo import MODELS

    for name, make in MODELS.items():
        model = make()
        golden_inputs = model.representative().feed
        calibration = model.calibration().feed
        assert calibration.keys() == golden_inputs.keys()
        for key in golden_inputs:
            seen = {sample.tobytes() for sample in golden_inputs[key]}
            shared = sum(sample.tobytes() in seen for sample in calibration[key])
            assert shared == 0, f"{name}: {shared} calibration samples are golden inputs"
