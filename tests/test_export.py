"""The export's lean path (tf2onnx without its optimizers' deep copies, fresh node protos per
rewrite: InceptionV3's export went from 7.9 GB to 2.8 GB) must be the path taken: a failure
there falls back to tf2onnx's default silently but for the record, so the record is checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("tensorflow", reason="tensorflow not importable")
pytest.importorskip("tf2onnx", reason="tf2onnx not importable")


def test_the_lean_export_path_succeeds_and_leaves_tf2onnx_as_it_was(tmp_path: Path) -> None:
    from tf2onnx import graph

    from harness.export import CATCH_ERRORS, export_onnx
    from harness.sources import Frozen, ModelRequest
    from harness.workspace import Workspace

    frozen = Workspace(artifacts=tmp_path / "a", quiet=True).frozen(ModelRequest("digits"))
    before = (os.environ.get(CATCH_ERRORS), graph.Node.update_proto)
    record = export_onnx(Frozen(frozen.graph_path.read_bytes(), frozen.spec), tmp_path / "digits.onnx")
    assert "tf2onnx_retried_with_copies" not in record, record["tf2onnx_retried_with_copies"]
    assert (os.environ.get(CATCH_ERRORS), graph.Node.update_proto) == before  # env and patch restored
    import onnx

    model = onnx.load(str(tmp_path / "digits.onnx"))
    assert [i.name for i in model.graph.input] == frozen.spec.input_names and len(model.graph.node) > 5


def _eyelike_model(path: Path, k: int, dtype: int | None, cols: int | str = "M", opset: int = 17) -> Path:
    """x (N, M) float -> y = x + EyeLike(x, k) (cast back to float where `dtype` is another type)."""
    import onnx
    from onnx import helper

    attrs = {"k": k, **({"dtype": dtype} if dtype is not None else {})}
    nodes = [helper.make_node("EyeLike", ["x"], ["eye"], name="the_eye", **attrs)]
    if dtype not in (None, onnx.TensorProto.FLOAT):
        nodes.append(helper.make_node("Cast", ["eye"], ["eye_f"], to=onnx.TensorProto.FLOAT))
    nodes.append(helper.make_node("Add", ["x", nodes[-1].output[0]], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", cols])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", cols])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def test_eyelike_below_opset_15_is_left_as_it_is(tmp_path: Path) -> None:
    """The replacement needs opset 15 (CastLike, Unsqueeze's axes input): an older export keeps
    its EyeLike and stays valid, rather than every backend losing the model."""
    import onnx

    from harness.rewrite import rewrite_onnx_for_tensorrt

    model = onnx.load(str(_eyelike_model(tmp_path / "eye13.onnx", 1, None, opset=13)))
    assert rewrite_onnx_for_tensorrt(model) == {}
    assert model.graph.node[0].op_type == "EyeLike"
    onnx.checker.check_model(model, full_check=True)


@pytest.mark.parametrize(("k", "dtype"), [(0, None), (2, 6), (-1, 1)])  # dtype: none (x's), int32, float
def test_eyelike_is_rewritten_to_the_same_values_at_every_shape(tmp_path: Path, k: int, dtype: int | None) -> None:
    """tf2onnx's CombinedNonMaxSuppression emits EyeLike, which TensorRT for RTX's parser lacks:
    the export rewrites it from x's runtime shape, value for value, at shapes the rewrite never saw."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from harness.rewrite import rewrite_onnx_for_tensorrt

    path = _eyelike_model(tmp_path / "eye.onnx", k, dtype)
    model = onnx.load(str(path))
    assert rewrite_onnx_for_tensorrt(model) == {"EyeLike": 1}
    assert not any(n.op_type == "EyeLike" for n in model.graph.node)
    onnx.checker.check_model(model, full_check=True)
    original = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rewritten = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for shape in [(3, 3), (2, 5), (6, 4), (1, 1)]:
        x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(rewritten.run(None, {"x": x})[0], original.run(None, {"x": x})[0])


def test_an_eyelike_model_builds_a_tensorrt_plan_once_rewritten(tmp_path: Path) -> None:
    pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx not importable")
    import onnx

    from harness.backends.trt.build import BuildOptions, build_plan
    from harness.errors import ExportError
    from harness.rewrite import rewrite_onnx_for_tensorrt
    from harness.spec import ModelSpec, TensorSpec

    path = _eyelike_model(tmp_path / "eye.onnx", 1, None, cols=4)
    spec = ModelSpec("eye", (TensorSpec("x", "float32", (None, 4)),), (TensorSpec("y", "float32", (None, 4)),))
    with pytest.raises(ExportError, match="EyeLike"):  # what the rewrite is for
        build_plan("tensorrt_rtx", path, spec, BuildOptions())
    model = onnx.load(str(path))
    rewrite_onnx_for_tensorrt(model)
    fixed = tmp_path / "fixed.onnx"
    onnx.save(model, str(fixed))
    plan, _ = build_plan("tensorrt_rtx", fixed, spec, BuildOptions())
    assert len(plan) > 1000
