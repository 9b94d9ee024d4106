"""OpenVINO engines: every precision pinned, whatever the CPU, and the trap it exists to catch
(the CPU plugin's default bf16 on an "fp32" engine) caught by the golden check."""

from __future__ import annotations

from typing import Any

import pytest

from harness.policy import TolerancePolicy
from harness.sources import ModelRequest
from harness.workspace import Workspace

pytest.importorskip("openvino", reason="openvino not importable (pip install -e '.[openvino]')")
pytest.importorskip("tensorflow", reason="tensorflow not importable")
pytest.importorskip("onnxruntime", reason="onnxruntime not importable")

DIGITS = ModelRequest("digits")


def _bf16_cpu() -> None:
    from harness.backends.openvino import cpu_has_bf16

    has, flags = cpu_has_bf16()
    if not has:
        pytest.skip(f"this CPU has no bf16 units ({flags}): OpenVINO's default is f32 here, there is no trap")


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "bf16"])
def test_each_precision_is_pinned_and_passes_its_golden(harness_workspace: Workspace, precision: str) -> None:
    if precision == "bf16":
        _bf16_cpu()
    engine = harness_workspace.engine(DIGITS, "openvino", precision)
    # never the plugin's choice
    assert engine.runner.config()["INFERENCE_PRECISION_HINT"] == ("bf16" if precision == "bf16" else "f32")
    with engine.runner as runner:
        result = harness_workspace.golden(DIGITS).check(runner, TolerancePolicy())
    assert result.passed, str(result)


def test_the_default_precision_trap_fails_fp32s_policy(harness_workspace: Workspace) -> None:
    """Left on its default, OpenVINO runs an fp32 model in bf16 on this CPU: the fp32 golden check
    must fail it (digits: logits off by ~0.1 against fp32's 1e-4-scale tolerance)."""
    _bf16_cpu()
    from harness.backends.openvino import OpenVinoRunner

    engine = harness_workspace.engine(DIGITS, "openvino", "fp32")
    unpinned = OpenVinoRunner(engine.plan, engine.spec, "fp32", pin_precision=False)
    with unpinned as runner:
        assert "bfloat16" in str(runner._compiled.get_property("INFERENCE_PRECISION_HINT"))
        result = harness_workspace.golden(DIGITS).check(runner, TolerancePolicy())
    assert not result.passed, str(result)
    with engine.runner as runner:  # the same file, pinned: passes
        assert harness_workspace.golden(DIGITS).check(runner, TolerancePolicy()).passed


def test_a_bf16_engine_needs_bf16_units(monkeypatch: pytest.MonkeyPatch, harness_workspace: Workspace) -> None:
    import harness.backends.openvino as ov
    from harness.errors import BackendUnavailable

    monkeypatch.setattr(ov, "cpu_has_bf16", lambda: (False, "avx512_bf16 or amx_bf16"))
    engine = harness_workspace.engine(DIGITS, "openvino", "fp32")
    with pytest.raises(BackendUnavailable, match="bf16 needs a CPU with avx512_bf16 or amx_bf16"):
        ov.OpenVinoRunner(engine.plan, engine.spec, "bf16").activate()


def test_the_runner_is_rebuilt_from_its_recipe(harness_workspace: Workspace) -> None:
    """The serving worker makes runners from recipes in another process."""
    import numpy as np

    engine = harness_workspace.engine(DIGITS, "openvino", "int8")
    copy: Any = engine.runner.recipe().build()
    feed = engine.spec.random_feed(3, seed=1)
    with engine.runner as a, copy as b:
        assert type(b) is type(a) and b.precision == "int8"
        np.testing.assert_array_equal(a.infer(feed)["logits"], b.infer(feed)["logits"])


def test_an_engine_computing_in_another_precision_fails_naming_both(monkeypatch: pytest.MonkeyPatch,
                                                                    harness_workspace: Workspace) -> None:
    """The plugin answering in bf16 for an engine pinned to f32 is a failure, never a skip: a
    skip would let the run go green without the engine it names."""
    _bf16_cpu()
    import harness.backends.openvino as ov
    from harness.errors import BackendUnavailable, PrecisionMismatch

    engine = harness_workspace.engine(DIGITS, "openvino", "fp32")
    runner = ov.OpenVinoRunner(engine.plan, engine.spec, "fp32")
    monkeypatch.setattr(runner, "config", lambda: {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16"})
    with pytest.raises(PrecisionMismatch, match=r"pinned to f32, but the CPU plugin computes in \S*(bf16|bfloat16)") as caught:
        runner.activate()
    assert not isinstance(caught.value, BackendUnavailable)  # what the plugin turns into a skip
