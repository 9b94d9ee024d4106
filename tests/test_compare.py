from __future__ import annotations

import numpy as np
import pytest

from harness.compare import DEFAULT_TOLERANCES, Tolerance, compare, compare_output, error_stats
from harness.errors import HarnessError


def test_statistics_of_a_known_error() -> None:
    ref = np.zeros((2, 100), np.float32)
    ref[:, 0] = 1.0
    actual = ref.copy()
    actual[1, 50] = 0.25  # one element off by 0.25 of 200
    s = error_stats(actual, ref, classes=True)
    assert s.max_abs_error == pytest.approx(0.25)
    assert s.mean_abs_error == pytest.approx(0.25 / 200)
    assert s.median_abs_error == 0.0
    # sample 1: cos = 1 / sqrt(1 + 0.25^2)
    assert s.cosine_similarity == pytest.approx(1 / np.sqrt(1.0625))
    assert s.top1_agreement == 1.0 and s.top5_agreement == 1.0


def test_top1_and_top5_agreement() -> None:
    ref = np.array([[0.0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0]])
    actual = np.array([[0.0, 1, 2, 3, 6, 5], [0, 4, 3, 2, 1, 5]])  # sample 0: top-1 in ref top-5; sample 1: not
    s = error_stats(actual, ref, classes=True)
    assert s.top1_agreement == 0.0
    assert s.top5_agreement == 0.5


def test_failure_prints_statistics_and_smallest_passing_atol() -> None:
    ref = np.linspace(-1, 1, 50, dtype=np.float32).reshape(5, 10)
    actual = ref + np.float32(0.003)
    result = compare_output("logits", actual, ref, Tolerance(atol=1e-3), "onnxruntime", "fp32")
    assert not result.passed
    assert result.smallest_passing_atol == pytest.approx(0.003, rel=1e-3)
    text = str(result)
    for needle in ("FAIL", "abs error  max 0.003", "cosine", "smallest atol that would have passed: 0.003"):
        assert needle in text
    assert compare_output("logits", actual, ref, Tolerance(atol=0.0031)).passed


def test_rtol_scales_with_the_reference() -> None:
    ref = np.array([[100.0, 1.0]])
    actual = np.array([[100.05, 1.0]])
    assert not compare_output("y", actual, ref, Tolerance(atol=1e-3)).passed
    assert compare_output("y", actual, ref, Tolerance(atol=1e-3, rtol=1e-3)).passed


@pytest.mark.parametrize("statistic", ["p99", "mean", "median"])
def test_statistic_choice_ignores_a_single_outlier(statistic: str) -> None:
    ref = np.zeros((10, 100))
    actual = ref.copy()
    actual[0, 0] = 1.0
    assert not compare_output("y", actual, ref, Tolerance(atol=1e-3)).passed
    assert compare_output("y", actual, ref, Tolerance(atol=1e-3, statistic=statistic)).passed  # type: ignore[arg-type]


def test_cosine_and_top1_thresholds_fail_on_their_own() -> None:
    ref = np.array([[1.0, 0.9, 0.0]])
    swapped = np.array([[0.9, 1.0, 0.0]])
    loose = Tolerance(atol=1.0, min_cosine=0.999, min_top1=1.0)
    failures = compare_output("y", swapped, ref, loose, classes=True).failures
    assert any("cosine" in f for f in failures) and any("top-1" in f for f in failures)


def test_top1_is_only_for_outputs_declared_as_class_scores() -> None:
    """A 4-wide box regression output is 2-D too; its "top-1" means nothing and must not gate."""
    boxes = np.array([[0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.9, 0.8]])
    moved = boxes + np.array([[0.0, 0.0, 0.15, 0.0], [0.0, 0.0, 0.0, 0.0]])  # argmax of sample 0 moves
    tolerance = Tolerance(atol=0.2, min_top1=1.0)
    plain = compare_output("bbox", moved, boxes, tolerance)
    assert plain.passed and plain.stats.top1_agreement is None and plain.stats.top5_agreement is None
    assert "top-1" not in str(plain) and plain.record()["top1_agreement"] is None
    declared = compare_output("bbox", moved, boxes, tolerance, classes=True)
    assert not declared.passed and declared.stats.top1_agreement == 0.5
    by_name = compare({"bbox": moved, "scores": boxes}, {"bbox": boxes, "scores": boxes}, tolerance, classes={"scores"})
    assert [r.stats.top1_agreement for r in by_name.results] == [None, 1.0]
    with pytest.raises(HarnessError, match="output 'score' is marked as class scores but has shape"):
        compare_output("score", np.zeros((3, 1)), np.zeros((3, 1)), tolerance, classes=True)


def test_nan_output_fails() -> None:
    ref = np.zeros((1, 3))
    actual = np.array([[0.0, np.nan, 0.0]])
    assert not compare_output("y", actual, ref, DEFAULT_TOLERANCES["fp32"]).passed


def test_compare_needs_every_reference_output() -> None:
    with pytest.raises(HarnessError, match=r"outputs \['b'\] missing"):
        compare({"a": np.zeros(1)}, {"a": np.zeros(1), "b": np.zeros(1)}, Tolerance())


def test_bad_tolerance_is_refused() -> None:
    with pytest.raises(HarnessError, match="statistic"):
        Tolerance(statistic="worst")  # type: ignore[arg-type]
    with pytest.raises(HarnessError, match=">= 0"):
        Tolerance(atol=-1)
