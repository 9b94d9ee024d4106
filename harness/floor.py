"""The reference's own noise floor: how far TensorFlow's outputs move under computations that
are all equally correct in fp32, measured when a golden is written and stored beside it.

Why these alternatives: a correct fp32 implementation is, in backward-error terms, the exact
computation on inputs (and intermediates) moved by a few units in the last place; another
engine differs from TensorFlow by such moves and by the order it sums in.  So the floor is the
worst, element by element, of three runs of the same frozen graph beside the golden run:

- the golden samples **one at a time** instead of as one batch (other kernel blocking, so
  another summation order: a matrix product of one row is not blocked as one of 32);
- every float input **one ulp up**, and **one ulp down** (`numpy.nextafter`).

All three run in the process that writes the golden, on the runner it used, so a floor costs
three more inferences of the golden samples, not a second TensorFlow.  (Another thread count or
oneDNN switched off would need a new process: TensorFlow fixes both when it starts.)

A well-conditioned model's floor is a few ulps of its outputs (digits: ~1e-6); an
ill-conditioned one's (a softmax saturated by huge logits, a difference of two large numbers,
an argmax on near-tied scores) reaches its tolerance: such an output is "reference unstable",
and an engine whose error is within `FLOOR_SLACK` times the floor is not reported as broken.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.compare import Tolerance, cosine_per_sample, statistic_of

HOW = "the elementwise worst of TensorFlow runs beside the golden one (harness.floor): "
# An engine's error counts as "within the floor" up to this many times the floor's own: the
# floor is one alternative's distance from the reference; another correct implementation is a
# further such distance, and three alternatives sample the spread thinly.
FLOOR_SLACK = 4.0
ADVICE = ("declare the output as class scores (`classes = true` in its [tool.harness] table: judged by top-1 "
          "agreement), compare the logits before the softmax (--output), or loosen this output's tolerance to "
          "the floor")


@dataclass(frozen=True)
class OutputFloor:
    """One output's floor over the alternatives: the elementwise worst |alternative - reference|,
    each sample's worst cosine, and (class scores) whether every alternative kept each sample's
    top-1 class."""

    output: str
    abs_error: np.ndarray
    cosine_per_sample: np.ndarray
    top1_kept: np.ndarray | None = None

    @property
    def cosine(self) -> float:
        return float(self.cosine_per_sample.min(initial=1.0))

    @property
    def top1(self) -> float | None:
        return None if self.top1_kept is None else float(np.mean(self.top1_kept))

    @property
    def max_abs(self) -> float:
        return float(self.abs_error.max(initial=0.0))

    @property
    def p99_abs(self) -> float:
        return float(np.percentile(self.abs_error, 99)) if self.abs_error.size else 0.0

    def summary(self) -> dict[str, Any]:
        return {"max_abs": self.max_abs, "p99_abs": self.p99_abs, "cosine": self.cosine, "top1": self.top1}

    def arrays(self) -> dict[str, np.ndarray]:
        """What floor.npz holds of this output."""
        out = {self.output: self.abs_error, f"{self.output}.cosine": self.cosine_per_sample}
        if self.top1_kept is not None:
            out[f"{self.output}.top1"] = self.top1_kept
        return out

    def _excess(self, ref: np.ndarray, tolerance: Tolerance) -> np.ndarray:
        return self.abs_error.astype(np.float64) - tolerance.rtol * np.abs(np.asarray(ref, np.float64))

    def exceeds(self, ref: np.ndarray, tolerance: Tolerance, classes: bool) -> list[str]:
        """How the reference fails `tolerance` against itself (empty: it holds steady within it)."""
        why = []
        excess = self._excess(ref, tolerance).ravel()
        needed = max(statistic_of(excess, tolerance.statistic), 0.0) if excess.size else 0.0
        if needed > tolerance.atol:
            why.append(f"its own {tolerance.statistic} error {needed:.3g} > atol {tolerance.atol:g}")
        if tolerance.min_cosine is not None and self.cosine < tolerance.min_cosine:
            why.append(f"its own worst cosine {self.cosine:.6f} < {tolerance.min_cosine}")
        if classes and tolerance.min_top1 is not None and self.top1 is not None and self.top1 < tolerance.min_top1:
            why.append(f"its own top-1 agreement {self.top1:.4f} < {tolerance.min_top1}")
        return why

    def holds(self, actual: np.ndarray, ref: np.ndarray, tolerance: Tolerance, classes: bool) -> bool:
        """Whether an engine's failures all lie where the reference itself is unsteady, each within
        FLOOR_SLACK times the floor there: every element outside the tolerance is one the floor
        puts outside it too, every sample under the cosine minimum one whose floor is too, every
        changed top-1 class one an alternative changed.  Never for integer or boolean outputs."""
        r, a = np.asarray(ref), np.asarray(actual)
        if not np.issubdtype(r.dtype, np.floating) or a.shape != r.shape or self.abs_error.shape != r.shape:
            return False
        a64, r64 = a.astype(np.float64), r.astype(np.float64)
        error = np.abs(a64 - r64)
        outside = error - tolerance.rtol * np.abs(r64) > tolerance.atol
        if np.any(outside & ~(self._excess(r, tolerance) > tolerance.atol)):
            return False
        if np.any(error[outside] > FLOOR_SLACK * self.abs_error[outside]):
            return False
        if tolerance.min_cosine is not None:
            cosine = cosine_per_sample(a64, r64)
            low = cosine < tolerance.min_cosine
            floor = self.cosine_per_sample.astype(np.float64)
            if np.any(low & (floor >= tolerance.min_cosine)) or np.any((1 - cosine[low]) > FLOOR_SLACK * (1 - floor[low])):
                return False
        if classes and tolerance.min_top1 is not None and r.ndim == 2:
            changed = a64.argmax(1) != r64.argmax(1)
            kept = self.top1_kept if self.top1_kept is not None else np.ones(len(r), bool)
            if np.any(changed & kept):
                return False
        return True


def _nudged(feed: Mapping[str, np.ndarray], direction: float) -> dict[str, np.ndarray]:
    out = {}
    for name, value in feed.items():
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.floating):
            value = np.nextafter(value, np.asarray(direction, value.dtype)).astype(value.dtype)
        out[name] = value
    return out


def measure_floor(infer: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]],
                  feed: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray], classes: Collection[str],
                  one_at_a_time: bool = True,
                  also: Sequence[Mapping[str, np.ndarray]] = ()) -> tuple[dict[str, OutputFloor], list[str]]:
    """The floor of every output of `outputs` (the reference's on `feed`) and the alternatives run
    (their names); `one_at_a_time` False where the model's batch size is fixed; `also`: outputs
    of other correct runs to count in (TensorFlow run again now, against a stored golden)."""
    n = len(next(iter(feed.values())))
    alternatives: list[Mapping[str, np.ndarray]] = list(also)
    ran = ["TensorFlow run again now"] * len(also)
    if one_at_a_time and n > 1:
        singles = [infer({k: np.asarray(v)[i:i + 1] for k, v in feed.items()}) for i in range(n)]
        alternatives.append({o: np.concatenate([np.asarray(s[o]) for s in singles]) for o in outputs})
        ran.append("the samples one at a time")
    alternatives += [infer(_nudged(feed, np.inf)), infer(_nudged(feed, -np.inf))]
    ran += ["float inputs one ulp up", "one ulp down"]
    floors = {}
    for name, ref in outputs.items():
        r = np.asarray(ref)
        worst = np.zeros(r.shape, np.float32)
        cosine = np.ones(len(r) if r.ndim else 1)
        is_classes = name in classes and r.ndim == 2 and r.shape[1] >= 2
        kept = np.ones(len(r), bool) if is_classes else None
        for alt in alternatives:
            a = np.asarray(alt[name]).reshape(r.shape)
            # A non-finite difference (inf - inf) is the reference's own: the worst possible.
            diff = np.abs(a.astype(np.float64) - r.astype(np.float64))
            worst = np.maximum(worst, np.nan_to_num(diff, nan=np.inf).astype(np.float32))
            if r.ndim:
                cosine = np.minimum(cosine, cosine_per_sample(a.astype(np.float64), r.astype(np.float64)))
            if kept is not None:
                kept &= a.argmax(1) == r.argmax(1)
        floors[name] = OutputFloor(name, worst, cosine, kept)
    return floors, ran


def unstable_warnings(floors: Mapping[str, OutputFloor], outputs: Mapping[str, np.ndarray],
                      tolerances: Mapping[str, Mapping[str, Tolerance]], classes: Collection[str]) -> list[str]:
    """'reference unstable' for each output whose floor fails a precision's tolerance."""
    found = []
    for name, floor in floors.items():
        failing = {p: floor.exceeds(outputs[name], tols[name], name in classes)
                   for p, tols in tolerances.items() if name in tols}
        failing = {p: why for p, why in failing.items() if why}
        if failing:
            found.append(f"output {name!r}: reference unstable under the {', '.join(failing)} tolerance"
                         f"{'s' if len(failing) > 1 else ''} ({'; '.join(next(iter(failing.values())))}; floor: max "
                         f"{floor.max_abs:.3g}, p99 {floor.p99_abs:.3g}, worst cosine {floor.cosine:.6f}"
                         + (f", top-1 {floor.top1:.4f}" if floor.top1 is not None else "")
                         + f"): TensorFlow does not hold this output steady itself, so an engine within "
                           f"{FLOOR_SLACK:g}x this floor is reported UNSTABLE, not FAIL; {ADVICE}")
    return found


def refusal(model: str, precision: str, outputs: Collection[str]) -> str:
    """Why `harness debug --fix` does not search: the reference cannot hold these outputs steady."""
    return (f"{model}: not searching for a mixed {precision} model: TensorFlow does not hold output(s) "
            f"{', '.join(outputs)} steady even in fp32 (their noise floor fails the fp32 tolerance; `harness debug` "
            f"prints it), so no precision kept out of {precision} can make them agree with it; {ADVICE}")
