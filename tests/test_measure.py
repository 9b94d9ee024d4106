"""How speedups are measured (harness.measure): round counts, interleaving, the interval, and
the gate deciding on it.  Synthetic timings with a known true ratio, so each check can fail."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from harness.measure import (
    BUSY_SHARE,
    MIN_ROUNDS,
    MIN_TURNS,
    CpuShare,
    RoundRobin,
    Speedup,
    added_cost,
    low_confidence,
    ratio_speedup,
    rounds_needed,
)
from harness.timing import GateResult


def test_each_percentile_gets_ten_samples_beyond_it() -> None:
    # n >= 10 / share beyond q: the rule the module states, so p50 20, p90 100, p99 1000, p10 100.
    assert [rounds_needed(q) for q in (50, 90, 99, 10)] == [20, 100, 1000, 100]
    assert MIN_ROUNDS == 20
    assert low_confidence(20) == ["p90", "p99"]
    assert low_confidence(999) == ["p99"] and low_confidence(1000) == []


def _turns(rng: np.random.Generator, n: int, base: float) -> np.ndarray:
    """Turn medians shaped like the 2-core machine's: ~5% lognormal noise, one turn in ten 20-60% slower."""
    x = base * np.exp(rng.normal(0, 0.05, n))
    spikes = rng.random(n) < 0.10
    x[spikes] *= 1 + rng.uniform(0.2, 0.6, spikes.sum())
    return x


@pytest.mark.parametrize("rounds", [6, 13])
def test_the_interval_covers_the_true_ratio_about_as_often_as_it_says(rounds: int) -> None:
    rng = np.random.default_rng(7)
    trials = 300
    covered = sum(s.low <= 1.35 <= s.high for s in (ratio_speedup(_turns(rng, rounds, 1.35e-3), _turns(rng, rounds, 1e-3),
                                                                   resamples=500, seed=i) for i in range(trials)))
    # measured 94% at 6 rounds and 96-97% from 13 on (the estimator's choice in harness.measure);
    # a liberal interval (the old bootstrap over four blocks covered 86%) fails this
    assert 0.89 * trials <= covered <= 0.995 * trials, covered


def test_speedup_is_the_ratio_of_median_turns() -> None:
    s = ratio_speedup([4.0, 5.0, 6.0, 100.0, 5.0], [1.0, 1.0, 2.0, 1.0, 1.0])
    assert s.point == pytest.approx(5.0) and s.low <= 5.0 <= s.high  # one disturbed turn on either side moves nothing
    assert ratio_speedup([2.0], [1.0]) == Speedup(2.0, 2.0, 2.0)


class _Machine:
    """A fake clock and models that advance it: a call of `cost` seconds takes cost x the machine's
    speed of the moment (drifting slowly from 1x to 2x and back) x positive noise."""

    def __init__(self, seed: int, drift: float = 1.0, noise: float = 0.05) -> None:
        self.now = 0.0
        self.rng = np.random.default_rng(seed)
        self.drift, self.noise = drift, noise
        self.calls: list[str] = []

    def clock(self) -> float:
        return self.now

    def model(self, name: str, cost: float):  # type: ignore[no-untyped-def]
        def call() -> None:
            self.calls.append(name)
            speed = 1 + self.drift * (0.5 - 0.5 * np.cos(self.now / 20))
            self.now += cost * speed * (1 + self.rng.exponential(self.noise))
        return call


def test_round_robin_recovers_known_speedups_under_drift() -> None:
    machine = _Machine(seed=1)
    robin = RoundRobin({"fast": machine.model("fast", 1e-3), "slow": machine.model("slow", 2e-2)},
                       machine.model("ref", 4e-3), target_halfwidth=0.03, max_seconds=1e9, timer=machine.clock,
                       wall=machine.clock)
    measured = robin.run()
    # The machine's speed doubles over the run, more than any ratio measured: pairing turns of one
    # round cancels it.  True ratios: 4 ms / 1 ms and 4 ms / 20 ms.
    for name, true in (("fast", 4.0), ("slow", 0.2)):
        s = measured[name].speedup
        assert s is not None and s.low <= true <= s.high and s.relative_halfwidth <= 0.03, (name, s)
        assert measured[name].stopped == "interval" and len(measured[name].rounds) >= MIN_TURNS
    ref = measured["tensorflow-fp32"]
    assert ref.stopped == "reference"
    # TensorFlow is timed once a round for both engines, not once per engine: its calls are the
    # warm-up (1 + 3) and one turn (an untimed call and its block) per round, however many engines.
    rounds = max(len(m.rounds) for m in measured.values())
    assert machine.calls.count("ref") == 4 + rounds * (ref.block + 1)


def test_round_robin_spends_rounds_where_the_uncertainty_is_and_stops_at_the_cap() -> None:
    machine = _Machine(seed=2)
    rng = np.random.default_rng(5)

    def noisy() -> None:  # the same cost as "steady", ten times its noise
        machine.calls.append("noisy")
        machine.now += 1e-3 * (1 + rng.exponential(0.6))

    robin = RoundRobin({"steady": machine.model("steady", 1e-3), "noisy": noisy}, machine.model("ref", 2e-3),
                       target_halfwidth=0.01, max_seconds=2.0, timer=machine.clock, wall=machine.clock)
    measured = robin.run()
    steady, wild = measured["steady"], measured["noisy"]
    assert steady.stopped == "interval" and wild.stopped == "time cap"
    assert len(wild.rounds) > len(steady.rounds)  # the uncertain row got the extra rounds
    assert wild.speedup is not None and wild.speedup.relative_halfwidth > 0.01


def test_nothing_stops_before_six_rounds_not_even_at_the_cap() -> None:
    machine = _Machine(seed=3, drift=0.0, noise=0.0)
    measured = RoundRobin({"e": machine.model("e", 0.5)}, machine.model("r", 1.0), target_halfwidth=0.5,
                          max_seconds=0.0, timer=machine.clock, wall=machine.clock).run()
    e = measured["e"]
    # noise-free: the interval is exact from the first round, and the cap is over at once; still six rounds
    assert len(e.rounds) == MIN_TURNS and e.stopped == "interval" and e.speedup == Speedup(2.0, 2.0, 2.0)


def test_a_failing_engine_fails_its_own_row_only() -> None:
    machine = _Machine(seed=4)

    def broken() -> None:
        raise RuntimeError("kernel crashed")

    measured = RoundRobin({"ok": machine.model("ok", 1e-3), "broken": broken}, machine.model("ref", 2e-3),
                          target_halfwidth=0.05, timer=machine.clock, wall=machine.clock).run()
    assert isinstance(measured["broken"].error, RuntimeError) and "kernel crashed" in measured["broken"].stopped
    assert measured["ok"].stopped == "interval"


def test_turns_of_short_calls_start_with_an_untimed_call() -> None:
    machine = _Machine(seed=6, drift=0.0, noise=0.0)
    measured = RoundRobin({"e": machine.model("e", 1e-3)}, machine.model("r", 1e-3), target_halfwidth=0.5,
                          timer=machine.clock, wall=machine.clock).run()
    e = measured["e"]
    assert e.rewarm and e.block == 50  # 50 ms of 1 ms calls
    # warm-up: 4 calls each; then per round one untimed + 50 timed calls of each side
    assert machine.calls.count("e") == 4 + len(e.rounds) * 51 and len(e.seconds) == 50 * len(e.rounds)


def test_a_busy_machine_is_seen_and_marked() -> None:
    if CpuShare().read() is None:
        pytest.skip("no /proc/stat on this system: the busy check cannot run")
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.3)
        spin = lambda: sum(range(20000))
        measured = RoundRobin({"e": spin}, spin, target_halfwidth=1e-9, max_seconds=1.5).run()
    finally:
        for b in burners:
            b.kill()
            b.wait()
    share = measured["e"].others_share
    # a burner per CPU takes about half the machine from this process; far over the 10% mark
    assert share is not None and share > 2 * BUSY_SHARE and measured["e"].busy, share


def test_cpu_share_counts_others_not_this_process() -> None:
    share = CpuShare()
    share.cpus = 2
    # 3 s of machine CPU over 2 s of wall on 2 CPUs, 1 s of it this process's: others took 2 of 4
    assert share.others((10.0, 5.0, 100.0), (13.0, 6.0, 102.0)) == (2.0, 4.0)
    assert share.others(None, (1.0, 1.0, 1.0)) == (0.0, 0.0)


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


def test_ratio_speedup_refuses_unpaired_rounds() -> None:
    with pytest.raises(ValueError, match="3 reference and 4 engine"):
        ratio_speedup([1.0] * 3, [1.0] * 4)


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
