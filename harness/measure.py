"""How a speedup is measured so that a noisy shared machine cannot fake one.

- **Rounds from a warmed-up estimate.** The first call of a runner includes one-off work
  (TensorFlow traces and allocates, ONNX Runtime sizes its arenas); it used to set the round
  count, so TensorFlow, the baseline every speedup divides by, got 5 rounds.  Now the first
  call is discarded and the estimate is the median of the next few.
- **A minimum number of rounds per percentile.** A percentile q is reported with confidence
  when at least `TAIL_SAMPLES` samples lie beyond it: n >= 10 / (1 - q), so p50 needs 20,
  p90 100 and p99 1000 (MLPerf LoadGen asks for thousands of queries before a p99; this
  is the same idea at a size a CI run can afford).  Every row gets at least p50's 20
  (`MIN_ROUNDS`); a p90/p99 from fewer samples than it needs is marked low-confidence.
  A low percentile needs the same below it: the 10th needs 100.
- **Interleaved.** An engine's rounds alternate in blocks with rounds of the TensorFlow
  reference (`Interleaver`), so slow drift of the machine (another tenant, thermal limits)
  lands on both sides of the ratio.  Blocks are about `BLOCK_SECONDS` long and at least
  `MIN_BLOCK` calls: short enough to follow drift, long enough that the two models don't evict
  each other's caches on every call.
- **The speedup of the undisturbed rounds.** Noise on a shared machine only ever adds time,
  and it does not add it in proportion: on the 2-core CI machine TensorFlow's digits call
  switched between two speeds (3.9 and 6.0 ms at batch 8) for seconds at a time while ONNX
  Runtime's stayed put, so the ratio of medians swung between 57x and 83x within one run.
  The ratio of the two sides' 10th percentiles (`SPEEDUP_QUANTILE`) stayed within 58-68x
  across those stretches and 61-62x across processes: the speedup is that ratio, where a row
  has the 100 rounds a 10th percentile needs; a row with fewer (a slow model at a large
  batch) compares the lowest percentile its rounds support, up to the median at 20
  (`speedup_percentile`).  Medians and the tail are still reported per row.
- **A confidence interval on every speedup**: a percentile bootstrap that resamples whole
  blocks (a reference block with the engine block after it), keeping the pairing the
  interleaving made (`paired_speedup`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TAIL_SAMPLES = 10
PERCENTILES = (50, 90, 99)
BLOCK_SECONDS = 0.05
MAX_BLOCK = 64
# Calls per block at least: single alternating calls of InceptionV3 (batch 1) had OpenVINO int8
# at 18 ms (3.8x TensorFlow) where back to back it runs 7.5 ms; each side's first calls after
# the other's run on caches and cores the other just used (and its thread pools still spin).
MIN_BLOCK = 5
MAX_ROUNDS = 2000
REWARM_BELOW = 0.1  # seconds per call: shorter calls get an untimed first call in each block
CONFIDENCE = 0.95
RESAMPLES = 2000
SPEEDUP_QUANTILE = 10  # percent: each side's fast end, the least disturbed by other tenants


def rounds_needed(percentile: float) -> int:
    """Samples needed before `percentile` (e.g. 99, or 10) has TAIL_SAMPLES samples beyond it
    (above a high percentile, below a low one)."""
    share = min(percentile, 100 - percentile) / 100
    return math.ceil(TAIL_SAMPLES / share - 1e-9)


MIN_ROUNDS = rounds_needed(50)  # 20: what the median needs


def speedup_percentile(rounds: int) -> float:
    """The percentile a speedup compares: SPEEDUP_QUANTILE where the rounds support it (100
    rounds for the 10th), otherwise the lowest one with TAIL_SAMPLES rounds below it, up to
    the median (20 rounds: a slow row at batch 32 is compared on its median)."""
    return float(min(50.0, max(SPEEDUP_QUANTILE, 100 * TAIL_SAMPLES / max(rounds, 1))))


def low_confidence(rounds: int) -> list[str]:
    """The reported percentiles that `rounds` samples are too few for, e.g. ["p99"]."""
    return [f"p{q}" for q in PERCENTILES if rounds < rounds_needed(q)]


def warm_estimate(call: Callable[[], object], calls: int = 3,
                  clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds per call after the first (discarded: tracing, allocation): the median of `calls`."""
    call()
    times = []
    for _ in range(calls):
        start = clock()
        call()
        times.append(clock() - start)
    return float(np.median(times))


@dataclass(frozen=True)
class RoundPlan:
    rounds: int  # of the engine (and, interleaved, as many of the reference)
    block: int  # consecutive rounds of one side before the other's turn

    @classmethod
    def of(cls, estimate: float, target_seconds: float, reference_estimate: float | None = None) -> RoundPlan:
        """As many rounds as fit `target_seconds` (reference calls included when interleaved),
        at least MIN_ROUNDS and at most MAX_ROUNDS, a whole number of blocks."""
        per_round = estimate + (reference_estimate or 0.0)
        rounds = int(np.clip(target_seconds / max(per_round, 1e-7), MIN_ROUNDS, MAX_ROUNDS))
        if reference_estimate is None:
            return cls(rounds, rounds)
        block = int(np.clip(BLOCK_SECONDS / max(max(estimate, reference_estimate), 1e-7), MIN_BLOCK, MAX_BLOCK))
        block = min(block, rounds // 4 or 1)  # at least four blocks to resample
        return cls(math.ceil(rounds / block) * block, block)


@dataclass
class Interleaver:
    """Called before every engine round (pytest-benchmark's `setup`): at the start of each
    block it times `block` calls of the reference, so reference and engine alternate.  It stops
    after `rounds` (pytest-benchmark calls setup once more under --benchmark-cprofile).

    `rewarm` (the engine's call): where calls are short, each side's first call after the
    other's block runs on caches and thread pools the other side just took over; measured on
    InceptionV3 at batch 1, alternating single calls made OpenVINO int8 look 4.0x TensorFlow
    where back to back it is 6.7x.  So each block starts with one untimed call of its side."""

    reference: Callable[[], object]
    block: int
    rounds: int
    rewarm: Callable[[], object] | None = None
    seconds: list[float] = field(default_factory=list)  # the reference's, in order
    _rounds: int = 0

    def before_round(self) -> None:
        if self._rounds >= self.rounds:
            return
        if self._rounds % self.block == 0:
            if self.rewarm is not None:
                self.reference()
            for _ in range(self.block):
                start = time.perf_counter()
                self.reference()
                self.seconds.append(time.perf_counter() - start)
            if self.rewarm is not None:
                self.rewarm()
        self._rounds += 1


@dataclass(frozen=True)
class Speedup:
    point: float  # reference's time at `percentile` / engine's, interleaved rounds
    low: float
    high: float
    confidence: float = CONFIDENCE
    percentile: float = SPEEDUP_QUANTILE

    @property
    def interval(self) -> tuple[float, float]:
        return self.low, self.high

    @property
    def relative_halfwidth(self) -> float:
        return (self.high - self.low) / (2 * self.point)

    def __str__(self) -> str:
        return f"{self.point:.2f}x [{self.low:.2f}, {self.high:.2f}]"

    @classmethod
    def exact(cls, point: float) -> Speedup:
        """A speedup with no interval known (a baseline's recorded ratio, an older JSON)."""
        return cls(point, point, point)


def paired_speedup(reference: Sequence[float], engine: Sequence[float], block: int,
                   resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0) -> Speedup:
    """`reference`'s SPEEDUP_QUANTILE over `engine`'s, measured in alternating blocks of `block`
    rounds, with a block-bootstrap percentile interval (blocks resampled as pairs)."""
    ref, eng = np.asarray(reference, np.float64), np.asarray(engine, np.float64)
    if ref.size != eng.size or ref.size == 0 or ref.size % block:
        raise ValueError(f"paired samples: {ref.size} reference and {eng.size} engine rounds in blocks of {block}")
    q = speedup_percentile(ref.size)
    point = float(np.percentile(ref, q) / np.percentile(eng, q))
    blocks = ref.size // block
    if blocks < 2:
        return Speedup(point, point, point, confidence, q)
    ref_b, eng_b = ref.reshape(blocks, block), eng.reshape(blocks, block)
    pick = np.random.default_rng(seed).integers(0, blocks, size=(resamples, blocks))
    ratios = (np.percentile(ref_b[pick].reshape(resamples, -1), q, axis=1)
              / np.percentile(eng_b[pick].reshape(resamples, -1), q, axis=1))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return Speedup(point, float(min(low, point)), float(max(high, point)), confidence, q)


@dataclass(frozen=True)
class Interleaved:
    """What `time_beside` measured: the timed call's seconds and its ratio to the reference."""

    seconds: list[float]
    speedup: Speedup  # reference time / timed call's time
    plan: RoundPlan
    reference_seconds: list[float]


def time_beside(benchmark: Any, call: Callable[[], object], reference: Callable[[], object],
                target_seconds: float, plain: Callable[[], object] | None = None,
                rewarm: bool = False) -> Interleaved:
    """Time `call` as pytest-benchmark's rounds (`benchmark.pedantic`) with `reference` timed in
    alternating blocks from its setup hook.  `plain`: the same work as `call` without what
    `call` records (estimates and re-warm calls use it); `rewarm`: an untimed first call of each
    side in each block where calls are shorter than REWARM_BELOW."""
    plain = plain or call
    estimate, reference_estimate = warm_estimate(plain), warm_estimate(reference)
    plan = RoundPlan.of(estimate, target_seconds, reference_estimate)
    short = rewarm and max(estimate, reference_estimate) < REWARM_BELOW
    interleaver = Interleaver(reference, plan.block, plan.rounds, plain if short else None)
    benchmark.pedantic(call, rounds=plan.rounds, iterations=1, warmup_rounds=0, setup=interleaver.before_round)
    seconds = list(benchmark.stats.stats.data)
    paired = interleaver.seconds[: len(seconds)]
    return Interleaved(seconds, paired_speedup(paired, seconds, plan.block), plan, paired)


@dataclass(frozen=True)
class AddedCost:
    """Seconds per call that one path adds over another (`added_cost`), with a 95% interval."""

    point: float
    low: float
    high: float
    calls: int  # calls per block, each side

    def share_of(self, seconds: float) -> tuple[float, float, float]:
        """The cost as a ratio over a call of `seconds`: 1 + cost / seconds (point, low, high)."""
        return 1 + self.point / seconds, 1 + self.low / seconds, 1 + self.high / seconds


def added_cost(through: Callable[[], object], bare: Callable[[], object], blocks: int = 40,
               target_seconds: float = 2.0, resamples: int = RESAMPLES, seed: int = 0,
               clock: Callable[[], float] = time.perf_counter) -> AddedCost:
    """What `through` costs beyond `bare` per call, in seconds: alternating blocks of many calls
    each, the median over block pairs of (through's mean - bare's mean), with a bootstrap 95%
    interval over the pairs.  For microsecond differences a ratio of two noisy millisecond
    timings cannot show (the harness's work around a library call), so `bare` should be cheap."""
    per_call = max(warm_estimate(through, clock=clock), warm_estimate(bare, clock=clock), 1e-7)
    calls = max(10, int(target_seconds / (2 * blocks * per_call)))
    diffs = np.empty(blocks)
    for b in range(blocks):
        means = []
        for fn in (bare, through) if b % 2 else (through, bare):  # alternate which goes first
            start = clock()
            for _ in range(calls):
                fn()
            means.append((clock() - start) / calls)
        diffs[b] = means[1] - means[0] if b % 2 else means[0] - means[1]
    point = float(np.median(diffs))
    pick = np.random.default_rng(seed).integers(0, blocks, size=(resamples, blocks))
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(np.median(diffs[pick], axis=1), [tail, 100 - tail])
    return AddedCost(point, float(min(low, point)), float(max(high, point)), calls)
