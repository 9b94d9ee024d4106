"""The model families people deploy (tests/zoo.py), each built by the test itself: export,
golden, compare in every precision on each CPU engine, and a TensorRT-for-RTX plan in every
precision. Each family once failed somewhere in that chain; the checks below name where."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.errors import ArtifactError, ExportError, UnsupportedModel
from harness.sources import ModelRequest
from harness.workspace import Workspace
from tests.zoo import FAMILIES, VOCAB, write_detector

PRECISIONS = ["fp32", "fp16", "int8"]
# What a CPU engine cannot take, and the error that says so (the README's table has the same).
UNSUPPORTED = {("bigru_text", "openvino"): "cannot convert Loop"}
# TensorRT for RTX 1.7 has no NMS implementation (datacenter TensorRT has INMSLayer): its build says so.
NO_RTX_PLAN = {n: r"NonMaxSuppression\S* has no runners that implement it" for n in ("ssd", "ssd_per_image")}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("tensorflow", reason="tensorflow not importable")
    root = tmp_path_factory.mktemp("zoo")
    paths = {name: family.save(root) for name, family in FAMILIES.items()}
    workspace = Workspace(root / "artifacts", root / "golden", quiet=True)
    requests = {name: ModelRequest.of(str(paths[name]), FAMILIES[name].inputs) for name in FAMILIES}
    return {"root": root, "workspace": workspace, "requests": requests}


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_passes_golden_compare_in_every_precision(name: str, backend: str, zoo: dict[str, Any]) -> None:
    if backend == "openvino":
        pytest.importorskip("openvino", reason="openvino not importable")
    workspace: Workspace = zoo["workspace"]
    request = zoo["requests"][name]
    policy = FAMILIES[name].policy()  # detectors and the segmenter: judged as what they are
    if (name, "golden") not in zoo:  # one golden per family, whichever backend comes first
        workspace.write_golden(request, policy=policy)
        zoo[(name, "golden")] = True
    expected = UNSUPPORTED.get((name, backend))
    if expected:  # said, as a skip of that backend, not a crash of the whole compare
        comparison = workspace.compare(request, [backend], ["fp32"])
        assert not comparison.results and len(comparison.skipped) == 1
        assert expected in comparison.skipped[0][2], comparison.skipped
        with pytest.raises(UnsupportedModel, match=expected):
            workspace.engine(request, backend, "fp32").runner.activate()
        return
    comparison = workspace.compare(request, [backend], PRECISIONS, policy)
    assert {(r.backend, r.precision) for r in comparison.results} == {(backend, p) for p in PRECISIONS}
    task = {o for o, table in FAMILIES[name].outputs.items() if "detections" in table or "segmentation" in table}
    assert all(r.output in task for r in comparison.results) if task else True  # one verdict, not an array's
    failed = {r.precision for r in comparison.results if not r.passed}
    if backend == "openvino" and failed == {"int8"} and not _has_vnni():
        # Measured on an AVX2-only AMD EPYC: OpenVINO's int8 lstm_text at cosine 0.71 and se_swish at
        # 0.30 (0.99+ with VNNI); the detectors matched 0.86 (ssd) and 0.78 (ssd_per_image) of their
        # boxes, against 0.97 and 0.955 on an Intel Xeon with VNNI and AMX (the same int8 files).  The harness reports that engine as failing, which is right; this
        # test, which asserts that the zoo passes, cannot require it of such a CPU.
        pytest.xfail(f"no VNNI on this CPU: OpenVINO's int8 kernels are off here ({comparison})")
    assert comparison.passed, str(comparison)


def _has_vnni() -> bool:
    from harness.machine import cpu_info

    return any("vnni" in flag for flag in cpu_info().get("speed_flags", []))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_builds_a_tensorrt_rtx_plan_in_every_precision(name: str, zoo: dict[str, Any]) -> None:
    pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx not importable")
    workspace: Workspace = zoo["workspace"]
    if name in NO_RTX_PLAN:  # TensorRT for RTX's own refusal, naming the node, not the harness's
        with pytest.raises(ArtifactError, match=NO_RTX_PLAN[name]):
            workspace.plan(zoo["requests"][name], "tensorrt_rtx", "fp32")
        return
    for precision in PRECISIONS:
        plan = workspace.plan(zoo["requests"][name], "tensorrt_rtx", precision)
        assert plan.path.stat().st_size > 10_000, (precision, plan.path)


def test_exact_gelu_exports_through_the_erfc_rewrite(zoo: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(zoo["workspace"].onnx(zoo["requests"]["bert_tiny"]).path))
    ops = {n.op_type for n in model.graph.node}
    assert "Erf" in ops and "Erfc" not in ops


def test_integer_inputs_get_the_range_of_the_table_they_index(zoo: dict[str, Any]) -> None:
    workspace: Workspace = zoo["workspace"]
    bert = {t.name: t for t in workspace.onnx(zoo["requests"]["bert_tiny"]).spec.inputs}
    assert (bert["input_ids"].values, bert["input_ids"].values_from) == ((0, VOCAB), "embedding table")
    assert bert["token_type_ids"].values == (0, 2)  # a 2-row table: token types 0 and 1 only
    assert bert["attention_mask"].values is None  # no table: a mask, fed 0/1
    assert bert["input_ids"].ranges[1] == (1, 16, 32)  # from --input input_ids:?x1/16/32
    feed = workspace.onnx(zoo["requests"]["bert_tiny"]).spec.random_feed(64, seed=0)
    assert feed["input_ids"].shape == (64, 16) and feed["input_ids"].max() < VOCAB
    assert set(np.unique(feed["token_type_ids"])) == {0, 1} and set(np.unique(feed["attention_mask"])) == {0, 1}
    lstm = workspace.onnx(zoo["requests"]["lstm_text"]).spec.inputs[0]
    assert lstm.values == (0, VOCAB)


def test_int8_leaves_lookups_masks_and_the_masked_softmax_unquantized(zoo: dict[str, Any]) -> None:
    import onnx

    workspace: Workspace = zoo["workspace"]
    model, _ = workspace.variant(zoo["requests"]["bert_tiny"], "int8", target="tensorrt")
    graph = onnx.load(str(model.path)).graph
    producers = {o: n for n in graph.node for o in n.output}
    gathers = [n for n in graph.node if n.op_type == "Gather" and "embeddings" in n.name]
    assert len(gathers) == 2
    for node in gathers:  # the table is the float initializer, not a dequantized int8 one
        assert node.input[0] not in producers or producers[node.input[0]].op_type != "DequantizeLinear"
    softmax = next(n for n in graph.node if n.op_type == "Softmax")
    assert producers[softmax.input[0]].op_type != "DequantizeLinear"
    assert any(n.op_type == "DequantizeLinear" for n in graph.node)  # and the rest is int8


def test_tensorrt_needs_a_range_for_a_dynamic_sequence_length(zoo: dict[str, Any]) -> None:
    pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx not importable")
    bare = ModelRequest.of(zoo["requests"]["bert_tiny"].model)  # no --input ranges
    with pytest.raises(ExportError, match=r"input 'attention_mask' .* dimension 1 is dynamic .* "
                                          r"--input attention_mask:\?x1\.\.128"):
        zoo["workspace"].plan(bare, "tensorrt_rtx", "fp32")


def test_a_detector_whose_output_size_depends_on_the_data(zoo: dict[str, Any]) -> None:
    """Runs on ONNX Runtime against TensorFlow. The harness no longer refuses its data-dependent
    output (the TensorRT runner takes it through an IOutputAllocator); TensorRT for RTX 1.7 has no
    NMS implementation and says so itself, naming the node."""
    workspace: Workspace = zoo["workspace"]
    request = ModelRequest.of(str(write_detector(zoo["root"], combined=False)))
    workspace.write_golden(request)
    comparison = workspace.compare(request, ["onnxruntime"], ["fp32"])
    assert comparison.passed, str(comparison)
    pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx not importable")
    with pytest.raises(ArtifactError, match=r"tensorrt_rtx could not build a plan: .*NonMaxSuppression\S* has no "
                                            r"runners that implement it") as refused:
        workspace.plan(request, "tensorrt_rtx", "fp32")
    assert "depends on the data" not in str(refused.value)


def test_model_paths_are_the_users_files(zoo: dict[str, Any]) -> None:
    paths = [Path(r.model) for r in zoo["requests"].values()]
    assert {p.suffix for p in paths} == {".keras", ""}  # Keras files and a SavedModel directory
    assert all(p.exists() for p in paths)


@pytest.mark.parametrize("name", [n for n, f in FAMILIES.items() if f.write.__name__ == "_save_keras"])
def test_the_keras_families_also_export_as_tf2_savedmodels(name: str, zoo: dict[str, Any]) -> None:
    """The same model handed over as a TF2 SavedModel (`model.export`) instead of a .keras
    file: its own signature names, the same path through export, golden and every precision."""
    from tests.zoo import _export_saved_model

    family = FAMILIES[name]
    path = _export_saved_model(family.build(), zoo["root"] / "saved")
    request = ModelRequest.of(str(path), family.inputs)
    workspace: Workspace = zoo["workspace"]
    workspace.write_golden(request)
    comparison = workspace.compare(request, ["onnxruntime"], PRECISIONS)
    assert comparison.passed, str(comparison)
    assert {r.precision for r in comparison.results} == set(PRECISIONS)
