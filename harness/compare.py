"""Error statistics between an engine's outputs and the reference, judged by a Tolerance.

A result prints its own statistics and, when it fails, the smallest tolerance that would
have passed, so a failure message is enough to decide whether it is a bug or a policy."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from harness.backends.base import SHAPE, per_sample_shapes, sample_index, sample_output
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.detections import DetectionComparison, DetectionOutputs, DetectionTolerance
    from harness.floor import OutputFloor
    from harness.segmentation import SegmentationComparison, SegmentationTolerance

Statistic = Literal["max", "p99", "mean", "median"]
STATISTICS: tuple[Statistic, ...] = ("max", "p99", "mean", "median")


@dataclass(frozen=True)
class Tolerance:
    """Pass when statistic(|actual - ref| - rtol*|ref|) <= atol, and the per-sample cosine
    similarity and top-1 agreement (classifier outputs) reach their minimums if set."""

    atol: float = 1e-4
    rtol: float = 0.0
    min_cosine: float | None = None
    min_top1: float | None = None
    statistic: Statistic = "max"

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise HarnessError(f"tolerance statistic {self.statistic!r}: choose from {STATISTICS}")
        if self.atol < 0 or self.rtol < 0:
            raise HarnessError(f"tolerance atol={self.atol}, rtol={self.rtol}: both must be >= 0")


# Defaults per precision, each set from measurement on the built-in models (golden inputs,
# ONNX Runtime CPU) against a variant that is genuinely broken, which must fail. The broken
# figures were measured on the previous InceptionV3 recipe (batch-norm statistics computed at
# build time); tests/test_builtin.py and tests/test_precision.py re-check on the current one
# that the broken variants still fail.
#
# fp32: the same graph in the same precision; only reassociation differs. Clean error vs
#   TensorFlow: max 6.3e-5 (inception_v3, 8 crops), 1.3e-5 (digits, logits up to 40).
#   A 1% perturbation of one weight tensor: >= 1.4e-2 (inception_v3, 12 tensors tried), 0.4
#   (digits). atol sits ~8x above clean and ~18x below the smallest broken error.
# fp16: weights and compute in float16 (I/O float32). Clean: max 0.079, worst cosine 0.99934
#   (inception_v3, 8 crops, 94 conv layers deep, Intel Xeon with AVX512-FP16); max 0.0068,
#   cosine 0.999999 (digits). Broken: the first conv's weights perturbed by 5% gives max 0.14,
#   cosine 0.99792 (inception_v3) and max 1.1, cosine 0.9982 (digits); the logits layer
#   perturbed by 5% gives 0.82 / 0.937. A 1% perturbation of a middle layer is inside fp16's
#   own noise and cannot be told apart.
# int8: Q/DQ, symmetric, minmax-calibrated on data other than the golden inputs. Elementwise
#   error says little (quantization noise is ~30% of the logits' spread on the random-weight
#   inception_v3), so int8 is judged by cosine similarity and top-1 agreement. Clean: cosine
#   0.963-0.971 (inception_v3, 8 or 16 crops, both int8 forms; its top-1 is a coin toss on
#   near-tied logits, see pyproject.toml); cosine 0.9982, top-1 1.0 (digits, 360 held-out
#   samples, calibrated on the training split). Broken (calibrated on all-zero data): cosine
#   0.740, top-1 0.5 (inception_v3); cosine -0.17, top-1 0.22 (digits). Calibrated on data 10x
#   too large: cosine 0.55 (inception_v3), 0.976 and top-1 0.98 (digits: a decisive classifier,
#   so this repository's pyproject.toml tightens its policy).
# bf16: OpenVINO's CPU plugin computing the fp32 file in bfloat16 (8-bit mantissa; I/O float32).
#   Clean: max 0.43, worst cosine 0.98699, top-1 0.625 on near-tied logits (inception_v3, 8
#   crops); max 0.11, cosine 0.9999923 (digits). Broken, first conv's weights x1.05: max 1.64
#   (inception_v3), 1.88 (digits). The logits layer x1.05 gives 0.52 on inception_v3: inside
#   bf16's own noise there, as a middle layer's 1% is for fp16. Measured on a 2-core Intel Xeon
#   with AMX (OpenVINO 2026.4).
INF = float("inf")
SYNTHETIC_NOTE = "calibrated on synthetic data: int8 agreement is not evidence of accuracy"
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=5e-4, rtol=1e-4, min_cosine=0.99999),
    "fp16": Tolerance(atol=0.1, rtol=1e-3, min_cosine=0.998),
    "int8": Tolerance(atol=INF, rtol=0.0, min_cosine=0.9, min_top1=0.7),
    "bf16": Tolerance(atol=1.0, rtol=1e-3, min_cosine=0.98),
}


@dataclass(frozen=True)
class ErrorStats:
    max_abs_error: float
    mean_abs_error: float
    median_abs_error: float
    p99_abs_error: float
    max_rel_error: float
    mean_rel_error: float
    median_rel_error: float
    p99_rel_error: float
    cosine_similarity: float  # the lowest over the samples of the batch
    top1_agreement: float | None
    top5_agreement: float | None
    samples: int
    # For plots: counts of |error| in log-spaced bins, and every sample's cosine similarity.
    abs_error_histogram: dict[str, list[float]] = field(default_factory=dict, repr=False)
    cosine_per_sample: list[float] = field(default_factory=list, repr=False)


def statistic_of(values: np.ndarray, statistic: Statistic) -> float:
    if statistic == "max":
        return float(values.max())
    if statistic == "p99":
        return float(np.percentile(values, 99))
    if statistic == "mean":
        return float(values.mean())
    return float(np.median(values))


def check_class_output(name: str, ref: np.ndarray) -> None:
    """Top-1/top-5 are computed only on outputs declared as class scores (built-in models
    declare theirs; users mark theirs in pyproject.toml): a 4-wide box regression output is
    2-D too, and its "top-1" would mean nothing."""
    if ref.ndim != 2 or ref.shape[1] < 2:
        raise HarnessError(
            f"output {name!r} is marked as class scores but has shape {tuple(ref.shape)}; class scores are "
            "(batch, classes) with at least 2 classes; remove `classes = true` from its [tool.harness] table"
        )


def cosine_per_sample(a: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Each sample's cosine similarity (float64 arrays, batch first); 1 where they are equal."""
    fa, fr = a.reshape(len(a), -1), r.reshape(len(r), -1)
    norms = np.linalg.norm(fa, axis=1) * np.linalg.norm(fr, axis=1)
    same = np.all(fa == fr, axis=1)
    return np.where(same, 1.0, np.sum(fa * fr, axis=1) / np.where(norms == 0, 1.0, norms))


def error_stats(actual: np.ndarray, ref: np.ndarray, classes: bool = False) -> ErrorStats:
    a = np.asarray(actual, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    abs_err = np.abs(a - r).ravel()
    # Relative error with a floor, so entries that are ~0 in the reference don't read as inf.
    floor = max(float(np.abs(r).max(initial=0.0)) * 1e-6, float(np.finfo(np.float32).tiny))
    rel_err = abs_err / np.maximum(np.abs(r).ravel(), floor)
    cos = cosine_per_sample(a, r)
    top1 = top5 = None
    if classes:
        top1 = float(np.mean(a.argmax(1) == r.argmax(1)))
        if r.shape[1] >= 5:
            top5_ref = np.argsort(-r, axis=1)[:, :5]
            top5 = float(np.mean([a_i.argmax() in t for a_i, t in zip(a, top5_ref)]))
    return ErrorStats(
        max_abs_error=float(abs_err.max(initial=0.0)),
        mean_abs_error=float(abs_err.mean()) if abs_err.size else 0.0,
        median_abs_error=float(np.median(abs_err)) if abs_err.size else 0.0,
        p99_abs_error=float(np.percentile(abs_err, 99)) if abs_err.size else 0.0,
        max_rel_error=float(rel_err.max(initial=0.0)),
        mean_rel_error=float(rel_err.mean()) if rel_err.size else 0.0,
        median_rel_error=float(np.median(rel_err)) if rel_err.size else 0.0,
        p99_rel_error=float(np.percentile(rel_err, 99)) if rel_err.size else 0.0,
        cosine_similarity=float(cos.min(initial=1.0)),
        top1_agreement=top1,
        top5_agreement=top5,
        samples=len(r),
        abs_error_histogram=_log_histogram(abs_err),
        cosine_per_sample=[float(c) for c in cos],
    )


HISTOGRAM_BINS = 40


def _log_histogram(values: np.ndarray) -> dict[str, list[float]]:
    """Counts in log-spaced bins from the smallest non-zero value to the largest; exact
    zeros are counted in the first bin; no bins at all when every value is 0."""
    positive = values[values > 0]
    if positive.size == 0:
        return {"edges": [], "counts": []}
    low, high = float(positive.min()), float(positive.max())
    edges = np.logspace(np.log10(low), np.log10(high * (1 + 1e-9)) if high > low else np.log10(low) + 1,
                        HISTOGRAM_BINS + 1)
    counts, _ = np.histogram(np.clip(values, low, None), bins=edges)
    return {"edges": [float(e) for e in edges], "counts": [float(c) for c in counts]}


@dataclass(frozen=True)
class OutputComparison:
    output: str
    stats: ErrorStats
    tolerance: Tolerance
    smallest_passing_atol: float
    failures: tuple[str, ...]
    backend: str = ""
    precision: str = ""
    accuracy: float | None = None  # top-1 against the golden labels, where there are labels
    reference_accuracy: float | None = None  # the same for the reference outputs
    calibration: str | None = None  # int8: what it was calibrated on
    calibration_synthetic: bool = False  # int8 calibrated on seeded synthetic inputs (no data given)
    unstable: tuple[str, ...] = ()  # how the reference fails this tolerance against itself (harness.floor)
    within_floor: bool = False  # the failures are within the reference's own floor (FLOOR_SLACK times it)
    floor: dict[str, Any] | None = None  # the reference's floor figures, where the golden has them
    detection: DetectionComparison | None = None  # a detector's outputs judged as detections (harness.detections)
    segmentation: SegmentationComparison | None = None  # per-pixel class scores judged as class maps

    @property
    def passed(self) -> bool:
        """No failure, or failures the reference itself cannot hold steady (its floor fails this
        tolerance and the engine is within that floor): not an engine's fault."""
        return not self.failures or (bool(self.unstable) and self.within_floor)

    @property
    def verdict(self) -> str:
        return "FAIL" if not self.passed else "UNSTABLE" if self.failures else "PASS"

    def record(self) -> dict[str, Any]:
        """One JSON record: what `harness compare --json` writes."""
        return {
            "backend": self.backend,
            "precision": self.precision,
            "output": self.output,
            "passed": self.passed,
            "verdict": self.verdict,
            "reference_unstable": list(self.unstable),
            "reference_floor": self.floor,
            **({"detections": {"outputs": list(self.detection.outputs.names), **self.detection.figures()}}
               if self.detection is not None else {}),
            **({"segmentation": self.segmentation.figures()} if self.segmentation is not None else {}),
            **asdict(self.stats),
            "accuracy": self.accuracy,
            "reference_accuracy": self.reference_accuracy,
            "smallest_passing_atol": None if self.smallest_passing_atol == INF else self.smallest_passing_atol,
            # JSON has no infinity: an unbounded atol (int8) is written as null.
            "tolerance": {k: None if v == INF else v for k, v in asdict(self.tolerance).items()},
            "failures": list(self.failures),
            "calibration": self.calibration,
            "calibration_synthetic": self.calibration_synthetic,
            **({"note": SYNTHETIC_NOTE} if self.calibration_synthetic else {}),
        }

    def __str__(self) -> str:
        s, t = self.stats, self.tolerance
        head = f"{self.backend}-{self.precision} output {self.output!r}: {self.verdict}"
        lines = [
            head,
            _row("abs error", s.max_abs_error, s.p99_abs_error, s.mean_abs_error, s.median_abs_error),
            _row("rel error", s.max_rel_error, s.p99_rel_error, s.mean_rel_error, s.median_rel_error),
            f"  cosine similarity (worst sample) {s.cosine_similarity:.8f}"
            + (f"  top-1 agreement {s.top1_agreement:.4f}" if s.top1_agreement is not None else "")
            + (f"  top-5 agreement {s.top5_agreement:.4f}" if s.top5_agreement is not None else "")
            + f"  ({s.samples} samples)"
            + (f"\n  accuracy {self.accuracy:.4f} (reference {self.reference_accuracy:.4f})"
               if self.accuracy is not None and self.reference_accuracy is not None else ""),
            f"  tolerance  {t.statistic}(|err| - rtol*|ref|) <= atol={t.atol:g} (rtol={t.rtol:g})"
            + (f", cosine >= {t.min_cosine}" if t.min_cosine is not None else "")
            + (f", top-1 >= {t.min_top1}" if t.min_top1 is not None and s.top1_agreement is not None else ""),
        ]
        if self.calibration_synthetic:
            lines.append(f"  note: {SYNTHETIC_NOTE}")
        if self.detection is not None:
            lines[0] += f" (detections: {', '.join(self.detection.outputs.names)})"
            lines[-1] = "  judged as detections, not elementwise (the error figures above are the boxes' as arrays)"
            lines += self.detection.lines()
        if self.segmentation is not None:
            lines[0] += " (segmentation: judged as class maps)"
            lines[-1] = "  judged as class maps, not elementwise (the error figures above are the scores' as arrays)"
            lines += self.segmentation.lines()
        lines += [f"  {'failed' if not self.passed else 'outside the tolerance'}: {f}" for f in self.failures]
        if self.failures and self.detection is None and self.segmentation is None and self.smallest_passing_atol < INF:
            lines.append(f"  smallest atol that would have passed: {self.smallest_passing_atol:.3g}")
        if self.floor is not None:
            f = self.floor
            lines.append(f"  reference's own floor: max {f['max_abs']:.3g}  p99 {f['p99_abs']:.3g}  worst cosine "
                         f"{f['cosine']:.8f}" + (f"  top-1 {f['top1']:.4f}" if f.get("top1") is not None else ""))
        if self.unstable:
            from harness.floor import ADVICE, FLOOR_SLACK

            lines.append(f"  reference unstable: {'; '.join(self.unstable)}")
            lines.append(f"  {'the engine is within ' if self.within_floor else 'the engine is NOT within '}"
                         f"{FLOOR_SLACK:g}x the reference's floor" + ("" if self.within_floor else ": a failure of its own"))
            lines.append(f"  what to do: {ADVICE}")
        return "\n".join(lines)


def _row(label: str, largest: float, p99: float, mean: float, median: float) -> str:
    return f"  {label}  max {largest:.3g}  p99 {p99:.3g}  mean {mean:.3g}  median {median:.3g}"


def top1_accuracy(outputs: np.ndarray, labels: np.ndarray | None, classes: bool = True) -> float | None:
    """Top-1 accuracy of a class-score output against integer labels; None where it doesn't apply."""
    outputs = np.asarray(outputs)
    if labels is None or not classes or outputs.ndim != 2 or len(labels) != len(outputs):
        return None
    return float(np.mean(np.asarray(outputs).argmax(1) == np.asarray(labels)))


def compare_output(
    name: str,
    actual: np.ndarray,
    ref: np.ndarray,
    tolerance: Tolerance,
    backend: str = "",
    precision: str = "",
    labels: np.ndarray | None = None,
    classes: bool = False,
    floor: OutputFloor | None = None,
) -> OutputComparison:
    """`classes`: the output is class scores, so top-1/top-5 agreement (and accuracy, given
    labels) are computed and `tolerance.min_top1` applies; otherwise they are not."""
    if actual.shape != ref.shape:
        raise HarnessError(f"output {name!r}: shape {actual.shape} vs reference {ref.shape}; the engines disagree on the model")
    if classes:
        check_class_output(name, ref)
    stats = error_stats(actual, ref, classes)
    a, r = np.asarray(actual, np.float64), np.asarray(ref, np.float64)
    excess = (np.abs(a - r) - tolerance.rtol * np.abs(r)).ravel()
    needed = max(statistic_of(excess, tolerance.statistic), 0.0) if excess.size else 0.0
    failures = []
    if not np.all(np.isfinite(a)):
        failures.append(f"{int(np.sum(~np.isfinite(a)))} non-finite values")
    if needed > tolerance.atol:
        failures.append(f"{tolerance.statistic} error {needed:.3g} > atol {tolerance.atol:g}")
    if tolerance.min_cosine is not None and stats.cosine_similarity < tolerance.min_cosine:
        failures.append(f"cosine similarity {stats.cosine_similarity:.8f} < {tolerance.min_cosine}")
    if tolerance.min_top1 is not None and stats.top1_agreement is not None and stats.top1_agreement < tolerance.min_top1:
        failures.append(f"top-1 agreement {stats.top1_agreement:.4f} < {tolerance.min_top1}")
    unstable = tuple(floor.exceeds(r, tolerance, classes)) if floor is not None else ()
    # A non-finite value is never the reference's noise.
    within = (bool(unstable) and floor is not None and bool(np.all(np.isfinite(a)))
              and floor.holds(actual, ref, tolerance, classes))  # the original dtypes: integers are never excused
    return OutputComparison(
        name, stats, tolerance, needed, tuple(failures), backend, precision,
        top1_accuracy(actual, labels, classes), top1_accuracy(ref, labels, classes),
        unstable=unstable, within_floor=bool(within), floor=floor.summary() if floor is not None else None,
    )


@dataclass(frozen=True)
class Comparison:
    results: tuple[OutputComparison, ...] = field(default_factory=tuple)
    skipped: tuple[tuple[str, str, str], ...] = ()  # (backend, precision, why it could not run here)
    warnings: tuple[str, ...] = ()  # about the golden itself (e.g. outputs that hardly depend on the input)
    reference: str = ""  # what the outputs were compared with: "golden PATH", or TensorFlow run now (no golden)

    @property
    def passed(self) -> bool:
        """Every output compared passed, and at least one was: nothing compared is not a pass."""
        return bool(self.results) and all(r.passed for r in self.results)

    def __str__(self) -> str:
        return "\n".join([str(r) for r in self.results] + [f"{b}-{p}: skipped: {why}" for b, p, why in self.skipped]
                         + [f"warning: {w}" for w in self.warnings])


def compare(
    actual: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    tolerance: Tolerance | Mapping[str, Tolerance],
    backend: str = "",
    precision: str = "",
    labels: np.ndarray | None = None,
    classes: Collection[str] = (),
    floors: Mapping[str, OutputFloor] | None = None,
    detections: Sequence[tuple[DetectionOutputs, DetectionTolerance]] = (),
    segmentations: Sequence[tuple[str, SegmentationTolerance]] = (),
) -> Comparison:
    """Compare every reference output; `tolerance` may be one for all or one per output;
    `classes` names the outputs that are class scores; `floors` the reference's own noise
    floor per output (harness.floor), where the golden has one; `detections` and
    `segmentations` the outputs judged as detections and as class maps instead."""
    # An engine whose samples all came out alike has no NAME:shape where the reference has one.
    missing = [k for k in reference if k not in actual and not k.endswith(SHAPE)]
    if missing:
        raise HarnessError(f"outputs {missing} missing from {backend or 'the engine'}'s results ({sorted(actual)})")
    results = []
    grouped = {n: (which, tol) for which, tol in detections for n in which.names}
    maps = dict(segmentations)
    for name, ref in reference.items():
        if name.endswith(SHAPE):  # an output's shapes per sample: judged with the output
            continue
        if name in maps:
            results.append(_segmentation_result(name, np.asarray(actual[name]), np.asarray(ref), maps[name],
                                                backend, precision))
            continue
        if name in grouped:
            which, det_tol = grouped[name]
            if name == which.boxes:
                results.append(_detection_result(actual, reference, which, det_tol, backend, precision))
            continue
        tol = tolerance if isinstance(tolerance, Tolerance) else tolerance[name]
        if name + SHAPE in reference or name + SHAPE in actual:
            results.append(_by_sample_result(name, actual, reference, tol, backend, precision))
            continue
        results.append(compare_output(name, np.asarray(actual[name]), np.asarray(ref), tol, backend, precision, labels,
                                      name in classes, (floors or {}).get(name)))
    return Comparison(tuple(results))


def _by_sample_result(name: str, actual: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                      tolerance: Tolerance, backend: str, precision: str) -> OutputComparison:
    """An output whose shape depends on the data (harness.backends.base.join_samples), judged
    sample by sample: each sample's shape must be the reference's (elementwise figures mean
    nothing otherwise), then its values within `tolerance`."""
    shapes_a, shapes_r = _same_samples(actual, reference, name)
    if shapes_a == shapes_r:  # every sample's own values (no padding in the statistics), a row each
        def rows(outputs: Mapping[str, np.ndarray]) -> np.ndarray:
            return np.concatenate([_as_rows(sample_output(outputs, name, i)) for i in range(len(shapes_r))])

        return compare_output(name, rows(actual), rows(reference), tolerance, backend, precision)
    differ = [(i, sa, sr) for i, (sa, sr) in enumerate(zip(shapes_a, shapes_r)) if sa != sr]
    failure = (f"{len(differ)} of {len(shapes_r)} samples have another shape than the reference's (its size depends "
               "on the data): " + "; ".join(f"sample {i}: {sa} vs {sr}" for i, sa, sr in differ[:4])
               + ("" if len(differ) <= 4 else "; ...") + "; a detector's outputs are better judged as detections "
               "(`detections = {...}` on its boxes output in [tool.harness])")
    return OutputComparison(name, error_stats(*padded_alike(actual, reference, name)), tolerance, INF, (failure,),
                            backend, precision)


def _as_rows(x: np.ndarray) -> np.ndarray:
    """A sample's output as rows of its last axis ((1, K, 4) and (K, 4) alike: K rows)."""
    return x.reshape(-1, x.shape[-1]) if x.ndim >= 2 else x.reshape(-1, 1)


def _same_samples(actual: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                  name: str) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """Each side's per-sample shapes of `name`; a HarnessError where the two have different numbers
    of samples (a golden written before outputs without a row per sample were kept per sample)."""
    shapes_a, shapes_r = per_sample_shapes(actual, name), per_sample_shapes(reference, name)
    if len(shapes_a) != len(shapes_r):
        raise HarnessError(f"output {name!r}: {len(shapes_a)} samples from the engine vs {len(shapes_r)} in the "
                           "reference: its shape depends on the data, and a golden written before such outputs were "
                           "kept per sample (NAME:shape) cannot be compared; write the golden again (harness golden)")
    return shapes_a, shapes_r


def padded_alike(actual: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                 name: str) -> tuple[np.ndarray, np.ndarray]:
    """Output `name` of both sides with every sample zero-padded to the largest shape either side
    has, so the two line up as arrays (a missing box reads as an error of the box's size)."""
    shapes_a, shapes_r = _same_samples(actual, reference, name)
    shapes = shapes_a + shapes_r
    if len({len(s) for s in shapes}) != 1:
        raise HarnessError(f"output {name!r}: samples of different ranks {sorted(set(shapes))}")
    largest = tuple(int(d) for d in np.max(shapes, axis=0)) if shapes and shapes[0] else ()

    def padded(outputs: Mapping[str, np.ndarray], own: list[tuple[int, ...]]) -> np.ndarray:
        out = np.zeros((len(own), *largest), np.asarray(outputs[name]).dtype)
        for i, shape in enumerate(own):
            out[sample_index(i, shape)] = sample_output(outputs, name, i)
        return out

    return padded(actual, shapes_a), padded(reference, shapes_r)


def _segmentation_result(name: str, actual: np.ndarray, reference: np.ndarray, tolerance: SegmentationTolerance,
                         backend: str, precision: str) -> OutputComparison:
    from harness.segmentation import compare_segmentation

    judged = compare_segmentation(name, actual, reference, tolerance)
    return OutputComparison(name, error_stats(actual, reference), Tolerance(atol=INF), 0.0, judged.failures, backend,
                            precision, segmentation=judged)


def _detection_result(actual: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], which: DetectionOutputs,
                      tolerance: DetectionTolerance, backend: str, precision: str) -> OutputComparison:
    from harness.detections import compare_detections

    judged = compare_detections(actual, reference, which, tolerance)
    failures = list(judged.failures)
    for name in which.names:
        if np.issubdtype(np.asarray(actual[name]).dtype, np.floating) and not np.all(np.isfinite(actual[name])):
            failures.append(f"{name}: {int(np.sum(~np.isfinite(actual[name])))} non-finite values")
    stats = error_stats(*padded_alike(actual, reference, which.boxes))  # a data-dependent count: padded alike
    return OutputComparison(which.boxes, stats, Tolerance(atol=INF), 0.0, tuple(failures), backend, precision,
                            detection=judged)
