"""Latency statistics, speedups measured in one run, and the regression gate on speedups.

Absolute times differ between machines; the ratio of an engine's median to TensorFlow's
median at the same batch size, measured in the same run, is what a gate can hold across
machines of one class.  Ratios still differ between classes (an AMD EPYC with AVX-512 VNNI
and an Intel Xeon with AMX run int8 at different speeds relative to fp32), so the baseline
keeps one table per machine class (`harness.machine.machine_class`):

    {"format": 2, "machines": {"<class id>": {"machine": {...}, "models":
        {"inception_v3": {"onnxruntime-int8": {"1": 2.1, "32": 2.4}, ...}}, "recorded": {...}}}}
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.artifacts import atomic_write_json
from harness.errors import UsageError
from harness.measure import BUSY_SHARE, ESTIMATOR, Speedup, low_confidence

REFERENCE = "tensorflow-fp32"


@dataclass(frozen=True)
class Latency:
    p50: float
    p90: float
    p99: float
    mean: float
    rounds: int

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        t = np.asarray(seconds, dtype=np.float64)
        if t.size == 0:
            raise UsageError("no timings to summarise")
        return cls(float(np.percentile(t, 50)), float(np.percentile(t, 90)), float(np.percentile(t, 99)),
                   float(t.mean()), int(t.size))

    @property
    def low_confidence(self) -> list[str]:
        """Percentiles measured on fewer samples than they need (`harness.measure.rounds_needed`)."""
        return low_confidence(self.rounds)


@dataclass(frozen=True)
class Row:
    """One measured engine at one batch size, with its speedup over TensorFlow measured
    beside it (interleaved, `harness.measure`); the reference's own row has 1.0.  `extra_info`
    is the benchmark's own dict."""

    model: str
    engine: str  # backend-precision, e.g. onnxruntime-int8; the reference is tensorflow-fp32
    batch: int
    median: float  # seconds per call (one batch)
    extra_info: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    speedup: Speedup | None = None
    rounds: int = 0
    no_speedup: str = ""  # why an engine row has no speedup (the reference could not run beside it)
    stopped: str = ""  # what ended its measurement: "interval", "time cap", "reference", "rounds"
    others_share: float | None = None  # share of the machine other processes took while it was measured
    instructions: float | None = None  # per call, counted under Valgrind (--harness-count-instructions)
    no_instructions: str = ""  # why a row asked to be counted has no count

    @property
    def busy(self) -> bool:
        return self.others_share is not None and self.others_share > BUSY_SHARE

    @property
    def samples_per_s(self) -> float:
        return self.batch / self.median


def speedups(rows: Sequence[Row]) -> dict[tuple[str, str, int], Speedup]:
    """(model, engine, batch) -> the speedup measured for that row, where one was."""
    return {(r.model, r.engine, r.batch): r.speedup for r in rows if r.speedup is not None}


# Student's t, 97.5th percentile, by degrees of freedom: a 95% interval from a few processes.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}

Key = tuple[str, str, int]  # (model, engine, batch)


def _t975(df: int) -> float:
    return _T975[max(d for d in _T975 if d <= df)] if df <= 30 else 1.96 + 2.4 / df


def spread_between(runs: Sequence[Mapping[Key, Speedup]]) -> dict[Key, tuple[float, int]]:
    """Each row's spread between processes: the standard deviation of the logs of its speedup
    over the runs that measured it, with its degrees of freedom (rows in fewer than 2 left out)."""
    out = {}
    for key in sorted({k for run in runs for k in run}):
        logs = np.log([run[key].point for run in runs if key in run])
        if len(logs) >= 2:
            out[key] = (float(logs.std(ddof=1)), len(logs) - 1)
    return out


def across_processes(runs: Sequence[Mapping[Key, Speedup]],
                     known: Mapping[Key, tuple[float, int]] | None = None) -> dict[Key, Speedup]:
    """Each row's speedup from the same benchmark run in several processes, where the variance
    of wall time lives (on a shared 2-core VM one process in four reads a row 20% off while its
    own interval is +-5%; no estimator inside one process sees that): the geometric mean of the
    processes' points with a 95% Student-t interval over their logs, so the interval is the
    spread between processes.  `known`: each row's spread as recorded with the baseline (many
    processes; `spread_between`), pooled with these runs' own, so a few processes do not pay
    for guessing their spread from themselves (t with 2 degrees of freedom is 4.3).  A row
    measured in one process with no known spread keeps its own interval."""
    own = spread_between(runs)
    out = {}
    for key in sorted({k for run in runs for k in run}):
        points = [run[key] for run in runs if key in run]
        sd2, df = 0.0, 0
        for sd, d in [x for x in (own.get(key), (known or {}).get(key)) if x is not None]:
            sd2, df = sd2 + sd * sd * d, df + d
        if df == 0:
            out[key] = points[0]
            continue
        logs = np.log([p.point for p in points])
        mean, half = float(logs.mean()), _t975(df) * float(np.sqrt(sd2 / df)) / np.sqrt(len(logs))
        out[key] = Speedup(float(np.exp(mean)), float(np.exp(mean - half)), float(np.exp(mean + half)),
                           estimator=points[0].estimator)
    return out


def summary_lines(rows: Sequence[Row], unmeasured: Sequence[Unmeasured] = ()) -> list[tuple[str, bool]]:
    """The end-of-run table: median, samples/s, calls and speedup with its 95% interval per
    model x batch x engine, what stopped each row and whether the machine was busy, then every
    row that produced no time, with why; each line with whether it is a failure."""
    lines = [((f"{'model':14s} {'batch':>5s} {'engine':22s} {'median ms':>10s} {'samples/s':>10s} {'calls':>6s}  "
              "speedup [95% interval]"), False)]
    for r in sorted(rows, key=lambda r: (r.model, r.batch, r.engine != REFERENCE, r.engine)):
        if r.speedup is None:
            speedup = f"- ({r.no_speedup})" if r.no_speedup else "-"
        elif r.engine == REFERENCE:
            speedup = "(reference)"
        else:
            speedup = str(r.speedup) + (" cap" if r.stopped == "time cap" else "")
        busy = f"  BUSY: others took {r.others_share:.0%} of the machine" if r.busy and r.others_share else ""
        count = (f"  {r.instructions:,.0f} instr/call" if r.instructions is not None
                 else f"  instr: - ({r.no_instructions})" if r.no_instructions else "")
        lines.append(((f"{r.model:14s} {r.batch:5d} {r.engine:22s} {r.median * 1e3:10.2f} {r.samples_per_s:10.1f} "
                      f"{r.rounds:6d}  {speedup}{count}{busy}"), False))
    for u in sorted(unmeasured, key=lambda u: (u.model, u.batch, u.engine)):
        lines.append((f"{u.model:14s} {u.batch:5d} {u.engine:22s} {u.outcome.upper():>10s}  {u.reason}",
                      u.outcome != "skipped"))
    if any(r.engine != REFERENCE and r.speedup is not None for r in rows):
        lines.append((("speedup = TensorFlow's median turn / the engine's, TensorFlow and every engine timed in "
                       "turns, one round at a time; [interval] = 95% bootstrap interval over whole rounds; 'cap' = "
                       "stopped by the time cap before the interval reached its target"), False))
    if any(r.busy for r in rows):
        lines.append(((f"BUSY = other processes took more than {BUSY_SHARE:.0%} of the machine while the row was "
                       "measured: its figures may be wrong in either direction; measure again on an idle machine"),
                      False))
    return lines


@dataclass(frozen=True)
class Unmeasured:
    """A benchmark row that did not produce a time (skipped or errored), and why."""

    model: str
    engine: str
    batch: int
    outcome: str  # "skipped" | "error" | "failed"
    reason: str


@dataclass(frozen=True)
class GateResult:
    """One baseline row judged on the interval of its speedup in this run: REGRESSED only when
    the whole interval is below the floor; ok when it is all above; otherwise the run was too
    noisy to decide, which is said (with the slowdown it could have detected) but not failed."""

    model: str
    engine: str
    batch: int
    baseline: float
    measured: Speedup | None  # None: the row was in the baseline but not measured in this run
    floor: float
    why_missing: str = ""  # for an unmeasured row: skipped/errored and why, if known

    @property
    def passed(self) -> bool:
        return self.measured is not None and self.measured.low >= self.floor

    @property
    def regressed(self) -> bool:
        """The whole interval below the floor (a row not measured in this run is not a regression)."""
        return self.measured is not None and self.measured.high < self.floor

    @property
    def undecided(self) -> bool:
        return self.measured is not None and not self.passed and not self.regressed

    @property
    def detectable_slowdown(self) -> float | None:
        """The smallest slowdown from the baseline this run's interval could have called: the
        speedup s at which the interval's top (scaled with s) reaches the floor."""
        if self.measured is None:
            return None
        return 1 - self.floor * self.measured.point / (self.measured.high * self.baseline)

    def __str__(self) -> str:
        row = f"{self.model} {self.engine} batch {self.batch}"
        if self.measured is None:
            why = f": {self.why_missing}" if self.why_missing else ""
            return f"{row}: NOT MEASURED in this run (baseline {self.baseline:.2f}x){why}"
        verdict = "ok" if self.passed else "REGRESSED" if self.regressed else (
            f"TOO NOISY TO DECIDE: the interval contains the floor; this run could only have called a slowdown of "
            f"more than {self.detectable_slowdown:.0%}")
        return (f"{row}: speedup {self.measured} vs baseline {self.baseline:.2f}x "
                f"(floor {self.floor:.2f}x) {verdict}")


BASELINE_FORMAT = 2


def load_baseline(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise UsageError(f"baseline {path}: cannot read it ({e}); write one with --harness-update-baseline") from e
    except ValueError as e:
        raise UsageError(f"baseline {path}: not valid JSON ({e})") from e
    if isinstance(data, dict) and "machines" not in data and "models" in data:
        raise UsageError(f"baseline {path}: recorded without machine classes (an older harness), and a speedup "
                         "depends on the machine; record it again on the machine type CI runs on with "
                         f"--harness-update-baseline {path}")
    machines = data.get("machines") if isinstance(data, dict) else None
    if not isinstance(machines, dict):
        raise UsageError(f"baseline {path}: no 'machines' table; write one with --harness-update-baseline")
    for machine, entry in machines.items():
        models = entry.get("models") if isinstance(entry, dict) else None
        if not isinstance(models, dict):
            raise UsageError(f"baseline {path}: machine class {machine!r} has no 'models' table")
        for model, engines in models.items():
            for engine, batches in engines.items():
                for batch, ratio in batches.items():
                    if not str(batch).isdigit() or not isinstance(ratio, int | float) or ratio <= 0:
                        raise UsageError(f"baseline {path}: {machine} {model}/{engine}/{batch} = {ratio!r}; "
                                         "expected a positive speedup per batch size")
        between = entry.get("between_processes", {})
        for model, engines in (between.items() if isinstance(between, dict) else [("?", between)]):
            for engine, batches in (engines.items() if isinstance(engines, dict) else [("?", engines)]):
                for batch, pair in (batches.items() if isinstance(batches, dict) else [("?", batches)]):
                    if not (str(batch).isdigit() and isinstance(pair, list) and len(pair) == 2
                            and isinstance(pair[0], int | float) and 0 <= pair[0] < 10
                            and isinstance(pair[1], int) and pair[1] > 0):
                        raise UsageError(f"baseline {path}: {machine} between_processes {model}/{engine}/{batch} = "
                                         f"{pair!r}; expected [sd of the logs, degrees of freedom] per batch size "
                                         "(record it again with harness gate --update-baseline)")
    counts = data.get("instructions", {"models": {}})
    if not isinstance(counts, dict) or not isinstance(counts.get("models"), dict):
        raise UsageError(f"baseline {path}: 'instructions' has no 'models' table")
    for model, engines in counts["models"].items():
        for engine, batches in engines.items():
            for batch, count in batches.items():
                if not str(batch).isdigit() or not isinstance(count, int | float) or count <= 0:
                    raise UsageError(f"baseline {path}: instructions {model}/{engine}/{batch} = {count!r}; "
                                     "expected a positive count per call per batch size")
    return data


def is_legacy_baseline(path: Path) -> bool:
    """A baseline written before machine classes: {"models": ...} at the top."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "models" in data and "machines" not in data


def baseline_for(baseline: Mapping[str, Any], machine: str) -> Mapping[str, Any] | None:
    """The speedups recorded on `machine` (a machine class id): {model: {engine: {batch: ratio}}}."""
    entry = baseline.get("machines", {}).get(machine)
    return entry["models"] if entry is not None else None


def spread_for(baseline: Mapping[str, Any], machine: str) -> dict[Key, tuple[float, int]]:
    """Each row's spread between processes as recorded with `machine`'s speedups by `harness gate
    --update-baseline` (the sd of the logs and its degrees of freedom); {} where none was."""
    entry = baseline.get("machines", {}).get(machine) or {}
    return {(model, engine, int(batch)): (float(sd), int(df))
            for model, engines in entry.get("between_processes", {}).items()
            for engine, batches in engines.items() for batch, (sd, df) in batches.items()}


@dataclass(frozen=True)
class GateReport:
    machine: str  # the class this run ran on
    results: tuple[GateResult, ...]
    problems: tuple[str, ...]  # runs the gate cannot judge: no TensorFlow rows, nothing measured
    no_baseline: bool  # the baseline has no entry for this machine class
    allow_missing: bool
    known: tuple[str, ...] = ()  # the machine classes the baseline has
    unjudged: tuple[str, ...] = ()  # models of this run that this machine class's table lacks
    other_estimator: str = ""  # this class's table was recorded with another estimator: not compared

    @property
    def missing(self) -> list[GateResult]:
        return [r for r in self.results if r.measured is None]

    @property
    def failed(self) -> bool:
        if any(r.regressed for r in self.results):
            return True
        return not self.allow_missing and bool(self.problems or self.missing)

    @property
    def verdict(self) -> str:
        if self.failed:
            return "FAILED"
        if self.other_estimator:
            return "baseline recorded with another estimator: not compared"
        if self.no_baseline:
            return "no baseline for this machine class"
        if not self.results:
            return f"no baseline for {', '.join(self.unjudged)} on this machine class"
        noisy = sum(r.undecided for r in self.results)
        notes = ([f"{noisy} row(s) too noisy to decide"] if noisy else []) + (
            [f"no baseline for {', '.join(self.unjudged)}"] if self.unjudged else [])
        return "passed" + (f" ({'; '.join(notes)})" if notes else "")

    def lines(self, path: Path | str, record: str = "", allow_flag: str = "--harness-gate-allow-missing"
              ) -> list[tuple[str, bool]]:
        """The gate's section of the run's output, each line with whether it is a failure.
        `record`: the command that records the baseline (default: the pytest one, with the model
        where one is named); `allow_flag`: the option that lets missing rows pass."""
        def how(model: str = "") -> str:
            return record or (f"pytest benchmarks/ --benchmark-only{f' --harness-model {model}' if model else ''} "
                              f"--harness-update-baseline {path}")

        out = [(f"machine class: {self.machine}", False)]
        if self.other_estimator:
            out.append(((f"NOT COMPARED: this machine class's speedups in {path} were measured as {self.other_estimator}"
                        f"; this run measures {ESTIMATOR}. Record them again on this machine type with: {how()}"), False))
        elif self.no_baseline:
            out.append(((f"NO BASELINE for this machine class in {path}, so no speedup was judged (recorded classes: "
                        f"{'; '.join(self.known) or 'none'}). Record one on this machine type with: {how()}"), False))
        elif self.unjudged:
            out += [((f"NO BASELINE for {model} on this machine class in {path}: not judged. Record it with: "
                     f"{how(model)}"), False) for model in self.unjudged]
        out += [(f"{'' if self.allow_missing else 'FAILED: '}{p}", not self.allow_missing) for p in self.problems]
        out += [(str(r), r.regressed or (r.measured is None and not self.allow_missing)) for r in self.results]
        if self.missing and not self.allow_missing:
            out.append(((f"{len(self.missing)} baseline row(s) not measured: the gate fails unless {allow_flag}"), True))
        return out


def check_gate(
    rows: Sequence[Row],
    baseline: Mapping[str, Any],
    machine: str,
    max_slowdown: float,
    allow_missing: bool = False,
    unmeasured: Sequence[Unmeasured] = (),
) -> GateReport:
    """Every baseline row, for this machine class, of the models this run covered, against its
    speedup measured in this run.  A baseline row with no measurement and a model without
    TensorFlow rows are failures unless `allow_missing`: a gate must not pass by measuring nothing.
    A row is judged on its speedup's interval (`GateResult`)."""
    if not 0 <= max_slowdown < 1:
        raise UsageError(f"max slowdown {max_slowdown}: a fraction in [0, 1), e.g. 0.15")
    measured = speedups(rows)
    models_run = sorted({r.model for r in rows} | {u.model for u in unmeasured})
    problems = []
    if not models_run:
        problems.append("no benchmark rows were measured in this run")
    for model in models_run:
        timed = [r for r in rows if r.model == model and r.engine != REFERENCE]
        if not any(r.speedup is not None for r in timed):
            reason = next((r.no_speedup for r in timed if r.no_speedup), "no engine row was timed")
            problems.append(f"{model}: no speedup measured, so none could be judged ({reason})")
    why = {(u.model, u.engine, u.batch): f"{u.outcome}: {u.reason}" for u in unmeasured}
    for r in rows:  # timed, but without the reference beside it
        if (r.model, r.engine, r.batch) not in measured:
            why.setdefault((r.model, r.engine, r.batch), f"timed, but no speedup: {r.no_speedup or 'no reference'}")
    table = baseline_for(baseline, machine)
    known = tuple(baseline.get("machines", {}))
    recorded_with = (baseline.get("machines", {}).get(machine) or {}).get("estimator", "an older, unnamed estimator")
    if table is not None and recorded_with != ESTIMATOR:
        # A ratio of medians and a ratio of 10th percentiles are different quantities: refused, said.
        return GateReport(machine, (), tuple(problems), True, allow_missing, known, (),
                          other_estimator=str(recorded_with))
    results = []
    for model, engines in (table or {}).items():
        if model not in models_run:
            continue
        for engine, batches in engines.items():
            for batch, ratio in batches.items():
                key = (model, engine, int(batch))
                results.append(GateResult(model, engine, int(batch), float(ratio), measured.get(key),
                                          ratio * (1 - max_slowdown), why.get(key, "")))
    unjudged = tuple(m for m in models_run if table is not None and m not in table)
    return GateReport(machine, tuple(results), tuple(problems), table is None, allow_missing, known, unjudged)


def update_baseline(
    path: Path,
    measured: Mapping[tuple[str, str, int], Speedup],
    machine: Mapping[str, Any],
    recorded: Mapping[str, Any],
    rows: Sequence[Row] = (),
    count_class: Mapping[str, Any] | None = None,
    spread: Mapping[Key, tuple[float, int]] | None = None,
    class_name: str | None = None,
) -> dict[str, Any]:
    """Write the measured speedups into the baseline under this machine's class (`machine`, from
    `harness.machine.machine_class`): rows measured replace theirs, every other row is kept (a
    run filtered with -k doesn't drop the rest).  A baseline of the format before machine
    classes is replaced: its ratios belong to no known class."""
    from harness.machine import class_id

    path = Path(path)
    data: dict[str, Any] = {"format": BASELINE_FORMAT, "machines": {}}
    if path.is_file() and not is_legacy_baseline(path):
        data = load_baseline(path)
    data["format"] = BASELINE_FORMAT
    # the class the runs named (`harness gate`: the env they ran with, not the recorder's), else this one
    entry = data["machines"].setdefault(class_name or class_id(machine), {"machine": dict(machine), "models": {},
                                                                          "recorded": {}})
    entry["machine"] = dict(machine)
    if entry.get("estimator") != ESTIMATOR:  # ratios of another estimator are not kept beside these
        entry["models"], entry["recorded"] = {}, {}
        entry.pop("between_processes", None)
    entry["estimator"] = ESTIMATOR
    between: dict[str, Any] = entry.setdefault("between_processes", {})
    for model in sorted({m for m, _, _ in measured}):
        engines: dict[str, dict[str, float]] = entry["models"].setdefault(model, {})
        for (m, engine, batch), ratio in sorted(measured.items()):
            if m == model and engine != REFERENCE:
                engines.setdefault(engine, {})[str(batch)] = round(ratio.point, 3)
                # a row recorded again keeps no spread of the old recording (one process measures none)
                between.get(model, {}).get(engine, {}).pop(str(batch), None)
                if spread and (m, engine, batch) in spread:
                    sd, df = spread[(m, engine, batch)]
                    between.setdefault(model, {}).setdefault(engine, {})[str(batch)] = [round(sd, 5), df]
        entry.setdefault("recorded", {})[model] = dict(recorded)
    for model in list(between):  # nothing empty left behind by a row recorded again
        between[model] = {engine: batches for engine, batches in between[model].items() if batches}
        if not between[model]:
            del between[model]
    if not between:
        del entry["between_processes"]
    if count_class is not None and any(r.instructions is not None for r in rows):
        update_counts(data, rows, count_class)
    atomic_write_json(path, data)
    return data


DEFAULT_MAX_INCREASE = 0.01


@dataclass(frozen=True)
class CountResult:
    """One baseline row of instructions per call against this run's count: deterministic, so a
    rise over the ceiling is a regression with no interval to weigh."""

    model: str
    engine: str
    batch: int
    baseline: float
    measured: float | None  # None: in the baseline, not counted in this run
    ceiling: float
    why_missing: str = ""

    @property
    def regressed(self) -> bool:
        return self.measured is not None and self.measured > self.ceiling

    @property
    def change(self) -> float | None:
        return None if self.measured is None else self.measured / self.baseline - 1

    def __str__(self) -> str:
        row = f"{self.model} {self.engine} batch {self.batch}"
        if self.measured is None:
            return f"{row}: NOT COUNTED in this run (baseline {self.baseline:,.0f} instructions/call)" + (
                f": {self.why_missing}" if self.why_missing else "")
        return (f"{row}: {self.measured:,.0f} instructions/call vs baseline {self.baseline:,.0f} "
                f"({self.change:+.2%}; ceiling {self.ceiling:,.0f}) {'REGRESSED' if self.regressed else 'ok'}")


@dataclass(frozen=True)
class CountGateReport:
    results: tuple[CountResult, ...]
    problems: tuple[str, ...]
    allow_missing: bool
    recorded_class: Mapping[str, Any]
    this_class: Mapping[str, Any]

    @property
    def failed(self) -> bool:
        if any(r.regressed for r in self.results):
            return True
        return not self.allow_missing and bool(self.problems or any(r.measured is None for r in self.results))

    @property
    def verdict(self) -> str:
        return "FAILED" if self.failed else "passed"

    def lines(self) -> list[tuple[str, bool]]:
        out: list[tuple[str, bool]] = []
        mine, theirs = dict(self.this_class.get("versions", {})), dict(self.recorded_class.get("versions", {}))
        changed = [f"{k} {theirs.get(k, '-')} -> {mine.get(k, '-')}" for k in sorted(set(mine) | set(theirs))
                   if mine.get(k) != theirs.get(k)]
        for key in ("valgrind", "python", "arch", "libc"):
            if self.recorded_class.get(key) and self.recorded_class.get(key) != self.this_class.get(key):
                changed.append(f"{key} {self.recorded_class.get(key)} -> {self.this_class.get(key)}")
        if changed:
            out.append(((f"counted with other software than the baseline ({'; '.join(changed)}): a change in the "
                         "counts may be theirs; if so, record again with --harness-update-baseline"), False))
        out += [(f"{'' if self.allow_missing else 'FAILED: '}{p}", not self.allow_missing) for p in self.problems]
        out += [(str(r), r.regressed or (r.measured is None and not self.allow_missing)) for r in self.results]
        return out


def check_counts(rows: Sequence[Row], baseline: Mapping[str, Any], this_class: Mapping[str, Any],
                 max_increase: float, allow_missing: bool = False) -> CountGateReport:
    """Every counted baseline row of the models this run covered against this run's count.  The
    table is one for every x86-64 machine (under Valgrind every host shows the same guest CPU:
    harness.counting), so no machine class is ever without a baseline; a row not counted, and a
    run that counted nothing, fail unless `allow_missing`."""
    if not 0 <= max_increase < 1:
        raise UsageError(f"max increase {max_increase}: a fraction in [0, 1), e.g. 0.01")
    table = baseline.get("instructions", {})
    method = table.get("class", {}).get("method")
    if table.get("models") and method != this_class.get("method"):
        refused = (f"NOT COMPARED: the baseline's counts were made as \"{method or 'an older method'}\", this run's as "
               f"\"{this_class.get('method')}\"; record again with --harness-count-instructions --harness-update-baseline")
        return CountGateReport((), (refused,),
                               allow_missing, table.get("class", {}), this_class)
    counted = {(r.model, r.engine, r.batch): r.instructions for r in rows if r.instructions is not None}
    why = {(r.model, r.engine, r.batch): r.no_instructions for r in rows if r.instructions is None}
    models_run = sorted({r.model for r in rows})
    problems = []
    if not counted:
        problems.append("no row was counted in this run" + (
            f" ({next(iter(w for w in why.values() if w), '')})" if any(why.values()) else ""))
    results = []
    for model, engines in table.get("models", {}).items():
        if model not in models_run:
            continue
        for engine, batches in engines.items():
            for batch, count in batches.items():
                key = (model, engine, int(batch))
                results.append(CountResult(model, engine, int(batch), float(count), counted.get(key),
                                           float(count) * (1 + max_increase), why.get(key, "")))
    for model in models_run:
        if counted and model not in table.get("models", {}):
            problems.append(f"{model}: no instruction counts in the baseline: record them with "
                            f"--harness-count-instructions --harness-update-baseline")
    return CountGateReport(tuple(results), tuple(problems), allow_missing, table.get("class", {}), this_class)


def update_counts(data: dict[str, Any], rows: Sequence[Row], this_class: Mapping[str, Any]) -> None:
    """The counted rows into `data` (a baseline's dict): rows counted replace theirs, others are kept."""
    table = data.setdefault("instructions", {"class": {}, "models": {}})
    if table.get("class", {}).get("method") != this_class.get("method"):
        table["models"] = {}  # rows counted another way are not kept under this method's name
    table["class"] = dict(this_class)
    for r in rows:
        if r.instructions is not None:
            table["models"].setdefault(r.model, {}).setdefault(r.engine, {})[str(r.batch)] = round(r.instructions)
