"""Detectors judged as detections (harness.detections): matched by IoU and class, so boxes in
another order pass, and a missed, moved, relabelled or extra box is named; declared in
[tool.harness]; end to end on a seeded SSD-style SavedModel, with a broken int8 that fails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.detections import DetectionOutputs, DetectionTolerance, compare_detections, iou_matrix
from harness.errors import UsageError
from harness.policy import TolerancePolicy

WHICH = DetectionOutputs("boxes", "scores", "classes", "valid")


def _detections() -> dict[str, np.ndarray]:
    """Two samples, padded to 4 rows: 3 and 2 valid detections."""
    boxes = np.zeros((2, 4, 4), np.float32)
    boxes[0, :3] = [[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 0.9], [0.1, 0.6, 0.4, 0.9]]
    boxes[1, :2] = [[0.2, 0.2, 0.6, 0.6], [0.0, 0.0, 0.1, 0.1]]
    scores = np.array([[0.9, 0.8, 0.7, 0], [0.95, 0.6, 0, 0]], np.float32)
    classes = np.array([[1, 2, 1, 0], [0, 2, 0, 0]], np.float32)
    return {"boxes": boxes, "scores": scores, "classes": classes, "valid": np.array([3, 2], np.int32)}


def test_iou_of_known_boxes() -> None:
    a = np.array([[0, 0, 2, 2]], np.float32)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [2, 0, 0, 2], [5, 5, 6, 6]], np.float32)
    assert iou_matrix(a, b)[0].tolist() == pytest.approx([1 / 7, 1.0, 1.0, 0.0])  # corners in either order


def test_the_same_detections_in_another_order_pass_and_padding_is_ignored() -> None:
    ref = _detections()
    shuffled = {k: v.copy() for k, v in ref.items()}
    for key in ("boxes", "scores", "classes"):
        shuffled[key][0, :3] = ref[key][0, [2, 0, 1]]
    shuffled["boxes"][1, 3] = [0.7, 0.7, 0.8, 0.8]  # beyond `valid`: not a detection
    judged = compare_detections(shuffled, ref, WHICH, DetectionTolerance())
    assert judged.passed and judged.matched == 1.0 and judged.ap == 1.0, judged.failures
    # Elementwise, the same arrays are far apart: what the detection comparison is for.
    assert np.abs(shuffled["boxes"] - ref["boxes"]).max() > 0.3


def test_missed_moved_relabelled_and_extra_boxes_are_named() -> None:
    ref = _detections()
    eng = {k: v.copy() for k, v in ref.items()}
    eng["classes"][0, 0] = 2  # relabelled
    eng["boxes"][0, 1] = [0.7, 0.7, 1.1, 1.1]  # moved: IoU ~0.14 with its reference box
    eng["valid"][1] = 1  # sample 1's second box missed
    eng["boxes"][1, 0] = [0.2, 0.2, 0.6, 0.61]
    judged = compare_detections(eng, ref, WHICH, DetectionTolerance())
    assert not judged.passed and judged.matched == pytest.approx(2 / 5)
    text = "\n".join(judged.lines())
    assert "sample 0, reference box 0 (class 1, score 0.900): relabelled: the engine's box 0 overlaps it" in text
    assert "sample 0, reference box 1 (class 2, score 0.800): moved: the engine's nearest box of its class (1) has IoU 0.14" in text
    assert "sample 1, reference box 1 (class 2, score 0.600): missed" in text
    assert "sample 0, engine box 0 (class 2, score 0.900): extra" in text
    # A slightly loose tolerance does not excuse it; a box nudged within IoU 0.98 passes fp16's.
    fp16 = DetectionTolerance(min_matched=0.95, min_iou=0.95, max_score_error=0.05, min_ap=0.9)
    assert not compare_detections(eng, ref, WHICH, fp16).passed
    nudged = {k: v.copy() for k, v in ref.items()}
    nudged["boxes"][0, 0] += np.float32(0.002)
    nudged["scores"][0, 0] -= np.float32(0.01)
    close = compare_detections(nudged, ref, WHICH, fp16)
    assert close.passed and 0.95 < close.mean_iou < 1.0 and close.worst_score_error == pytest.approx(0.01, abs=1e-6)


def test_detections_are_declared_in_the_policy_and_mistakes_are_named() -> None:
    table = {"model": {"ssd": {"output": {"boxes": {
        "detections": {"scores": "scores", "classes": "classes", "valid": "valid"},
        "detection_tolerance": {"int8": {"min_matched": 0.5}}}}}}}
    policy = TolerancePolicy.from_table(table)
    ((which, tol),) = policy.detections("ssd", "int8")
    assert which == WHICH and tol.min_matched == 0.5 and tol.min_iou < 1
    assert policy.detections("ssd", "fp32")[0][1] == DetectionTolerance() and policy.detections("other", "fp32") == []
    for bad, message in [({"detections": {"score": "s"}}, "expected output names"),
                         ({"detections": "scores"}, "a table naming"),
                         ({"detections": {}, "detection_tolerance": {"int8": {"min_recall": 1}}}, "numbers for"),
                         ({"detection_tolerance": {"int8": {}}}, "only for an output declared")]:
        with pytest.raises(UsageError, match=message):
            TolerancePolicy.from_table({"model": {"ssd": {"output": {"boxes": bad}}}})


def _written(tmp_path_factory: pytest.TempPathFactory, writer: str) -> Path:
    pytest.importorskip("tensorflow", reason="tensorflow not importable")
    pytest.importorskip("onnxruntime", reason="onnxruntime not importable")
    import tests.models

    return getattr(tests.models, writer)(tmp_path_factory.mktemp("detector"))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def ssd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _written(tmp_path_factory, "write_ssd_saved_model")


def test_a_detector_exports_and_is_judged_as_detections_and_a_broken_int8_fails(ssd: Path, tmp_path: Path) -> None:
    from harness.sources import ModelRequest
    from harness.workspace import CalibrationOptions, Workspace

    ws = Workspace(tmp_path / "artifacts", tmp_path / "golden", quiet=True)
    request = ModelRequest.of(str(ssd))
    name = ws.frozen(request).name
    policy = TolerancePolicy.from_table({"model": {name: {"output": {"boxes": {
        "detections": {"scores": "scores", "classes": "classes", "valid": "valid"}}}}}})
    ws.write_golden(request, policy=policy)
    golden = ws.golden(request)
    assert golden.outputs["valid"].dtype == np.int32 and golden.outputs["boxes"].shape[1:] == (20, 4)
    # fp16: the float16 converter used to leave this graph invalid (NMS's score threshold and a
    # box-head constant folded into one initializer, kept float32 for NonMaxSuppression).
    clean = ws.compare(request, ["onnxruntime"], ["fp32", "fp16", "int8"], policy)
    verdicts = {(r.precision, r.output): r for r in clean.results}
    assert set(verdicts) == {("fp32", "boxes"), ("fp16", "boxes"), ("int8", "boxes")}  # one verdict each, not 4 arrays
    fp32, fp16, int8 = verdicts[("fp32", "boxes")], verdicts[("fp16", "boxes")], verdicts[("int8", "boxes")]
    assert fp32.passed and fp32.detection is not None and fp32.detection.matched == 1.0, str(fp32)
    assert fp16.passed and fp16.detection is not None, str(fp16)
    print(f"\nssd fp16: matched {fp16.detection.matched:.3f}, mean IoU {fp16.detection.mean_iou:.4f}, "
          f"score error {fp16.detection.worst_score_error:.4f}, AP {fp16.detection.ap:.3f}")
    assert int8.detection is not None and int8.passed, str(int8)  # calibrated on other (seeded) data
    print(f"ssd int8: matched {int8.detection.matched:.3f}, mean IoU {int8.detection.mean_iou:.3f}, "
          f"score error {int8.detection.worst_score_error:.3f}, AP {int8.detection.ap:.3f}")
    # Negative control: int8 calibrated on all-zero images.
    zeros = tmp_path / "zeros.npy"
    np.save(zeros, np.zeros((16, 32, 32, 3), np.float32))
    broken = ws.compare(request, ["onnxruntime"], ["int8"], policy, CalibrationOptions(source=zeros))
    (result,) = broken.results
    assert not result.passed and result.detection is not None, str(result)
    print(f"ssd int8 calibrated on zeros: matched {result.detection.matched:.3f}, mean IoU "
          f"{result.detection.mean_iou:.3f}, score error {result.detection.worst_score_error:.3f}, AP {result.detection.ap:.3f}")
    assert "detections:" in str(result) and ("missed" in str(result) or "moved" in str(result)), str(result)


@pytest.fixture(scope="module")
def ssd_per_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _written(tmp_path_factory, "write_per_image_nms_saved_model")


def test_a_per_image_nms_detector_is_judged_per_sample(ssd_per_image: Path, tmp_path: Path) -> None:
    """Plain per-image NMS (batch-1 input, a number of boxes that depends on the image): the golden
    keeps each sample's boxes with its own count, each precision is judged as detections sample by
    sample, and the broken int8 fails, as detections and (undeclared) as a count per sample."""
    from harness.backends.base import SHAPE
    from harness.sources import ModelRequest
    from harness.workspace import CalibrationOptions, Workspace

    ws = Workspace(tmp_path / "artifacts", tmp_path / "golden", quiet=True)
    request = ModelRequest.of(str(ssd_per_image))
    name = ws.frozen(request).name
    policy = TolerancePolicy.from_table({"model": {name: {"output": {"boxes": {
        "detections": {"scores": "scores", "classes": "classes"}}}}}})
    ws.write_golden(request, policy=policy)
    golden = ws.golden(request)
    counts = golden.outputs["boxes" + SHAPE][:, 0]
    assert len(set(counts.tolist())) > 1 and counts.max() <= 20, counts  # the count depends on the image
    assert (golden.outputs["scores" + SHAPE][:, 0] == counts).all()
    clean = ws.compare(request, ["onnxruntime"], ["fp32", "fp16", "int8"], policy)
    verdicts = {r.precision: r for r in clean.results}
    assert set(verdicts) == {"fp32", "fp16", "int8"} and all(r.output == "boxes" for r in clean.results)
    assert all(r.passed and r.detection is not None for r in clean.results), str(clean)
    assert verdicts["fp32"].detection is not None and verdicts["fp32"].detection.matched == 1.0
    for r in clean.results:
        d = r.detection
        assert d is not None
        print(f"\nper-image NMS {r.precision}: matched {d.matched:.3f}, mean IoU {d.mean_iou:.4f}, score error "
              f"{d.worst_score_error:.4f}, AP {d.ap:.3f} ({d.engine_count} boxes vs {d.reference_count})")
    zeros = tmp_path / "zeros.npy"
    np.save(zeros, np.zeros((16, 32, 32, 3), np.float32))
    broken = CalibrationOptions(source=zeros)
    (result,) = ws.compare(request, ["onnxruntime"], ["int8"], policy, broken).results
    assert not result.passed and result.detection is not None and result.detection.matched < 0.8, str(result)
    assert "missed" in str(result)
    bare = {r.output: r for r in ws.compare(request, ["onnxruntime"], ["int8"], calibration=broken).results}
    assert set(bare) == {"boxes", "scores", "classes"}  # each output elementwise, per sample
    assert not bare["boxes"].passed and "another shape than the reference's" in bare["boxes"].failures[0]


def test_the_golden_warns_elementwise_only_about_outputs_judged_elementwise() -> None:
    """An engine ignoring its input would pass a detector's `valid` count elementwise, but `valid`
    is judged with the boxes, as detections: the golden's elementwise warnings leave out every
    output of a detection or a class map, and the per-sample shapes that are not outputs."""
    policy = TolerancePolicy.from_table({"model": {"m": {"output": {
        "boxes": {"detections": {"scores": "scores", "classes": "classes", "valid": "valid"}},
        "mask": {"segmentation": True}}}}})
    outputs = ["boxes", "scores", "classes", "valid", "mask", "logits", "kept", "kept:shape"]
    assert set(policy.for_outputs("int8", "m", outputs)) == set(outputs) - {"kept:shape"}
    assert set(policy.elementwise("int8", "m", outputs)) == {"logits", "kept"}
    assert set(policy.elementwise("int8", "other", outputs)) == set(outputs) - {"kept:shape"}
