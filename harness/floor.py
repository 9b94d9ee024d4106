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

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.compare import Tolerance, error_stats, statistic_of

HOW = ("worst of three TensorFlow runs beside the golden one: the samples one at a time instead of as a batch, "
       "float inputs one ulp up, and one ulp down (harness.floor)")
# An engine's error counts as "within the floor" up to this many times the floor's own: the
# floor is one alternative's distance from the reference; another correct implementation is a
# further such distance, and three alternatives sample the spread thinly.
FLOOR_SLACK = 4.0
ADVICE = ("declare the output as class scores (`classes = true` in its [tool.harness] table: judged by top-1 "
          "agreement), compare the logits before the softmax (--output), or loosen this output's tolerance to "
          "the floor")


@dataclass(frozen=True)
class OutputFloor:
    """One output's floor: the elementwise worst |alternative - reference| and the worst
    per-sample cosine and top-1 agreement (class scores) over the alternatives."""

    output: str
    abs_error: np.ndarray
    cosine: float
    top1: float | None

    @property
    def max_abs(self) -> float:
        return float(self.abs_error.max(initial=0.0))

    @property
    def p99_abs(self) -> float:
        return float(np.percentile(self.abs_error, 99)) if self.abs_error.size else 0.0

    def summary(self) -> dict[str, Any]:
        return {"max_abs": self.max_abs, "p99_abs": self.p99_abs, "cosine": self.cosine, "top1": self.top1}

    def needed_atol(self, ref: np.ndarray, tolerance: Tolerance) -> float:
        """The atol the reference itself needs under `tolerance`'s statistic and rtol."""
        excess = (self.abs_error.astype(np.float64) - tolerance.rtol * np.abs(np.asarray(ref, np.float64))).ravel()
        return max(statistic_of(excess, tolerance.statistic), 0.0) if excess.size else 0.0

    def exceeds(self, ref: np.ndarray, tolerance: Tolerance, classes: bool) -> list[str]:
        """How the reference fails `tolerance` against itself (empty: it holds steady within it)."""
        why = []
        needed = self.needed_atol(ref, tolerance)
        if needed > tolerance.atol:
            why.append(f"its own {tolerance.statistic} error {needed:.3g} > atol {tolerance.atol:g}")
        if tolerance.min_cosine is not None and self.cosine < tolerance.min_cosine:
            why.append(f"its own worst cosine {self.cosine:.6f} < {tolerance.min_cosine}")
        if classes and tolerance.min_top1 is not None and self.top1 is not None and self.top1 < tolerance.min_top1:
            why.append(f"its own top-1 agreement {self.top1:.4f} < {tolerance.min_top1}")
        return why

    def holds(self, ref: np.ndarray, tolerance: Tolerance, needed: float, cosine: float,
              top1: float | None) -> bool:
        """Whether an engine's figures (needed atol, worst cosine, top-1 agreement) are within
        FLOOR_SLACK times this floor on each of them."""
        if needed > FLOOR_SLACK * self.needed_atol(ref, tolerance):
            return False
        if (1 - cosine) > FLOOR_SLACK * (1 - self.cosine):
            return False
        return top1 is None or self.top1 is None or (1 - top1) <= FLOOR_SLACK * (1 - self.top1)


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
                  one_at_a_time: bool = True) -> dict[str, OutputFloor]:
    """The floor of every output of `outputs` (the reference's on `feed`), from the alternatives
    above; `one_at_a_time` False where the model's batch size is fixed."""
    n = len(next(iter(feed.values())))
    alternatives: list[Mapping[str, np.ndarray]] = []
    if one_at_a_time and n > 1:
        singles = [infer({k: np.asarray(v)[i:i + 1] for k, v in feed.items()}) for i in range(n)]
        alternatives.append({o: np.concatenate([s[o] for s in singles]) for o in outputs})
    alternatives += [infer(_nudged(feed, np.inf)), infer(_nudged(feed, -np.inf))]
    floors = {}
    for name, ref in outputs.items():
        r = np.asarray(ref)
        worst = np.zeros(r.shape, np.float32)
        cosine, top1 = 1.0, None
        for alt in alternatives:
            a = np.asarray(alt[name])
            # A non-finite difference (inf - inf) is the reference's own: the worst possible.
            diff = np.abs(a.astype(np.float64) - r.astype(np.float64))
            worst = np.maximum(worst, np.nan_to_num(diff, nan=np.inf).astype(np.float32))
            stats = error_stats(a, r, name in classes and r.ndim == 2 and r.shape[1] >= 2)
            cosine = min(cosine, stats.cosine_similarity)
            if stats.top1_agreement is not None:
                top1 = stats.top1_agreement if top1 is None else min(top1, stats.top1_agreement)
        floors[name] = OutputFloor(name, worst, cosine, top1)
    return floors


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
