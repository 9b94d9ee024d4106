"""How a speedup is measured so that a noisy shared machine cannot fake one, in as little time
as the uncertainty allows.

- **Round-robin over the reference and every engine** (`RoundRobin`): at one batch size, each
  round times a turn of TensorFlow and a turn of every engine still measuring, in an order that
  rotates every round.  TensorFlow is timed once per round for all engines, not once per engine,
  and slow drift of the machine (another tenant, thermal limits) lands on both sides of every
  ratio, since each ratio pairs turns of the same round.
- **A turn is a block of calls** of about `BLOCK_SECONDS` (at least `MIN_BLOCK` for calls under
  `REWARM_BELOW`, one for a long call), and where calls are short its first call is untimed:
  single alternating calls of InceptionV3 had OpenVINO int8 at 3.8x TensorFlow where back to
  back it is 6.7x (each side's first calls after the other's run on caches and thread pools the
  other just used).
- **The speedup is the ratio of the two sides' median turn** over the rounds both took part in
  (`ESTIMATOR`; a turn's figure is the median of its calls, robust to a call another tenant
  disturbed), with a 95% percentile bootstrap that resamples whole rounds, each round's two turns
  together.  Chosen by simulation on timings shaped like the 2-core machine's (per-turn noise ~5%,
  one turn in ten 20-60% slower), against the alternatives at the same data: the median of
  per-round ratios with its order-statistic interval covered 98% but was a third wider (the
  discrete interval of a median of 13-19 values is conservative); a bootstrap of that median
  covered 91-94%; a trimmed mean of log ratios 98-99% and wider; this one 96-97% from 13 rounds
  on, the narrowest.  The old estimator (a ratio of 10th percentiles, the median under 100 rounds,
  from a bootstrap over four blocks of five) covered 86%: its narrower intervals were partly
  too narrow.  The estimator does not change with the round count, so a baseline recorded on one
  machine compares like with like on another.  Not each turn's fastest call: the minimum of more
  calls is lower, so sides with turns of different lengths (12 calls of a 4 ms model against 50 of
  a 1 ms one) came out 0.4% apart from the true ratio.
- **Adaptive stopping**: an engine leaves the rotation when its interval's relative half-width
  is at most the target (`TARGET_HALFWIDTH`) or when the batch size's time cap is reached, and
  says which stopped it; TensorFlow keeps its turns while any engine still measures.  So rounds
  are spent where the uncertainty is, not where calls are cheap.
- **A minimum number of samples per percentile** for the latency figures: a percentile q is
  reported with confidence when at least `TAIL_SAMPLES` samples lie beyond it (p50 20, p90 100,
  p99 1000); a thinner p90/p99 is listed as low-confidence.  Every row gets the median's 20.
- **A busy machine is reported, not averaged in** (`CpuShare`): every round reads the CPU time
  the whole machine spent (/proc/stat) and this process's own (os.times); what other processes
  took during a row's rounds, as a share of the machine, travels with the row, and a row over
  `BUSY_SHARE` is marked: contention can slow one side more than the other while the interval
  stays tight (one run read 0.61x [0.59, 0.63] for what was 1.18x on an idle machine).
"""

from __future__ import annotations

import gc
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TAIL_SAMPLES = 10
PERCENTILES = (50, 90, 99)
BLOCK_SECONDS = 0.05
MAX_BLOCK = 64
# Calls per turn at least, where calls are short: single alternating calls of InceptionV3
# (batch 1) had OpenVINO int8 at 18 ms (3.8x TensorFlow) where back to back it runs 7.5 ms.
MIN_BLOCK = 5
# Seconds per call under which a turn starts with an untimed call.  At 0.1 s, ONNX Runtime fp16
# at batch 1 on the 2-core AVX2 EPYC (86-141 ms a call) fell on either side between runs: with
# the untimed call its turns read 86 ms (1.31x TensorFlow), without it 141 ms (0.92x).
REWARM_BELOW = 0.25
CONFIDENCE = 0.95
RESAMPLES = 2000
ROUND_RESAMPLES = 1000  # the round-robin's bootstrap, recomputed as rounds come in
# Rounds before a row may stop: fewer give a bootstrap of a handful of pairs (its coverage measured
# on synthetic timings shaped like the 2-core machine's: 94% at 6 rounds, 96-97% from 13 on).
MIN_TURNS = 6
# Relative half-width of the speedup's 95% interval at which an engine stops: the interval the
# main job printed on the 2-core machines (+-1% to +-4% on batch 8 and 32, wider at batch 1).
TARGET_HALFWIDTH = 0.02
MAX_SECONDS = 45.0  # per batch size: the round-robin's time cap (from MIN_TURNS rounds on)
BUSY_SHARE = 0.10  # others' share of the machine above which a row is marked as measured on a busy machine
ESTIMATOR = "round-robin ratio of median turns, round bootstrap"


def rounds_needed(percentile: float) -> int:
    """Samples needed before `percentile` (e.g. 99, or 10) has TAIL_SAMPLES samples beyond it
    (above a high percentile, below a low one)."""
    share = min(percentile, 100 - percentile) / 100
    return math.ceil(TAIL_SAMPLES / share - 1e-9)


MIN_ROUNDS = rounds_needed(50)  # 20: what the median needs


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
class Speedup:
    point: float  # the reference's time over the engine's (`ESTIMATOR`)
    low: float
    high: float
    confidence: float = CONFIDENCE
    estimator: str = ESTIMATOR

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
        """A speedup with no interval known (the reference's own 1.0, a baseline's recorded ratio)."""
        return cls(point, point, point)


def ratio_speedup(reference_turns: Sequence[float], engine_turns: Sequence[float], confidence: float = CONFIDENCE,
                  resamples: int = RESAMPLES, seed: int = 0) -> Speedup:
    """`ESTIMATOR`: the reference's median turn over the engine's, over the rounds both took part
    in, with a percentile bootstrap that resamples whole rounds (each round's two turns together,
    keeping the pairing the round-robin made)."""
    ref, eng = np.asarray(reference_turns, np.float64), np.asarray(engine_turns, np.float64)
    if ref.size != eng.size or ref.size == 0:
        raise ValueError(f"paired turns: {ref.size} reference and {eng.size} engine rounds")
    point = float(np.median(ref) / np.median(eng))
    if ref.size < 2:
        return Speedup(point, point, point, confidence)
    pick = np.random.default_rng(seed).integers(0, ref.size, size=(resamples, ref.size))
    ratios = np.median(ref[pick], axis=1) / np.median(eng[pick], axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return Speedup(point, float(min(low, point)), float(max(high, point)), confidence)


class CpuShare:
    """What other processes took of the machine between two `read()`s: the machine's busy CPU
    time (/proc/stat: user, nice, system, irq, softirq, steal) less this process's own (os.times:
    every thread of it), over wall time x CPUs.  Host-wide: in a container with a CPU quota,
    other tenants' work on other cores counts too.  Nothing where /proc/stat is missing."""

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.cpus = os.cpu_count() or 1

    def read(self) -> tuple[float, float, float] | None:
        """(machine busy seconds, this process's CPU seconds, wall seconds)."""
        try:
            with open("/proc/stat") as f:
                fields = f.readline().split()
        except OSError:
            return None
        if not fields or fields[0] != "cpu":
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in (fields[1:9] + ["0"] * 8)[:8])
        own = os.times()
        return ((user + nice + system + irq + softirq + steal) / self.tick, own.user + own.system, time.monotonic())

    def others(self, before: tuple[float, float, float] | None, after: tuple[float, float, float] | None
               ) -> tuple[float, float]:
        """(seconds of CPU other processes took, wall seconds x CPUs) between two readings."""
        if before is None or after is None:
            return 0.0, 0.0
        busy, own, wall = (a - b for a, b in zip(after, before))
        # signed: /proc/stat counts 10 ms ticks, so a short round can read less than this process's
        # own time; clamping each round would bias the sum upward (`Measured.others_share` clamps once)
        return busy - own, max(wall, 0.0) * self.cpus


@dataclass
class Measured:
    """One participant of a round-robin: every timed call (in order, for the latency figures and
    pytest-benchmark's row), its median call per round it took part in, and why it stopped."""

    name: str
    block: int  # timed calls per turn
    rewarm: bool  # an untimed call starts each turn
    seconds: list[float] = field(default_factory=list)
    turns: list[float] = field(default_factory=list)  # its median call per round it took part in
    rounds: list[int] = field(default_factory=list)  # which rounds
    speedup: Speedup | None = None
    stopped: str = ""  # "interval", "time cap", "reference", or the error
    error: BaseException | None = None
    checked: int = 0  # rounds its speedup was last computed from
    others_cpu: float = 0.0  # seconds other processes took during its rounds
    capacity: float = 0.0  # wall seconds x CPUs of its rounds

    @property
    def others_share(self) -> float | None:
        return max(0.0, self.others_cpu) / self.capacity if self.capacity > 0 else None

    @property
    def busy(self) -> bool:
        share = self.others_share
        return share is not None and share > BUSY_SHARE


Timer = Callable[[], float]


@dataclass
class RoundRobin:
    """Times `reference` and every engine of one batch size in rotating turns (see the module's
    docstring), each engine until its speedup interval is narrow enough or `max_seconds` passed.
    `timer` and `disable_gc` are pytest-benchmark's (`--benchmark-timer`, `--benchmark-disable-gc`),
    so both sides of every ratio are timed the same way as pytest-benchmark's own rows.
    `progress` gets a line every `progress_every` seconds: which rows still measure, how long it
    has run, each one's current interval."""

    engines: dict[str, Callable[[], object]]
    reference: Callable[[], object] | None = None
    target_halfwidth: float = TARGET_HALFWIDTH
    max_seconds: float = MAX_SECONDS
    timer: Timer = time.perf_counter
    disable_gc: bool = False
    progress: Callable[[str], None] | None = None
    progress_every: float = 10.0
    label: str = ""
    reference_name: str = "tensorflow-fp32"
    wall: Timer = time.monotonic  # what the time cap and the progress lines count (tests give a fake one)

    def run(self) -> dict[str, Measured]:
        calls = dict(self.engines)
        if self.reference is not None:
            calls = {self.reference_name: self.reference, **calls}
        measured: dict[str, Measured] = {}
        for name, call in calls.items():  # the first call (tracing, allocation) is discarded
            try:
                estimate = self._estimate(call)
            except Exception as e:  # noqa: BLE001 - one engine's failure is its row's, not the others'
                measured[name] = Measured(name, 0, False, stopped=f"failed: {type(e).__name__}: {e}", error=e)
                continue
            short = estimate < REWARM_BELOW
            block = int(np.clip(BLOCK_SECONDS / max(estimate, 1e-7), MIN_BLOCK if short else 1, MAX_BLOCK))
            measured[name] = Measured(name, max(block, 1), short)
        ref = measured.get(self.reference_name) if self.reference is not None else None
        if ref is not None and ref.error is not None:
            raise ref.error
        active = [n for n in calls if measured[n].error is None]
        share = CpuShare()
        start = self.wall()
        last_progress = start
        r = 0
        while any(n != self.reference_name for n in active):
            order = active[r % len(active):] + active[: r % len(active)]  # rotate who goes first
            before = share.read()
            for name in order:
                m = measured[name]
                try:
                    turn = self._turn(calls[name], m)
                except Exception as e:  # noqa: BLE001
                    m.error, m.stopped = e, f"failed: {type(e).__name__}: {e}"
                    continue
                m.seconds.extend(turn)
                m.turns.append(float(np.median(turn)))
                m.rounds.append(r)
            others, capacity = share.others(before, share.read())
            for name in order:
                measured[name].others_cpu += others
                measured[name].capacity += capacity
            if ref is not None and ref.error is not None:  # no reference, no ratio: the run is over
                raise ref.error
            active = [n for n in active if measured[n].error is None]
            elapsed = self.wall() - start
            ref_turns = dict(zip(ref.rounds, ref.turns)) if ref is not None else {}
            for name in [n for n in active if n != self.reference_name]:
                m = measured[name]
                n = len(m.rounds)
                # The interval is checked every round up to 40 rounds, then every n/20 (a long row of a
                # tiny model runs hundreds of rounds), and once more at the end if it moved on since.
                if ref is not None and (n <= 40 or n % (n // 20) == 0):
                    m.speedup = ratio_speedup([ref_turns[i] for i in m.rounds], m.turns, resamples=ROUND_RESAMPLES)
                    m.checked = n
                # Nothing stops before MIN_TURNS rounds, the cap included: fewer have no 95% interval.
                # (A long call's row may stop under the median's MIN_ROUNDS samples: its p50 is then
                # listed as low-confidence, while the speedup's interval is what the rounds are for.)
                if len(m.rounds) < MIN_TURNS:
                    continue
                if m.speedup is None or m.speedup.relative_halfwidth <= self.target_halfwidth:
                    m.stopped = "interval" if m.speedup is not None else "rounds"
                elif elapsed >= self.max_seconds:
                    m.stopped = "time cap"
                if m.stopped:
                    active.remove(name)
            r += 1
            if self.progress is not None and (self.wall() - last_progress >= self.progress_every or
                                              not any(n != self.reference_name for n in active)):
                last_progress = self.wall()
                self.progress(self._progress_line(measured, active, r, elapsed))
        if ref is not None:
            ref.stopped = "reference"
            ref.speedup = Speedup.exact(1.0)
            ref_turns = dict(zip(ref.rounds, ref.turns))
            for m in measured.values():  # the reported interval covers every round the row had
                if m is not ref and m.error is None and m.rounds and m.checked != len(m.rounds):
                    m.speedup = ratio_speedup([ref_turns[i] for i in m.rounds], m.turns, resamples=ROUND_RESAMPLES)
        return measured

    def _estimate(self, call: Callable[[], object]) -> float:
        """Seconds per call, to size the turns: the first call is discarded (tracing, allocation);
        one more decides a long call (3 s at batch 32: three more cost 9 s a participant), the
        median of three a short one."""
        call()
        timer = self.timer
        start = timer()
        call()
        first = timer() - start
        if first >= BLOCK_SECONDS:
            return first
        times = [first]
        for _ in range(2):
            start = timer()
            call()
            times.append(timer() - start)
        return float(np.median(times))

    def _turn(self, call: Callable[[], object], m: Measured) -> list[float]:
        if m.rewarm:
            call()
        timer, out = self.timer, []
        enabled = gc.isenabled()
        if self.disable_gc:
            gc.disable()
        try:
            for _ in range(m.block):
                t0 = timer()
                call()
                out.append(timer() - t0)
        finally:
            if enabled:
                gc.enable()
        return out

    def _progress_line(self, measured: dict[str, Measured], active: list[str], rounds: int, elapsed: float) -> str:
        def state(m: Measured) -> str:
            if m.speedup is None or m.name == self.reference_name:
                return f"{m.name} {len(m.seconds)} calls"
            if len(m.rounds) < MIN_TURNS:
                return f"{m.name} {m.speedup.point:.2f}x (no interval before {MIN_TURNS} rounds)"
            return f"{m.name} {m.speedup} (+-{m.speedup.relative_halfwidth:.1%})"

        running = [measured[n] for n in active if n != self.reference_name]
        done = sum(1 for m in measured.values() if m.name != self.reference_name and m.stopped)
        head = f"{self.label}: round {rounds}, {elapsed:.0f} s"
        if not running:
            return f"{head}: done ({done} engine(s))"
        return (f"{head}, {done} of {done + len(running)} engine(s) done, target +-{self.target_halfwidth:.0%} "
                f"or {self.max_seconds:.0f} s; measuring: " + "; ".join(state(m) for m in running))


@dataclass(frozen=True)
class Interleaved:
    """What `time_beside` measured: the timed call's seconds and its ratio to the reference."""

    seconds: list[float]
    speedup: Speedup  # reference time / timed call's time
    reference_seconds: list[float]
    stopped: str


def time_beside(benchmark: Any, call: Callable[[], object], reference: Callable[[], object],
                max_seconds: float, target_halfwidth: float = TARGET_HALFWIDTH) -> Interleaved:
    """`call` against `reference` in a round-robin of two, recorded as pytest-benchmark's rounds
    of `benchmark` (the zoo, serving and overhead benchmarks: one engine against one reference)."""
    from harness.thirdparty import benchmark_clock, record_rounds

    timer, disable_gc = benchmark_clock(benchmark)
    measured = RoundRobin({"call": call}, reference, target_halfwidth, max_seconds, timer, disable_gc,
                          reference_name="reference").run()
    mine, ref = measured["call"], measured["reference"]
    if mine.error is not None:
        raise mine.error
    record_rounds(benchmark, mine.seconds)
    assert mine.speedup is not None
    return Interleaved(mine.seconds, mine.speedup, ref.seconds, mine.stopped)


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
