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


def run_suite(out: Path, env_extra: dict[str, str]) -> dict[tuple[str, int], tuple[float, float, float, float]]:
    """One pytest process of CI's gate run: (engine, batch) -> (speedup, low, high, others' share)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'scripts'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **env_extra}
    done = subprocess.run([sys.executable, "-m", "pytest", *CI_ARGS, "-p", "gate_detection", f"--benchmark-json={out}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
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
    import numpy as np

    from harness.machine import class_id, machine_class
    from harness.measure import ESTIMATOR, Speedup
    from harness.timing import Row, check_gate

    margins = [float(m) for m in args.margins.split(",")]
    sizes = [float(s) for s in args.sizes.split(",")]
    here = class_id(machine_class())
    print(f"machine class: {here}", flush=True)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        def run(kind: str, env: dict[str, str], slowed: dict[str, float]) -> dict[tuple[str, int], Any]:
            measured = run_suite(Path(tmp) / f"run{len(runs)}.json", env)
            runs.append({"kind": kind, "slowed": slowed, "env": env,
                         "rows": {f"{e} b{b}": v for (e, b), v in measured.items()}})
            print(f"{kind} run {len(runs)}: " + ", ".join(f"{e[12:]} b{b} {v[0]:.2f}x" for (e, b), v in
                                                          sorted(measured.items())), flush=True)
            return measured

        base = [run("baseline", {}, {}) for _ in range(args.baseline_runs)]
        keys = sorted(set.intersection(*(set(c) for c in base)))
        table: dict[str, dict[str, float]] = {}
        for engine, batch in keys:
            table.setdefault(engine, {})[str(batch)] = float(np.median([c[(engine, batch)][0] for c in base]))
        baseline = {"format": 2, "machines": {here: {"machine": {}, "estimator": ESTIMATOR, "models": {"digits": table}}}}

        def judged(measured: dict[tuple[str, int], Any], margin: float) -> list[Any]:
            rows = [Row("digits", e, b, 1.0, None, Speedup(*v[:3])) for (e, b), v in measured.items()]
            return [r for r in check_gate(rows, baseline, here, margin, allow_missing=True).results if r.measured]

        clean = [run("clean", {}, {}) for _ in range(args.runs)]
        slowed_runs = []
        needed = -(-args.runs * len(sizes) // len(ENGINES))
        for t in range(needed):
            assign = {ENGINES[i]: sizes[(t + i) % len(sizes)] for i in range(len(ENGINES))}
            slowed_runs.append((assign, run("slowed", {SLOW_ENV: ",".join(f"{e}={s}" for e, s in assign.items())},
                                            assign)))
        real_runs = []
        for kind in ("unoptimized", "threads"):
            for i in range(args.real_runs):
                engine = ENGINES[i % len(ENGINES)]
                real_runs.append((kind, engine, run(f"real:{kind}", {REAL_ENV: f"{engine}={kind}"}, {})))
    print(f"\nwall time, on {here}: {args.baseline_runs} baseline runs, {args.runs} clean runs, "
          f"{len(slowed_runs)} slowed runs (each size applied to {args.runs}+ engine-runs, 2 rows each)")
    print(f"{'margin':>7s} {'clean runs with a false flag':>30s} " + " ".join(f"{f'{s:.0%} flagged':>14s}" for s in sizes))
    summary: dict[str, Any] = {}

    def table(clean_sets: list[Any], slowed_sets: list[tuple[dict[str, float], Any]], label: str) -> None:
        """One line per margin: clean sets with any false flag, and per size the slowed rows flagged."""
        for margin in margins:
            false = sum(any(r.regressed for r in judged(c, margin)) for c in clean_sets)
            line = f"{margin:7.0%} {false:>20d}/{len(clean_sets):<3d} = {false / max(len(clean_sets), 1):5.1%}"
            per_size = {}
            for size in sizes:
                hit = total = 0
                for assign, measured in slowed_sets:
                    for r in judged(measured, margin):
                        if assign.get(r.engine) == size:
                            hit, total = hit + r.regressed, total + 1
                per_size[str(size)] = [hit, total]
                line += f" {hit:>4d}/{total:<3d}={hit / max(total, 1):4.0%}"
            print(line)
            summary[f"{margin}{label}"] = {"false": false, "clean": len(clean_sets), "flagged": per_size}

    table(clean, slowed_runs, "")
    # Repetition at the process level, where the variance lives: k processes' medians (point,
    # low, high) judged as one measurement; slowed runs grouped by their (rotating) assignment.
    for k in (3,):
        clean_groups = [_median_of(clean[i:i + k]) for i in range(0, len(clean) - k + 1, k)]
        by_assignment: dict[tuple[tuple[str, float], ...], list[dict[tuple[str, int], Any]]] = {}
        for assign, measured in slowed_runs:
            by_assignment.setdefault(tuple(sorted(assign.items())), []).append(measured)
        slowed_groups = [(dict(a), _median_of(ms[i:i + k])) for a, ms in by_assignment.items()
                         for i in range(0, len(ms) - k + 1, k)]
        print(f"\nthe same, each judged measurement the median of {k} processes ({len(clean_groups)} clean groups, "
              f"{len(slowed_groups)} slowed groups)")
        table(clean_groups, slowed_groups, f" x{k}")
    for kind, engine, measured in real_runs:
        changes = [f"b{b} {measured[(engine, b)][0] / table[engine][str(b)] - 1:+.0%}" for b in BATCHES
                   if (engine, b) in measured]
        flagged = [f"{m:.0%}" for m in margins if any(r.regressed and r.engine == engine for r in judged(measured, m))]
        print(f"realistic: {engine} {kind}: speedup {' '.join(changes)}; flagged at margins {flagged or 'none'}")
    return {"machine": here, "baseline": baseline, "runs": runs, "summary": summary}


def _median_of(runs: list[dict[tuple[str, int], Any]]) -> dict[tuple[str, int], tuple[float, ...]]:
    """Rows measured in every one of `runs`: the median of each figure (point, low, high, share)."""
    import numpy as np

    keys = set.intersection(*(set(r) for r in runs)) if runs else set()
    return {key: tuple(float(np.median([r[key][i] for r in runs])) for i in range(4)) for key in keys}


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
    clean: dict[str, list[dict[int, float]]] = {e: [] for e in ENGINES}
    for i in range(args.runs):
        for engine in ENGINES:
            clean[engine].append(count(engine))
        print(f"clean run {i + 1}/{args.runs}: " + ", ".join(
            f"{e[12:]} " + "/".join(f"{clean[e][-1][b]:,.0f}" for b in BATCHES) for e in ENGINES), flush=True)
    baseline = {e: {b: clean[e][0][b] for b in BATCHES} for e in ENGINES}  # the first run, as CI records one
    spread = {f"{e} b{b}": (max(r[b] for r in clean[e]) - min(r[b] for r in clean[e])) / float(np.median(
        [r[b] for r in clean[e]])) for e in ENGINES for b in BATCHES}
    false_runs = sum(any(clean[e][i][b] > baseline[e][b] * (1 + args.margin) for e in ENGINES for b in BATCHES)
                     for i in range(1, args.runs))
    # A regression of a known size: a spin of Python iterations whose cost is measured, sized per row.
    per_iteration = {}
    for engine in ENGINES:
        spun = count(engine, "tests.counting_runners:SpinOrt", spin=100_000)
        per_iteration[engine] = {b: (spun[b] - baseline[engine][b]) / 100_000 for b in BATCHES}
    detected: dict[float, list[int]] = {s: [0, 0] for s in sizes}
    sized_rows = []
    for size in sizes:
        for engine in ENGINES:
            for b in BATCHES:
                spin = round(size * baseline[engine][b] / per_iteration[engine][b])
                got = count(engine, "tests.counting_runners:SpinOrt", spin=spin)[b]
                change = got / baseline[engine][b] - 1
                flagged = got > baseline[engine][b] * (1 + args.margin)
                detected[size][0] += flagged
                detected[size][1] += 1
                sized_rows.append({"engine": engine, "batch": b, "size": size, "change": change, "flagged": flagged})
        print(f"size {size:.0%}: flagged {detected[size][0]}/{detected[size][1]}", flush=True)
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
    parser.add_argument("--baseline-runs", type=int, default=3, help="wall: clean runs the baseline is the median of")
    parser.add_argument("--real-runs", type=int, default=3, help="wall: runs per realistic regression")
    parser.add_argument("--sizes", default=SIZES, help=f"regression sizes, fractions ({SIZES})")
    parser.add_argument("--margins", default="0.1,0.15,0.2,0.25", help="wall: --harness-max-slowdown values to judge at")
    parser.add_argument("--margin", type=float, default=0.01, help="counts: --harness-max-increase to judge at")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args()
    result = counts(args) if args.mode == "counts" else wall(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
