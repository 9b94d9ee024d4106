"""The reference's own noise floor (harness.floor): measured when a golden is written, stored
beside it, and used so that an engine is never called broken for what TensorFlow itself
cannot hold steady, while a broken engine on a well-conditioned model still fails."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.compare import DEFAULT_TOLERANCES, compare_output, error_stats
from harness.floor import FLOOR_SLACK, OutputFloor, measure_floor
from harness.sources import ModelRequest
from harness.workspace import Workspace

FP32 = DEFAULT_TOLERANCES["fp32"]


def _floor(error: np.ndarray, cosine: float = 1.0) -> OutputFloor:
    return OutputFloor("y", error.astype(np.float32), np.full(len(error), cosine))


def test_a_floor_within_the_tolerance_leaves_a_failure_a_failure() -> None:
    ref = np.linspace(-1, 1, 20, dtype=np.float32).reshape(2, 10)
    steady = _floor(np.full(ref.shape, 1e-7))
    off = ref + np.float32(0.01)
    r = compare_output("y", off, ref, FP32, floor=steady)
    assert r.verdict == "FAIL" and not r.unstable and not r.passed


def test_an_unstable_floor_excuses_an_engine_within_it_and_no_further() -> None:
    ref = np.linspace(-1, 1, 20, dtype=np.float32).reshape(2, 10)
    shaky = _floor(np.full(ref.shape, 0.01), 0.999)  # fails fp32's atol 5e-4 itself, everywhere
    within = compare_output("y", ref + np.float32(0.02), ref, FP32, floor=shaky)  # 2x the floor
    assert within.failures and within.unstable and within.within_floor
    assert within.verdict == "UNSTABLE" and within.passed
    assert "reference unstable: its own max error" in str(within) and "classes = true" in str(within)
    beyond = compare_output("y", ref + np.float32(0.01 * FLOOR_SLACK * 3), ref, FP32, floor=shaky)
    assert beyond.unstable and not beyond.within_floor and beyond.verdict == "FAIL"
    assert "NOT within" in str(beyond)
    broken = compare_output("y", np.full(ref.shape, np.nan, np.float32), ref, FP32, floor=shaky)
    assert broken.verdict == "FAIL"  # a non-finite output is never the reference's noise
    assert json.loads(json.dumps(within.record()))["verdict"] == "UNSTABLE"


def test_one_unsteady_element_excuses_that_element_only() -> None:
    """A reference unsteady in one element of one sample (an argmax, a threshold) does not excuse
    an engine that is off everywhere."""
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((32, 10)).astype(np.float32)
    alternative = ref.copy()
    alternative[3, 4] += np.float32(0.5)  # what one correct alternative computed
    floor = OutputFloor("y", np.maximum(np.abs(alternative - ref), 1e-7).astype(np.float32),
                        np.asarray(error_stats(alternative, ref).cosine_per_sample))
    jumped = ref.copy()
    jumped[3, 4] += np.float32(0.4)  # where the reference itself jumps: excused
    assert compare_output("y", jumped, ref, FP32, floor=floor).verdict == "UNSTABLE"
    off = ref * np.float32(1.05)  # 5% off on every element: not excused
    assert compare_output("y", off, ref, FP32, floor=floor).verdict == "FAIL"
    # An integer output (class ids) is never excused, whatever its floor.
    ids = np.arange(32, dtype=np.int64)
    r = compare_output("ids", ids + 20, ids, FP32, floor=OutputFloor("ids", np.full(32, 7, np.float32), np.ones(32)))
    assert r.unstable and r.verdict == "FAIL"
    # A top-1 class changed only where an alternative changed it too.
    classes = DEFAULT_TOLERANCES["int8"]
    kept = np.ones(32, bool)
    kept[5] = False
    top = OutputFloor("y", np.full(ref.shape, 1e-7, np.float32), np.ones(32), kept)
    def swap_top_two(a: np.ndarray, i: int) -> np.ndarray:  # another top-1 class, the cosine barely moved
        a = a.copy()
        first, second = np.argsort(-a[i])[:2]
        a[i, first], a[i, second] = a[i, second], a[i, first]
        return a

    flipped, elsewhere = swap_top_two(ref, 5), swap_top_two(ref, 6)
    assert not top.holds(elsewhere, ref, classes, classes=True) and top.holds(flipped, ref, classes, classes=True)


def test_measure_floor_sees_a_computation_that_cancels_and_not_one_that_does_not() -> None:
    rng = np.random.default_rng(0)
    x = {"x": rng.standard_normal((8, 16)).astype(np.float32)}
    w = rng.standard_normal((16, 4)).astype(np.float32)
    big = (1e8 * rng.standard_normal((16, 1)) @ np.ones((1, 4))).astype(np.float32)

    def steady(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": np.tanh(feed["x"] @ w)}

    def cancelling(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        logits = feed["x"] @ (big + w) - feed["x"] @ big  # mathematically x @ w
        return {"y": logits}

    floors, ran = measure_floor(steady, x, steady(x), ())
    calm = floors["y"]
    assert ran == ["the samples one at a time", "float inputs one ulp up", "one ulp down"]
    assert calm.max_abs < 1e-5 and calm.cosine > 0.9999999 and calm.cosine_per_sample.shape == (8,)
    wild = measure_floor(cancelling, x, cancelling(x), ())[0]["y"]
    assert wild.max_abs > 1.0, wild.summary()  # rounding of ~1e8 dwarfs values of ~4


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("tensorflow", reason="tensorflow not importable")
    pytest.importorskip("onnxruntime", reason="onnxruntime not importable")
    from tests.models import write_cancelling_softmax_pb, write_frozen_pb

    root = tmp_path_factory.mktemp("floor_models")
    return {"steady": write_frozen_pb(root), "cancelling": write_cancelling_softmax_pb(root)}


def test_a_well_conditioned_model_has_a_floor_of_a_few_ulps_and_stays_strict(
        models: dict[str, Path], tmp_workspace: Workspace, tmp_path: Path) -> None:
    from harness.backends.onnxrt import OrtRunner
    from tests.models import with_changed_weight

    request = ModelRequest.of(str(models["steady"]), inputs=["x"], outputs=["y"])
    path, warnings = tmp_workspace.write_golden(request)
    assert not [w for w in warnings if "unstable" in w], warnings
    meta = json.loads((path / "meta.json").read_text())
    figures = meta["floor"]["outputs"]["y"]
    assert 0 <= figures["max_abs"] < 1e-5, figures  # tanh of a 5-term product: a few ulps
    golden = tmp_workspace.golden(request)
    assert golden.floors is not None and golden.floors["y"].abs_error.shape == golden.outputs["y"].shape
    clean = tmp_workspace.compare(request, ["onnxruntime"], ["fp32"])
    assert [r.verdict for r in clean.results] == ["PASS"] and not clean.results[0].unstable
    # Negative control: the engine's weights 1% off still fail, floor or not.
    onnx = tmp_workspace.onnx(request)
    broken = with_changed_weight(onnx.path, tmp_path / "broken.onnx", lambda m: m.graph.initializer[0], lambda w: w * 1.01)
    with OrtRunner(broken, onnx.spec) as runner:
        checked = golden.check(runner, FP32)
    assert [r.verdict for r in checked.results] == ["FAIL"] and not checked.passed, str(checked)


def test_an_ill_conditioned_reference_is_reported_unstable_not_an_engine_failure(
        models: dict[str, Path], tmp_workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    request = ModelRequest.of(str(models["cancelling"]), inputs=["x"], outputs=["probs"])
    _, warnings = tmp_workspace.write_golden(request)
    assert any("output 'probs': reference unstable under the fp32" in w for w in warnings), warnings
    compared = tmp_workspace.compare(request, ["onnxruntime"], ["fp32"])
    (result,) = compared.results
    assert result.unstable and result.verdict != "FAIL" and compared.passed, str(result)
    assert any("reference unstable" in w for w in compared.warnings)
    # The CLI says the same, and exits 0: the engine is not what is wrong.
    args = [str(models["cancelling"]), "--input", "x", "--output", "probs", "--artifacts",
            str(tmp_workspace.store.root), "--golden-dir", str(tmp_workspace.golden_dir)]
    assert main(["compare", *args]) == 0
    out = capsys.readouterr()
    assert "reference unstable" in out.out + out.err and " FAIL " not in out.out


def test_debug_prints_the_floor_and_fix_refuses_an_output_unstable_in_fp32(
        models: dict[str, Path], tmp_workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    request = ModelRequest.of(str(models["cancelling"]), inputs=["x"], outputs=["probs"])
    tmp_workspace.write_golden(request)
    args = [str(models["cancelling"]), "--input", "x", "--output", "probs", "--artifacts",
            str(tmp_workspace.store.root), "--golden-dir", str(tmp_workspace.golden_dir), "--precision", "fp16"]
    main(["debug", *args])
    out = capsys.readouterr().out
    assert "reference's own noise floor per output" in out and "probs: max" in out and "UNSTABLE in fp32" in out
    # fp16 fails beyond the floor (the 1e8 weights clip to float16's 65504), on an output that is
    # unstable in fp32 itself: --fix refuses to search, saying why, instead of trying 12 mixed models.
    assert main(["debug", *args, "--fix"]) == 2
    err = capsys.readouterr().err
    assert "not searching for a mixed fp16 model" in err and "does not hold output(s) probs steady" in err


def test_floor_only_adds_a_floor_and_leaves_the_golden_as_it_was(models: dict[str, Path], tmp_workspace: Workspace,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main
    from harness.errors import GoldenError

    request = ModelRequest.of(str(models["steady"]), inputs=["x"], outputs=["y"])
    path, _ = tmp_workspace.write_golden(request)
    kept = {name: (path / name).read_bytes() for name in ("inputs.npz", "outputs.npz")}
    (path / "floor.npz").unlink()  # a golden from before floors
    meta = json.loads((path / "meta.json").read_text())
    del meta["floor"]
    (path / "meta.json").write_text(json.dumps(meta))
    args = [str(models["steady"]), "--input", "x", "--output", "y", "--artifacts", str(tmp_workspace.store.root),
            "--golden-dir", str(tmp_workspace.golden_dir)]
    assert main(["golden", *args, "--floor-only"]) == 0
    assert "wrote the reference's noise floor into" in capsys.readouterr().out
    assert {name: (path / name).read_bytes() for name in kept} == kept  # inputs and outputs untouched
    floor = json.loads((path / "meta.json").read_text())["floor"]
    assert "TensorFlow run again now" in floor["how"] and floor["outputs"]["y"]["max_abs"] < 1e-5
    assert Workspace(tmp_workspace.store.root, tmp_workspace.golden_dir, quiet=True).golden(request).floors is not None
    # A floor.npz that does not fit its outputs is refused with the command that measures it again.
    import numpy as np

    np.savez(path / "floor.npz", y=np.zeros(3, np.float32))
    with pytest.raises(GoldenError, match=r"no floor of output 'y'.*--floor-only"):
        Workspace(tmp_workspace.store.root, tmp_workspace.golden_dir, quiet=True).golden(request)
