"""Segmentation outputs compared as class maps, not as arrays.

A segmentation model's output holds per-pixel class scores, classes on the last axis
(batch, H, W, C); what a user deploys it for is each pixel's class.  So an engine is judged on
the class maps (argmax over the last axis): the share of pixels whose class matches the
reference's (pixel agreement), and the mean over classes of the IoU between the engine's region
of a class and the reference's (mIoU, over the classes either map has in that sample).  A few
pixels on a boundary between two near-tied classes are then what they are, not an elementwise
failure of the whole score tensor.  Declared per output in `[tool.harness]`:

    [tool.harness.model.seg.output.logits]
    segmentation = true
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from harness.errors import HarnessError


@dataclass(frozen=True)
class SegmentationTolerance:
    """Pass when the share of pixels whose class matches the reference's is at least
    `min_pixel_agreement` and the worst sample's mIoU at least `min_miou`."""

    min_pixel_agreement: float = 0.999
    min_miou: float = 0.99


# Per precision.  fp32: the same graph; a pixel whose two best classes tie to rounding may flip
# (measured: 1.0 and 1.0).  fp16 and int8: measured on the seeded segmenter tests/models.py builds
# (tests/test_segmentation.py; ONNX Runtime, int8 calibrated on seeded data other than the
# golden's; 2-core AMD EPYC, AVX2): fp16 pixel agreement 0.9998, worst mIoU 0.9952; int8 0.9744
# and 0.8476 (mean 0.90); int8 calibrated on all-zero images (the negative control) 0.597 and
# 0.229.  bf16 sits between fp16 and int8 (not measured on a segmenter).
DEFAULT_SEGMENTATION_TOLERANCES: dict[str, SegmentationTolerance] = {
    "fp32": SegmentationTolerance(),
    "fp16": SegmentationTolerance(min_pixel_agreement=0.99, min_miou=0.95),
    "bf16": SegmentationTolerance(min_pixel_agreement=0.97, min_miou=0.9),
    "int8": SegmentationTolerance(min_pixel_agreement=0.9, min_miou=0.75),
}


def segmentation_tolerance(precision: str, overrides: Mapping[str, Any] | None = None) -> SegmentationTolerance:
    base = DEFAULT_SEGMENTATION_TOLERANCES.get(precision, DEFAULT_SEGMENTATION_TOLERANCES["int8"])
    known = {f.name for f in fields(SegmentationTolerance)}
    bad = sorted(set(overrides or {}) - known)
    if bad:
        raise HarnessError(f"segmentation tolerance: unknown key(s) {bad}; expected {sorted(known)}")
    return SegmentationTolerance(**{**base.__dict__, **(overrides or {})})


@dataclass(frozen=True)
class SegmentationComparison:
    output: str
    tolerance: SegmentationTolerance
    pixel_agreement: float  # over every pixel of every sample
    worst_miou: float  # the lowest sample's mIoU
    mean_miou: float
    failures: tuple[str, ...]
    problems: tuple[str, ...] = ()  # which sample, which class, how much (the worst few)

    @property
    def passed(self) -> bool:
        return not self.failures

    def figures(self) -> dict[str, Any]:
        return {"pixel_agreement": self.pixel_agreement, "worst_miou": self.worst_miou, "mean_miou": self.mean_miou,
                "problems": list(self.problems)}

    def lines(self) -> list[str]:
        t = self.tolerance
        out = [(f"  class maps: pixel agreement {self.pixel_agreement:.4f} (>= {t.min_pixel_agreement}), mIoU worst "
                f"sample {self.worst_miou:.4f} (>= {t.min_miou}), mean {self.mean_miou:.4f}")]
        return out + [f"  {p}" for p in self.problems]


def _ious(a: np.ndarray, r: np.ndarray) -> dict[int, float]:
    """IoU per class present in either of two class maps of one sample."""
    out = {}
    for c in np.union1d(np.unique(a), np.unique(r)):
        inter = np.sum((a == c) & (r == c))
        union = np.sum((a == c) | (r == c))
        out[int(c)] = float(inter / union)
    return out


def compare_segmentation(output: str, actual: np.ndarray, reference: np.ndarray,
                         tolerance: SegmentationTolerance) -> SegmentationComparison:
    """The engine's class maps against the reference's (classes on the last axis)."""
    actual, reference = np.asarray(actual), np.asarray(reference)
    if actual.shape != reference.shape or reference.ndim < 3:
        raise HarnessError(f"output {output!r}: segmentation scores of shape {actual.shape} against the reference's "
                           f"{reference.shape}; expected the same (batch, ..., classes), three axes or more")
    a, r = actual.argmax(-1), reference.argmax(-1)
    agreement = float(np.mean(a == r))
    per_sample = []
    worst: list[tuple[float, str]] = []
    for i in range(len(r)):
        ious = _ious(a[i], r[i])
        miou = float(np.mean(list(ious.values())))
        per_sample.append(miou)
        c = min(ious, key=lambda k: ious[k])
        worst.append((miou, (f"sample {i}: mIoU {miou:.4f}, pixels agreeing {np.mean(a[i] == r[i]):.4f}; "
                             f"class {c} the worst (IoU {ious[c]:.4f}: {int(np.sum(r[i] == c))} reference pixels, "
                             f"{int(np.sum(a[i] == c))} the engine's)")))
    failures = []
    if not np.all(np.isfinite(actual)):
        failures.append(f"{output}: {int(np.sum(~np.isfinite(actual)))} non-finite scores")
    if agreement < tolerance.min_pixel_agreement:
        failures.append(f"pixel agreement {agreement:.4f} < {tolerance.min_pixel_agreement}")
    if min(per_sample) < tolerance.min_miou:
        failures.append(f"worst sample's mIoU {min(per_sample):.4f} < {tolerance.min_miou}")
    problems = tuple(text for _, text in sorted(worst)[:3]) if failures else ()
    return SegmentationComparison(output, tolerance, agreement, min(per_sample), float(np.mean(per_sample)),
                                  tuple(failures), problems)
