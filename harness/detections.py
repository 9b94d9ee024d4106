"""Detections compared as detections, not as arrays.

A detector's outputs (boxes, scores, classes, and for a padded NMS a count of valid rows) are
judged together: per sample, each reference detection is matched to the engine's detection of
the same class that overlaps it most (IoU, greedy by descending reference score, as
pycocotools matches); the figures are the share of reference detections matched, the mean IoU
and the worst score difference of the matches, and the agreement of average precision (the
engine's detections scored against the reference's as ground truth, AP at IoU 0.5 averaged over
classes).  One surviving box more or less, or two boxes in another order, is then what it is,
not an elementwise failure of every array.

Declared per model in `[tool.harness]`, on the boxes output:

    [tool.harness.model.ssd.output.boxes]
    detections = {scores = "scores", classes = "classes", valid = "valid"}   # names of the others

Boxes are (batch, N, 4) corners in any consistent order ([y1, x1, y2, x2] or [x1, y1, x2, y2]);
without a `valid` output every row whose score is above 0 counts (a padded NMS pads with 0).
A data-dependent NMS (each image its own number of boxes, (1, K, 4) or (K, 4) per call) is run
one sample at a time and judged per sample the same way (harness.backends.base.join_samples).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from harness.errors import HarnessError


@dataclass(frozen=True)
class DetectionOutputs:
    """Which outputs form one detector's answer (names; None where the model has none)."""

    boxes: str
    scores: str | None = None
    classes: str | None = None
    valid: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n in (self.boxes, self.scores, self.classes, self.valid) if n)

    @classmethod
    def from_table(cls, boxes: str, table: Mapping[str, Any], where: str) -> DetectionOutputs:
        bad = sorted(set(table) - {"scores", "classes", "valid"})
        if bad or not all(isinstance(v, str) for v in table.values()):
            raise HarnessError(f"{where}.detections: expected output names for scores, classes and valid, got "
                               f"{dict(table)!r}")
        return cls(boxes, table.get("scores"), table.get("classes"), table.get("valid"))


@dataclass(frozen=True)
class DetectionTolerance:
    """Pass when at least `min_matched` of the reference detections are matched (same class,
    IoU >= `iou`), the matches' mean IoU reaches `min_iou`, their worst score difference is at
    most `max_score_error`, and the engine's AP against the reference reaches `min_ap`."""

    min_matched: float = 1.0
    min_iou: float = 0.999
    max_score_error: float = 1e-3
    min_ap: float = 0.99
    iou: float = 0.5


# Per precision.  fp32: the same graph, so the same detections to rounding.  int8: measured on
# the seeded SSD-style detector tests/models.py builds (tests/test_detections.py; ONNX Runtime,
# calibrated on seeded data other than the golden's; 2-core AMD EPYC, AVX2): matched 0.967, mean
# IoU 0.943, worst score error 0.200, AP 0.962; calibrated on all-zero images (the negative
# control): matched 0.000.  fp16 on the same: matched 1.000, mean IoU 0.9984, worst score error
# 0.0007, AP 1.000.  The same detector with per-image NMS (a number of boxes that depends on the
# image, judged per sample; 32 samples, 605 boxes): fp16 matched 0.998, mean IoU 0.998, score
# error 0.0007, AP 0.995; int8 0.955, 0.939, 0.153, 0.928; int8 calibrated on zeros: no boxes at
# all.  bf16 sits between fp16 and int8 (not measured on a detector).
DEFAULT_DETECTION_TOLERANCES: dict[str, DetectionTolerance] = {
    "fp32": DetectionTolerance(),
    "fp16": DetectionTolerance(min_matched=0.95, min_iou=0.95, max_score_error=0.05, min_ap=0.9),
    "bf16": DetectionTolerance(min_matched=0.9, min_iou=0.9, max_score_error=0.1, min_ap=0.85),
    "int8": DetectionTolerance(min_matched=0.8, min_iou=0.85, max_score_error=0.35, min_ap=0.75),
}


@dataclass(frozen=True)
class DetectionComparison:
    outputs: DetectionOutputs
    tolerance: DetectionTolerance
    reference_count: int
    engine_count: int
    matched: float  # share of reference detections matched
    mean_iou: float
    worst_score_error: float
    ap: float
    failures: tuple[str, ...]
    problems: tuple[str, ...] = field(default=(), repr=False)  # which sample, which box, why (the first few)

    @property
    def passed(self) -> bool:
        return not self.failures

    def figures(self) -> dict[str, Any]:
        return {"reference_detections": self.reference_count, "engine_detections": self.engine_count,
                "matched": self.matched, "mean_iou": self.mean_iou, "worst_score_error": self.worst_score_error,
                "ap_vs_reference": self.ap, "problems": list(self.problems)}

    def lines(self) -> list[str]:
        t = self.tolerance
        out = [(f"  detections: {self.reference_count} in the reference, {self.engine_count} from the engine; matched "
               f"{self.matched:.4f} (>= {t.min_matched}), mean IoU {self.mean_iou:.4f} (>= {t.min_iou}), worst score "
               f"error {self.worst_score_error:.3g} (<= {t.max_score_error}), AP vs reference {self.ap:.4f} "
               f"(>= {t.min_ap}; IoU {t.iou})")]
        out += [f"  {p}" for p in self.problems]
        return out


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` (n, 4) with every box of `b` (m, 4), corners in either order."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a_lo, a_hi = np.minimum(a[:, :2], a[:, 2:]), np.maximum(a[:, :2], a[:, 2:])
    b_lo, b_hi = np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:])
    lo = np.maximum(a_lo[:, None, :], b_lo[None, :, :])
    hi = np.minimum(a_hi[:, None, :], b_hi[None, :, :])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area_a, area_b = np.prod(a_hi - a_lo, axis=1), np.prod(b_hi - b_lo, axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _rows(outputs: Mapping[str, np.ndarray], which: DetectionOutputs, i: int) -> tuple[np.ndarray, ...]:
    """Sample i's detections: boxes, scores, classes (valid rows only)."""
    from harness.backends.base import sample_output

    boxes = np.asarray(sample_output(outputs, which.boxes, i), np.float64).reshape(-1, 4)
    n = len(boxes)
    scores = np.asarray(sample_output(outputs, which.scores, i), np.float64).reshape(-1) if which.scores else np.ones(n)
    classes = (np.asarray(sample_output(outputs, which.classes, i)).reshape(-1).astype(np.int64) if which.classes
               else np.zeros(n, np.int64))
    if len(scores) != n or len(classes) != n:
        raise HarnessError(f"detections: sample {i} has {n} boxes in {which.boxes!r} but {len(scores)} scores and "
                           f"{len(classes)} classes; declare outputs of one detection per row")
    if which.valid:
        keep = np.arange(n) < int(np.asarray(sample_output(outputs, which.valid, i)).reshape(-1)[0])
    else:
        keep = scores > 0 if which.scores else np.ones(n, bool)
    return boxes[keep], scores[keep], classes[keep]


def _average_precision(matched_by_score: list[tuple[float, bool]], total: int) -> float:
    """All-point interpolated AP of detections (score, true positive) against `total` truths."""
    if total == 0:
        return 1.0 if not matched_by_score else 0.0
    ordered = sorted(matched_by_score, key=lambda x: -x[0])
    tp = np.cumsum([m for _, m in ordered], dtype=np.float64)
    fp = np.cumsum([not m for _, m in ordered], dtype=np.float64)
    if not len(tp):
        return 0.0
    recall, precision = tp / total, tp / np.maximum(tp + fp, 1e-12)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(steps * precision))


def compare_detections(actual: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                       which: DetectionOutputs, tolerance: DetectionTolerance, show: int = 8) -> DetectionComparison:
    missing = [n for n in which.names if n not in actual or n not in reference]
    if missing:
        raise HarnessError(f"detections: outputs {missing} are declared but not among the model's outputs")
    samples = len(reference[which.boxes])
    matched = ref_total = eng_total = 0
    ious: list[float] = []
    score_errors: list[float] = []
    per_class: dict[int, list[tuple[float, bool]]] = {}
    truths: dict[int, int] = {}
    problems: list[str] = []
    for i in range(samples):
        rb, rs, rc = _rows(reference, which, i)
        eb, es, ec = _rows(actual, which, i)
        ref_total, eng_total = ref_total + len(rb), eng_total + len(eb)
        for c in rc.tolist():
            truths[c] = truths.get(c, 0) + 1
        overlap = iou_matrix(rb, eb) if len(rb) and len(eb) else np.zeros((len(rb), len(eb)))
        taken = np.zeros(len(eb), bool)
        for r in np.argsort(-rs, kind="stable"):
            same = (ec == rc[r]) & ~taken
            candidates = np.where(same, overlap[r], -1.0)
            best = int(np.argmax(candidates)) if len(eb) else -1
            if best >= 0 and candidates[best] >= tolerance.iou:
                taken[best] = True
                matched += 1
                ious.append(float(overlap[r, best]))
                score_errors.append(abs(float(es[best]) - float(rs[r])))
                continue
            if len(problems) < show:
                other = np.where(~taken, overlap[r], -1.0) if len(eb) else np.zeros(0)
                j = int(np.argmax(other)) if len(other) else -1
                if j >= 0 and other[j] >= tolerance.iou and ec[j] != rc[r]:
                    why = f"relabelled: the engine's box {j} overlaps it (IoU {other[j]:.2f}) as class {ec[j]}"
                elif best >= 0 and candidates[best] > 0:
                    why = f"moved: the engine's nearest box of its class ({best}) has IoU {candidates[best]:.2f}"
                else:
                    why = "missed: no engine box of its class overlaps it"
                problems.append(f"sample {i}, reference box {r} (class {rc[r]}, score {rs[r]:.3f}): {why}")
        # The engine's detections as predictions against the reference's as ground truth.
        for j in range(len(eb)):
            per_class.setdefault(int(ec[j]), []).append((float(es[j]), bool(taken[j])))
        for j in np.flatnonzero(~taken)[: max(0, show - len(problems))]:
            problems.append(f"sample {i}, engine box {j} (class {ec[j]}, score {es[j]:.3f}): extra: no reference box "
                            "of its class matches it")
    share = matched / ref_total if ref_total else (1.0 if eng_total == 0 else 0.0)
    mean_iou = float(np.mean(ious)) if ious else (1.0 if ref_total == 0 else 0.0)
    worst = float(max(score_errors, default=0.0))
    classes = sorted(set(truths) | set(per_class))
    ap = float(np.mean([_average_precision(per_class.get(c, []), truths.get(c, 0)) for c in classes])) if classes else 1.0
    failures = []
    if share < tolerance.min_matched:
        failures.append(f"matched {share:.4f} of the reference's detections < {tolerance.min_matched}")
    if mean_iou < tolerance.min_iou:
        failures.append(f"mean IoU of the matches {mean_iou:.4f} < {tolerance.min_iou}")
    if worst > tolerance.max_score_error:
        failures.append(f"worst score error of the matches {worst:.3g} > {tolerance.max_score_error}")
    if ap < tolerance.min_ap:
        failures.append(f"AP against the reference {ap:.4f} < {tolerance.min_ap}")
    return DetectionComparison(which, tolerance, ref_total, eng_total, share, mean_iou, worst, ap, tuple(failures),
                               tuple(problems))


def detection_tolerance(precision: str, overrides: Mapping[str, Any] | None = None) -> DetectionTolerance:
    from harness.precision import base_precision

    base = DEFAULT_DETECTION_TOLERANCES.get(base_precision(precision), DEFAULT_DETECTION_TOLERANCES["fp32"])
    return replace(base, **dict(overrides or {}))
