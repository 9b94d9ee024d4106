"""Property tests: ONNX Runtime agrees with live TensorFlow on random batch sizes and inputs."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.compare import DEFAULT_TOLERANCES, compare
from harness.sources import ModelRequest
from harness.workspace import Workspace

pytest.importorskip("tensorflow", reason="tensorflow not importable")
pytest.importorskip("onnxruntime", reason="onnxruntime not importable")


@pytest.fixture(scope="module")
def runners(request: pytest.FixtureRequest, harness_workspace: Workspace) -> Iterator[tuple]:
    model = ModelRequest.of(request.param)
    with harness_workspace.tf_runner(model) as tf, harness_workspace.ort_runner(model) as ort:
        yield tf, ort


def _feed(spec, batch: int, seed: int, low: float, high: float) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    return {t.name: rng.uniform(low, high, (batch, *t.shape[1:])).astype(t.dtype) for t in spec.inputs}


@pytest.mark.parametrize("runners", ["digits"], indirect=True)
@settings(max_examples=25)
@given(batch=st.integers(1, 64), seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([0.0, 0.5, 1.0, 4.0]))
def test_digits_agrees_with_tensorflow(runners: tuple, batch: int, seed: int, scale: float) -> None:
    tf, ort = runners
    feed = _feed(tf.spec, batch, seed, 0.0, scale)
    comparison = compare(ort.infer(feed), tf.infer(feed), DEFAULT_TOLERANCES["fp32"], "onnxruntime", "fp32")
    assert comparison.passed, str(comparison)


@pytest.mark.slow
@pytest.mark.parametrize("runners", ["inception_v3"], indirect=True)
@settings(max_examples=4)
@given(batch=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_inception_v3_agrees_with_tensorflow(runners: tuple, batch: int, seed: int) -> None:
    tf, ort = runners
    feed = _feed(tf.spec, batch, seed, -1.0, 1.0)
    comparison = compare(ort.infer(feed), tf.infer(feed), DEFAULT_TOLERANCES["fp32"], "onnxruntime", "fp32")
    assert comparison.passed, str(comparison)
