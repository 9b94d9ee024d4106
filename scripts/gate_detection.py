"""How often each gate catches a real slowdown, and how often it cries wolf, in CI's own setting.

Two modes, each judged by the harness's own gate code:

- `--mode counts`: instructions per call under Valgrind (harness.counting), the gate CI runs on
  every push.  Clean runs (separate processes) give the spread; regressions of a known size
  (2%, 5%, 10%, 20%: a deterministic spin of Python iterations sized from the clean count) and
  realistic ones (graph optimizations off, every call's work done twice) are counted and judged
  at `--margin`.
- `--mode wall`: CI's wall-time gate command (the digits benchmark at batch 1 and 8, ONNX
  Runtime) in separate pytest processes.  A baseline from `--baseline-runs` clean runs; then
  `--runs` clean runs (false flags) and slowed runs in which each ONNX Runtime engine is slowed
  by a different size (rotating, so each size is applied in at least `--runs` rows), plus
  realistic regressions; each judged at every margin of `--margins`.

It prints, per size and margin, the share of slowed rows flagged and the share of clean runs
with any false flag.  A benchmark, not a test: keep the machine otherwise idle.

    python scripts/gate_detection.py --mode counts --runs 20
    python scripts/gate_detection.py --mode wall --runs 20 --margins 0.1,0.15,0.2,0.25

This file is also the pytest plugin that injects wall-time regressions (`-p gate_detection`,
driven by the environment variables below), so the measured path is the real one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SLOW_ENV = "GATE_DETECTION_SLOW"  # "engine=fraction,engine=fraction": spin that much longer per call
REAL_ENV = "GATE_DETECTION_REAL"  # "engine=unoptimized" or "engine=threads": a realistic regression
ENGINES = ("onnxruntime-fp32", "onnxruntime-fp16", "onnxruntime-int8")
SIZES = "0.02,0.05,0.1,0.2"
BATCHES = (1, 8)
# .ci/run's gate command, without the gate (judged here, at several margins).
CI_ARGS = ["benchmarks/", "--benchmark-only", "--harness-model", "digits", "--harness-batch-sizes", "1,8",
           "--harness-backends", "onnxruntime", "--harness-max-seconds", "10", "--harness-report", "none",
           "-p", "no:cacheprovider", "-q"]


def _pairs(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split(",") if "=" in part)


def pytest_configure(config: Any) -> None:
    """Plugin side: slow the engines named in $GATE_DETECTION_SLOW, or break one as $GATE_DETECTION_REAL says."""
    slow = {e: float(s) for e, s in _pairs(os.environ.get(SLOW_ENV, "")).items()}
    real = _pairs(os.environ.get(REAL_ENV, ""))
    if not slow and not real:
        return
    import onnxruntime as ort

    from harness.backends.onnxrt import OrtRunner

    original, activate = OrtRunner.infer_checked, OrtRunner._activate

    def slowed(self: OrtRunner, feed: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        out = original(self, feed)
        if self.name in slow:  # spin, not sleep: a sleep of 10 us lasts 60 us or more
            until = time.perf_counter() + slow[self.name] * (time.perf_counter() - start)
            while time.perf_counter() < until:
                pass
        return out

    def broken(self: OrtRunner) -> None:
        kind = real.get(self.name)
        if kind == "threads":  # a thread count mis-set: one thread on a machine with more
            self.threads = 1
        activate(self)
        if kind == "unoptimized":  # graph optimizations switched off
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            options.intra_op_num_threads = self.threads
            self.session = ort.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])

    OrtRunner.infer_checked = slowed  # type: ignore[method-assign]
    OrtRunner._activate = broken  # type: ignore[method-assign]


# --- wall time ------------------------------------------------------------------------------


def run_suite(out: Path, env_extra: dict[str, str], extra_args: list[str]) -> dict[tuple[str, int], tuple[float, ...]]:
    """One pytest process of CI's gate run: (engine, batch) -> (speedup, low, high, others' share)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'scripts'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **env_extra}
    done = subprocess.run([sys.executable, "-m", "pytest", *CI_ARGS, *extra_args, "-p", "gate_detection",
                           f"--benchmark-json={out}"], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"the benchmark run failed (rc {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    rows = {}
    for bench in json.loads(out.read_text())["benchmarks"]:
        info = bench["extra_info"]
        if info.get("speedup_interval"):
            rows[(info["engine"], info["batch"])] = (info["speedup_vs_tensorflow"], *info["speedup_interval"],
                                                     info.get("others_cpu_share") or 0.0)
    return rows


def wall(args: argparse.Namespace) -> dict[str, Any]:
    from harness.machine import class_id, machine_class

    here = class_id(machine_class())
    print(f"machine class: {here}", flush=True)
    runs: list[dict[str, Any]] = []
    sizes = [float(s) for s in args.sizes.split(",")]

    def save() -> None:  # after every run: a late failure loses nothing measured
        if args.json:
            args.json.write_text(json.dumps({"machine": here, "runs": runs}, indent=1))

    with tempfile.TemporaryDirectory() as tmp:
        def run(kind: str, env: dict[str, str], slowed: dict[str, float]) -> None:
            measured = run_suite(Path(tmp) / f"run{len(runs)}.json", env, ["--harness-one-core"] if args.one_core else [])
            runs.append({"kind": kind, "slowed": slowed, "env": env,
                         "rows": {f"{e} b{b}": v for (e, b), v in measured.items()}})
            save()
            print(f"{kind} run {len(runs)}: " + ", ".join(f"{e[12:]} b{b} {v[0]:.2f}x" for (e, b), v in
                                                          sorted(measured.items())), flush=True)

        for _ in range(args.baseline_runs):
            run("baseline", {}, {})
        for _ in range(args.runs):
            run("clean", {}, {})
        for t in range(-(-args.runs * len(sizes) // len(ENGINES))):
            assign = {ENGINES[i]: sizes[(t + i) % len(sizes)] for i in range(len(ENGINES))}
            run("slowed", {SLOW_ENV: ",".join(f"{e}={s}" for e, s in assign.items())}, assign)
        for kind in ("unoptimized", "threads"):
            for i in range(args.real_runs):
                engine = ENGINES[i % len(ENGINES)]
                run(f"real:{kind}", {REAL_ENV: f"{engine}={kind}"}, {"kind": kind, "engine": engine})
    return {"machine": here, "runs": runs, "summary": analyse(runs, here, args)}


def analyse(runs: list[dict[str, Any]], here: str, args: argparse.Namespace) -> dict[str, Any]:
    """Judge the runs as `harness gate` would, at every margin: each process alone, and K
    processes combined (geometric mean; interval from the spread between processes, pooled with
    the spread the baseline's processes showed, as a baseline recorded with `harness gate
    --update-baseline` carries it)."""
    import itertools

    import numpy as np

    from harness.measure import ESTIMATOR, Speedup
    from harness.timing import Row, across_processes, check_gate, spread_between

    margins = [float(m) for m in args.margins.split(",")]
    sizes = [float(s) for s in args.sizes.split(",")]

    def keyed(run: dict[str, Any]) -> dict[tuple[str, str, int], Speedup]:
        out = {}
        for name, v in run["rows"].items():
            engine, batch = name.rsplit(" b", 1)
            out[("digits", engine, int(batch))] = Speedup(*v[:3])
        return out

    base = [keyed(r) for r in runs if r["kind"] == "baseline"]
    clean = [keyed(r) for r in runs if r["kind"] == "clean"]
    slowed = [(r["slowed"], keyed(r)) for r in runs if r["kind"] == "slowed"]
    real = [(r["slowed"], keyed(r)) for r in runs if r["kind"].startswith("real:")]
    # The baseline: its processes' geometric means, and their spread pooled with the clean runs'
    # (a baseline is recorded once, from many processes; here the clean runs stand in for them).
    points = across_processes(base)
    table: dict[str, dict[str, float]] = {}
    for (_, engine, batch), s in points.items():
        table.setdefault(engine, {})[str(batch)] = s.point
    baseline = {"format": 2, "machines": {here: {"machine": {}, "estimator": ESTIMATOR, "models": {"digits": table}}}}
    known = spread_between(base + clean)
    print(f"\nwall time, on {here}: {len(base)} baseline runs, {len(clean)} clean runs, {len(slowed)} slowed runs "
          f"(sizes rotate over the engines), {len(real)} realistic; spread between processes (sd of logs): " +
          ", ".join(f"{e[12:]} b{b} {sd:.1%}" for (_, e, b), (sd, _) in sorted(known.items())))
    summary: dict[str, Any] = {}

    def judged(measured: dict[tuple[str, str, int], Speedup], margin: float) -> list[Any]:
        rows = [Row("digits", e, b, 1.0, None, s) for (_, e, b), s in measured.items()]
        return [r for r in check_gate(rows, baseline, here, margin, allow_missing=True).results if r.measured]

    def lines(clean_sets: list[Any], slowed_sets: list[tuple[dict[str, float], Any]], label: str) -> None:
        print(f"{'margin':>7s} {'clean sets with a false flag':>30s} " + " ".join(f"{f'{s:.0%} flagged':>14s}" for s in sizes))
        for margin in margins:
            false = sum(any(r.regressed for r in judged(c, margin)) for c in clean_sets)
            line = f"{margin:7.0%} {false:>20d}/{len(clean_sets):<4d} = {false / max(len(clean_sets), 1):5.1%}"
            per_size = {}
            for size in sizes:
                hit = total = 0
                for assign, measured in slowed_sets:
                    for r in judged(measured, margin):
                        if assign.get(r.engine) == size:
                            hit, total = hit + r.regressed, total + 1
                per_size[str(size)] = [hit, total]
                line += f" {hit:>4d}/{total:<4d}={hit / max(total, 1):4.0%}"
            print(line)
            summary[f"{margin}{label}"] = {"false": false, "clean": len(clean_sets), "flagged": per_size}

    print("\neach process alone, its own interval (bootstrap over its rounds)")
    lines(clean, slowed, "")
    rng = np.random.default_rng(0)
    for k in args.processes:
        # Clean: disjoint groups (independent), then every group drawn from the clean runs
        # (resampled: overlapping, so not independent; a finer estimate of the same rate).
        def combined(group: list[Any], others: list[Any]) -> dict[Any, Speedup]:
            return across_processes(group, spread_between(base + others))

        disjoint = [combined(clean[i:i + k], clean[:i] + clean[i + k:]) for i in range(0, len(clean) - k + 1, k)]
        picks = [sorted(rng.choice(len(clean), k, replace=False)) for _ in range(300)]
        resampled = [combined([clean[i] for i in p], [c for j, c in enumerate(clean) if j not in p]) for p in picks]
        by_assignment: dict[Any, list[Any]] = {}
        for assign, measured in slowed:
            by_assignment.setdefault(tuple(sorted(assign.items())), []).append(measured)
        slowed_sets = [(dict(a), combined(list(g), clean)) for a, ms in by_assignment.items()
                       for g in itertools.islice(itertools.combinations(ms, k), 40)]
        print(f"\n{k} processes combined as `harness gate` does: {len(disjoint)} disjoint clean groups")
        lines(disjoint, [], f" x{k} disjoint")
        print(f"{k} processes combined: {len(resampled)} clean groups and {len(slowed_sets)} slowed groups drawn from "
              "the runs (overlapping)")
        lines(resampled, slowed_sets, f" x{k}")
    for info, measured in real:
        engine = info["engine"]
        changes = [f"b{b} {measured[('digits', engine, b)].point / table[engine][str(b)] - 1:+.0%}" for b in BATCHES
                   if ("digits", engine, b) in measured]
        flagged = [f"{m:.0%}" for m in margins if any(r.regressed and r.engine == engine for r in judged(measured, m))]
        print(f"realistic: {engine} {info['kind']}: speedup {' '.join(changes)}; flagged at margins {flagged or 'none'}")
    return summary


# --- instruction counts ---------------------------------------------------------------------


def counts(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from harness.counting import count_instructions, counting_class
    from harness.sources import ModelRequest
    from harness.workspace import Workspace

    sizes = [float(s) for s in args.sizes.split(",")]
    ws = Workspace(quiet=True)
    root = Path(ws.store.root)
    digits = ModelRequest("digits")
    recipes = {e: ws.engine(digits, "onnxruntime", e.split("-")[1]).runner.recipe() for e in ENGINES}

    def count(engine: str, runner_class: str | None = None, **extra: Any) -> dict[int, float]:
        recipe = recipes[engine]
        if runner_class:
            recipe = replace(recipe, kwargs={**recipe.kwargs, "runner_class": runner_class, **extra})
        return {b: c.per_call for b, c in count_instructions(recipe, list(BATCHES), root).items()}

    print(f"counting class: {counting_class()}", flush=True)
    # Counts do not move with the machine's load (that is their point), so two processes at once
    # on the 2-core machine halve the wall time without changing a figure.
    pool = ThreadPoolExecutor(max(1, args.jobs))
    clean: dict[str, list[dict[int, float]]] = {e: [] for e in ENGINES}
    if args.clean_from:  # the clean runs of an earlier --json file (same counting code), not counted again
        saved = json.loads(Path(args.clean_from).read_text())["clean"]
        clean = {e: [{int(b): v for b, v in run.items()} for run in saved[e][: args.runs]] for e in ENGINES}
        print(f"clean runs: {args.runs} from {args.clean_from}", flush=True)
    for i in range(len(clean[ENGINES[0]]), args.runs):
        for engine, got in zip(ENGINES, pool.map(count, ENGINES)):
            clean[engine].append(got)
        print(f"clean run {i + 1}/{args.runs}: " + ", ".join(
            f"{e[12:]} " + "/".join(f"{clean[e][-1][b]:,.0f}" for b in BATCHES) for e in ENGINES), flush=True)
    baseline = {e: {b: clean[e][0][b] for b in BATCHES} for e in ENGINES}  # the first run, as CI records one
    spread = {f"{e} b{b}": (max(r[b] for r in clean[e]) - min(r[b] for r in clean[e])) / float(np.median(
        [r[b] for r in clean[e]])) for e in ENGINES for b in BATCHES}
    false_runs = sum(any(clean[e][i][b] > baseline[e][b] * (1 + args.margin) for e in ENGINES for b in BATCHES)
                     for i in range(1, args.runs))
    # A regression of a known size: a spin of Python iterations whose cost is measured, sized per
    # row; each slowed process slows both of its batch sizes by the same share.
    per_iteration = {}
    for engine, spun in zip(ENGINES, pool.map(lambda e: count(e, "tests.counting_runners:SpinOrt", spin=100_000),
                                              ENGINES)):
        per_iteration[engine] = {b: (spun[b] - baseline[engine][b]) / 100_000 for b in BATCHES}
    rounds = -(-args.runs // len(ENGINES))  # at least --runs slowed processes per size
    detected: dict[float, list[int]] = {s: [0, 0] for s in sizes}
    sized_rows = []
    for size in sizes:
        # The spin costs a fixed amount plus one per iteration: the iteration's cost from the
        # 100,000-iteration spin, the fixed part from a trial at the guessed size (sized from the
        # iterations alone, "2%" read +1.6% to +4.2%).
        guess = {e: {str(b): round(size * baseline[e][b] / per_iteration[e][b]) for b in BATCHES} for e in ENGINES}
        trial = dict(zip(ENGINES, pool.map(lambda job: count(job[0], "tests.counting_runners:SpinOrt", spin=job[1]),
                                           guess.items())))
        fixed = {e: {b: trial[e][b] - baseline[e][b] - per_iteration[e][b] * guess[e][str(b)] for b in BATCHES}
                 for e in ENGINES}
        spins = {e: {str(b): max(0, round((size * baseline[e][b] - fixed[e][b]) / per_iteration[e][b]))
                     for b in BATCHES} for e in ENGINES}
        print(f"size {size:.0%}: the spin's fixed cost " + ", ".join(
            f"{e[12:]} b{b} {fixed[e][b]:,.0f}" for e in ENGINES for b in BATCHES), flush=True)
        jobs = [(engine, spins[engine]) for _ in range(rounds) for engine in ENGINES]
        results = pool.map(lambda job: count(job[0], "tests.counting_runners:SpinOrt", spin=job[1]), jobs)
        for (engine, _), got in zip(jobs, results):
            for b in BATCHES:
                change = got[b] / baseline[engine][b] - 1
                flagged = got[b] > baseline[engine][b] * (1 + args.margin)
                detected[size][0] += flagged
                detected[size][1] += 1
                sized_rows.append({"engine": engine, "batch": b, "size": size, "change": change, "flagged": flagged})
        print(f"size {size:.0%}: flagged {detected[size][0]}/{detected[size][1]} rows of {len(jobs)} processes "
              f"(changes {min(r['change'] for r in sized_rows if r['size'] == size):+.2%} to "
              f"{max(r['change'] for r in sized_rows if r['size'] == size):+.2%})", flush=True)
    real = []
    for kind, runner_class in (("graph optimizations off", "tests.counting_runners:UnoptimizedOrt"),
                               ("every call's work twice", "tests.counting_runners:TwiceOrt")):
        for engine in ENGINES:
            got = count(engine, runner_class)
            for b in BATCHES:
                change = got[b] / baseline[engine][b] - 1
                real.append({"kind": kind, "engine": engine, "batch": b, "change": change,
                             "flagged": got[b] > baseline[engine][b] * (1 + args.margin)})
    print(f"\ninstruction counts: {args.runs} clean runs per engine, margin {args.margin:.1%}")
    print("spread between processes (max - min over median), per row: " + ", ".join(
        f"{k} {v:.4%}" for k, v in spread.items()))
    print(f"clean runs with a false flag: {false_runs}/{args.runs - 1} (run 1 is the baseline)")
    for size in sizes:
        hit, total = detected[size]
        print(f"regression of {size:.0%}: {hit}/{total} rows flagged ({hit / total:.0%})")
    for r in real:
        print(f"realistic: {r['engine']} b{r['batch']} {r['kind']}: {r['change']:+.1%} "
              f"{'flagged' if r['flagged'] else 'NOT flagged'}")
    return {"class": counting_class(), "clean": clean, "spread": spread, "false_runs": false_runs,
            "sized": sized_rows, "realistic": real, "margin": args.margin}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("counts", "wall"), default="counts")
    parser.add_argument("--runs", type=int, default=20, help="clean runs, and slowed rows per size")
    parser.add_argument("--baseline-runs", type=int, default=10,
                        help="wall: clean runs the baseline is recorded from (CI's is 10 processes)")
    parser.add_argument("--real-runs", type=int, default=3, help="wall: runs per realistic regression")
    parser.add_argument("--sizes", default=SIZES, help=f"regression sizes, fractions ({SIZES})")
    parser.add_argument("--margins", default="0.1,0.15,0.2,0.25", help="wall: --harness-max-slowdown values to judge at")
    parser.add_argument("--margin", type=float, default=0.01, help="counts: --harness-max-increase to judge at")
    parser.add_argument("--clean-from", metavar="JSON", help="counts: take the clean runs from an earlier --json file")
    parser.add_argument("--jobs", type=int, default=2, help="counts: Valgrind processes at once (counts do not "
                        "move with the load)")
    parser.add_argument("--one-core", action="store_true", help="wall: run the benchmark with --harness-one-core")
    parser.add_argument("--processes", default="1,3,5", type=lambda t: [int(k) for k in t.split(",")],
                        help="wall: also judge K processes combined, for each K given (default: 1,3,5)")
    parser.add_argument("--analyse", type=Path, metavar="JSON",
                        help="wall: judge the runs a previous --json file holds instead of running any")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args()
    if args.analyse:
        data = json.loads(args.analyse.read_text())
        analyse(data["runs"], data["machine"], args)
        return
    result = counts(args) if args.mode == "counts" else wall(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
