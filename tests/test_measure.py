"""How speedups are measured (harness.measure): round counts, interleaving, the interval, and
the gate deciding on it.  Synthetic timings with a known true ratio, so each check can fail."""

from __future__ import annotations

import numpy as np
import pytest

from harness.measure import (
    MAX_ROUNDS,
    MIN_ROUNDS,
    SPEEDUP_QUANTILE,
    Interleaver,
    RoundPlan,
    Speedup,
    added_cost,
    low_confidence,
    paired_speedup,
    rounds_needed,
    speedup_percentile,
)
from harness.timing import GateResult


def test_each_percentile_gets_ten_samples_beyond_it() -> None:
    # n >= 10 / share beyond q: the rule the module states, so p50 20, p90 100, p99 1000, p10 100.
    assert [rounds_needed(q) for q in (50, 90, 99, 10)] == [20, 100, 1000, 100]
    assert MIN_ROUNDS == 20
    # The speedup's percentile: the 10th from 100 rounds, the lowest supported below that.
    assert [speedup_percentile(n) for n in (2000, 100, 50, 20, 5)] == [10, 10, 20, 50, 50]
    assert low_confidence(20) == ["p90", "p99"]
    assert low_confidence(999) == ["p99"] and low_confidence(1000) == []


def test_rounds_fit_the_time_and_the_bounds() -> None:
    assert RoundPlan.of(0.010, 2.0).rounds == 200  # 2 s of 10 ms calls
    assert RoundPlan.of(1.0, 2.0).rounds == MIN_ROUNDS  # slow calls still get the median's 20
    assert RoundPlan.of(1e-6, 2.0).rounds == MAX_ROUNDS
    plan = RoundPlan.of(0.001, 4.0, reference_estimate=0.004)  # interleaved: reference time counts too
    assert plan.rounds % plan.block == 0 and plan.rounds >= 800 and plan.block == 12  # 50 ms / 4 ms
    slow = RoundPlan.of(0.5, 4.0, reference_estimate=0.9)
    assert slow.block == 5 and slow.rounds == MIN_ROUNDS  # 5 calls a block, and still four blocks to resample


def test_interleaver_alternates_blocks_of_reference_and_engine() -> None:
    log: list[str] = []
    inter = Interleaver(lambda: log.append("R"), block=3, rounds=9)
    for _ in range(9):  # what pytest-benchmark does: setup, then the timed engine call
        inter.before_round()
        log.append("E")
    inter.before_round()  # --benchmark-cprofile calls setup once more: no block beyond the rounds
    assert "".join(log) == "RRREEE" * 3
    assert len(inter.seconds) == 9
    # Short calls: each block starts with one untimed call of its side (R, then W for the engine).
    log.clear()
    warm = Interleaver(lambda: log.append("R"), block=2, rounds=4, rewarm=lambda: log.append("W"))
    for _ in range(4):
        warm.before_round()
        log.append("E")
    assert "".join(log) == "RRRWEE" * 2 and len(warm.seconds) == 4  # the untimed call is not a sample


def _interleaved(true_ratio: float, blocks: int, block: int, drift: bool, rng: np.random.Generator) -> tuple[
        np.ndarray, np.ndarray]:
    """Engine 1 ms, reference true_ratio ms, both x a machine speed that drifts from 1 to 2 over
    the run (when `drift`), plus positive noise, as alternating blocks would see them."""
    n = blocks * block
    t = np.repeat(np.linspace(0, 1, blocks), block)
    machine = 1 + t if drift else np.ones(n)
    noise = lambda: 1 + rng.exponential(0.05, n)
    return true_ratio * 1e-3 * machine * noise(), 1e-3 * machine * noise()


def test_interleaving_cancels_drift_that_back_to_back_rows_do_not() -> None:
    rng = np.random.default_rng(1)
    ref, eng = _interleaved(3.0, blocks=40, block=5, drift=True, rng=rng)
    paired = paired_speedup(ref, eng, block=5)
    assert paired.low <= 3.0 <= paired.high and paired.relative_halfwidth < 0.05
    # The same machine timing TensorFlow's row first and the engine's after it (the old design):
    # the engine ran on the slower half of the drift, and the ratio is off by a third.
    first, second = ref[: len(ref) // 2], eng[len(eng) // 2:]
    back_to_back = np.percentile(first, SPEEDUP_QUANTILE) / np.percentile(second, SPEEDUP_QUANTILE)
    assert back_to_back < 2.4


def test_the_interval_covers_the_true_ratio_about_as_often_as_it_says() -> None:
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(100):
        ref, eng = _interleaved(2.0, blocks=20, block=4, drift=False, rng=rng)
        s = paired_speedup(ref, eng, block=4, resamples=500)
        # With multiplicative noise of one distribution on both sides the true ratio of any
        # quantile is 2.0.
        covered += s.low <= 2.0 <= s.high
    assert covered >= 88  # nominal 95%; the bootstrap is a little liberal on 80 samples


class _Clock:
    """A fake clock that calls advance: the machine's noise is a drift (the machine slows by a
    third and back every few seconds) plus jitter, both larger than what is measured."""

    def __init__(self, seed: int) -> None:
        self.now = 0.0
        self.rng = np.random.default_rng(seed)

    def __call__(self) -> float:
        return self.now

    def spend(self, seconds: float) -> None:
        drift = 1 + 0.3 * np.sin(self.now)
        self.now += seconds * drift + abs(self.rng.normal(0, 5e-6))


@pytest.mark.parametrize("extra", [0.0, 1e-6, 8e-6])
def test_added_cost_finds_microseconds_under_noise(extra: float) -> None:
    clock = _Clock(seed=3)
    bare = lambda: clock.spend(20e-6)  # a replayed library call
    through = lambda: clock.spend(20e-6 + extra)
    cost = added_cost(through, bare, blocks=40, target_seconds=2.0, clock=clock)
    # The drift moves either side's time by up to 6 us, more than `extra`; alternating blocks
    # (and which side goes first) cancel it to a fraction of a microsecond.  `extra` itself runs
    # at the machine's speed of the moment (0.7x-1.3x), so that is what can be asked of the point.
    assert 0.7 * extra - 0.3e-6 <= cost.point <= 1.3 * extra + 0.3e-6
    assert cost.low <= cost.point <= cost.high and cost.high - cost.low < 1e-6
    assert cost.share_of(1e-3)[0] == pytest.approx(1 + cost.point / 1e-3)


def test_added_cost_of_one_block_order_would_be_biased_by_drift() -> None:
    """Why blocks alternate which side goes first: on a clock that only ever slows, the side
    timed second always looks slower; alternating cancels it."""
    clock = _Clock(seed=4)
    clock.spend = lambda seconds: setattr(clock, "now", clock.now + seconds * (1 + clock.now / 4))  # type: ignore[method-assign]
    cost = added_cost(lambda: clock.spend(20e-6), lambda: clock.spend(20e-6), blocks=40, target_seconds=2.0, clock=clock)
    assert abs(cost.point) < 0.1e-6


def test_paired_speedup_refuses_unpaired_samples() -> None:
    with pytest.raises(ValueError, match="blocks of 4"):
        paired_speedup([1.0] * 6, [1.0] * 6, block=4)
    with pytest.raises(ValueError, match="3 reference and 4 engine"):
        paired_speedup([1.0] * 3, [1.0] * 4, block=1)


def test_the_gate_calls_a_regression_only_when_the_whole_interval_is_below_the_floor() -> None:
    def judged(low: float, point: float, high: float) -> GateResult:
        return GateResult("m", "e", 1, baseline=10.0, measured=Speedup(point, low, high), floor=8.5)

    assert judged(7.0, 7.5, 8.0).regressed and not judged(7.0, 7.5, 8.0).passed
    assert judged(8.5, 9.0, 9.5).passed
    noisy = judged(7.0, 8.0, 9.0)
    assert noisy.undecided and not noisy.regressed and not noisy.passed
    # The interval reaches 9/8 of the point: the speedup would have to fall to 8.5 * 8/9 = 7.56,
    # 24.4% under the baseline of 10, before this run's interval cleared the floor.
    assert noisy.detectable_slowdown == pytest.approx(1 - 8.5 * 8.0 / (9.0 * 10.0))
    assert "could only have called a slowdown of more than 24%" in str(noisy)
