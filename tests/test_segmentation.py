"""Segmentation outputs judged as class maps (harness.segmentation): pixel agreement and mIoU
of the engine's argmax against the reference's, declared per output in the policy; a broken
int8 fails, a good one passes though its scores differ everywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.errors import HarnessError, UsageError
from harness.policy import TolerancePolicy
from harness.segmentation import SegmentationTolerance, compare_segmentation


def _scores(classes: np.ndarray, n: int = 3) -> np.ndarray:
    """One-hot-ish scores whose argmax is `classes` (batch, H, W)."""
    return np.eye(n, dtype=np.float32)[classes] * 5.0


def test_class_maps_give_pixel_agreement_and_miou_by_hand() -> None:
    ref = np.zeros((1, 4, 4), np.int64)
    ref[0, :, 2:] = 1  # left half class 0, right half class 1
    eng = ref.copy()
    eng[0, 0, :2] = 1  # 2 pixels of class 0 taken for class 1
    judged = compare_segmentation("logits", _scores(eng), _scores(ref), SegmentationTolerance(0.85, 0.5))
    # agreement 14/16; class 0: IoU 6/8; class 1: 8/10; mIoU their mean
    assert judged.pixel_agreement == pytest.approx(14 / 16)
    assert judged.worst_miou == pytest.approx((6 / 8 + 8 / 10) / 2) and judged.passed
    strict = compare_segmentation("logits", _scores(eng), _scores(ref), SegmentationTolerance(0.85, 0.9))
    assert not strict.passed and strict.failures == ("worst sample's mIoU 0.7750 < 0.9",)
    assert strict.problems[0].startswith("sample 0: mIoU 0.7750") and "class 0 the worst (IoU 0.7500" in strict.problems[0]


def test_scores_that_differ_everywhere_but_keep_every_argmax_pass() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 8, 8, 5)).astype(np.float32)
    eng = ref * 0.5 + 3.0  # every score off, every pixel's order kept
    assert compare_segmentation("logits", eng, ref, SegmentationTolerance(1.0, 1.0)).passed
    with pytest.raises(HarnessError, match=r"output 'logits': segmentation scores of shape \(2, 8\)"):
        compare_segmentation("logits", eng[:, 0, :, 0], ref[:, 0, :, 0], SegmentationTolerance())
    eng[0, 0, 0, 0] = np.nan
    assert "non-finite" in compare_segmentation("logits", eng, ref, SegmentationTolerance(0.0, 0.0)).failures[0]


def test_segmentation_is_declared_in_the_policy_and_mistakes_are_named() -> None:
    policy = TolerancePolicy.from_table({"model": {"seg": {"output": {"logits": {
        "segmentation": True, "segmentation_tolerance": {"int8": {"min_miou": 0.5}}}}}}})
    ((output, tol),) = policy.segmentations("seg", "int8")
    assert output == "logits" and tol.min_miou == 0.5 and tol.min_pixel_agreement == 0.9
    assert policy.segmentations("seg", "fp32") == [("logits", SegmentationTolerance())]
    assert policy.segmentations("other", "fp32") == []
    for bad, message in [({"segmentation": "yes"}, "is not true or false"),
                         ({"segmentation_tolerance": {"int8": {"min_miou": 0.5}}}, "only for an output declared"),
                         ({"segmentation": True, "segmentation_tolerance": {"int8": {"miou": 0.5}}}, "numbers for")]:
        with pytest.raises(UsageError, match=message):
            TolerancePolicy.from_table({"model": {"seg": {"output": {"logits": bad}}}})


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow", reason="tensorflow not importable")
    pytest.importorskip("onnxruntime", reason="onnxruntime not importable")
    from tests.models import write_segmentation_saved_model

    return write_segmentation_saved_model(tmp_path_factory.mktemp("segmenter"))


def test_a_segmenter_is_judged_as_class_maps_and_a_broken_int8_fails(segmenter: Path, tmp_path: Path) -> None:
    from harness.sources import ModelRequest
    from harness.workspace import CalibrationOptions, Workspace

    ws = Workspace(tmp_path / "artifacts", tmp_path / "golden", quiet=True)
    request = ModelRequest.of(str(segmenter))
    name = ws.frozen(request).name
    policy = TolerancePolicy.from_table({"model": {name: {"output": {"logits": {"segmentation": True}}}}})
    ws.write_golden(request, policy=policy)
    clean = ws.compare(request, ["onnxruntime"], ["fp32", "fp16", "int8"], policy)
    verdicts = {r.precision: r for r in clean.results}
    for precision in ("fp32", "fp16", "int8"):
        r = verdicts[precision]
        assert r.segmentation is not None and r.passed, str(r)
        print(f"\nsegmenter {precision}: pixel agreement {r.segmentation.pixel_agreement:.4f}, mIoU worst "
              f"{r.segmentation.worst_miou:.4f} mean {r.segmentation.mean_miou:.4f}; scores' max abs error "
              f"{r.stats.max_abs_error:.3g}")
    assert verdicts["fp32"].segmentation is not None and verdicts["fp32"].segmentation.pixel_agreement > 0.999
    zeros = tmp_path / "zeros.npy"  # negative control: int8 calibrated on all-zero images
    np.save(zeros, np.zeros((16, 32, 32, 3), np.float32))
    (broken,) = ws.compare(request, ["onnxruntime"], ["int8"], policy, CalibrationOptions(source=zeros)).results
    assert broken.segmentation is not None and not broken.passed, str(broken)
    print(f"segmenter int8 calibrated on zeros: pixel agreement {broken.segmentation.pixel_agreement:.4f}, "
          f"mIoU worst {broken.segmentation.worst_miou:.4f}")
    assert "class maps:" in str(broken) and "the worst (IoU" in str(broken), str(broken)
