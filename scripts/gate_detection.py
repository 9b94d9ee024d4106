"""How often the speed gate catches a real slowdown, and how often it cries wolf.

Runs CI's own gate command (`.ci/run`: the digits benchmark, batch 1 and 8) as separate pytest
processes, as CI does:

1. `--baseline-runs` clean runs; the baseline is each row's median speedup over them (what
   `benchmarks/baseline.json` is recorded as);
2. `--trials` runs in which one ONNX Runtime engine (a different one each trial) is slowed by
   `--slowdown` (0.2: every call spins for 20% of its own duration more) while the others run
   unmodified; each run's rows are judged by the gate (`harness.timing.check_gate`) at every
   margin of `--margins`.

It prints, per margin, the share of slowed rows the gate called REGRESSED (target >= 95% at a
20% slowdown) and the share of unmodified rows it called REGRESSED (target <= 5%), with the
share too noisy to decide.  A benchmark, not a test: about 40 s per run on 2 cores; keep the
machine otherwise idle.

    python scripts/gate_detection.py --trials 20 --margins 0.05,0.1,0.15

This file is also the pytest plugin that injects the slowdown (`-p gate_detection`, driven by
the environment variables below), so the measured path is the real one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SLOW_ENGINE, SLOWDOWN = "GATE_DETECTION_ENGINE", "GATE_DETECTION_SLOWDOWN"
ENGINES = ("onnxruntime-fp32", "onnxruntime-fp16", "onnxruntime-int8")
# .ci/run's gate command, without the gate (judged here, at several margins).
CI_ARGS = ["benchmarks/", "--benchmark-only", "--harness-model", "digits", "--harness-batch-sizes", "1,8",
           "--harness-backends", "onnxruntime", "-k", "not overhead and not serving and not zoo", "-p", "no:cacheprovider", "-q"]


def pytest_configure(config: Any) -> None:
    """Plugin side: make the engine named in $GATE_DETECTION_ENGINE slower by $GATE_DETECTION_SLOWDOWN."""
    engine, slowdown = os.environ.get(SLOW_ENGINE), float(os.environ.get(SLOWDOWN, "0"))
    if not engine or slowdown <= 0:
        return
    from harness.backends.onnxrt import OrtRunner

    original = OrtRunner.infer_checked

    def slowed(self: OrtRunner, feed: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        out = original(self, feed)
        if self.name == engine:  # spin, not sleep: a sleep of 10 us lasts 60 us or more
            until = time.perf_counter() + slowdown * (time.perf_counter() - start)
            while time.perf_counter() < until:
                pass
        return out

    OrtRunner.infer_checked = slowed  # type: ignore[method-assign]


def run_suite(out: Path, engine: str | None, slowdown: float) -> dict[tuple[str, int], tuple[float, float, float]]:
    """One pytest process of CI's gate run: (engine, batch) -> (speedup, interval low, high)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'scripts'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if engine:
        env |= {SLOW_ENGINE: engine, SLOWDOWN: str(slowdown)}
    done = subprocess.run([sys.executable, "-m", "pytest", *CI_ARGS, "-p", "gate_detection", f"--benchmark-json={out}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"the benchmark run failed (rc {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    rows = {}
    for bench in json.loads(out.read_text())["benchmarks"]:
        info = bench["extra_info"]
        if info.get("speedup_interval"):
            rows[(info["engine"], info["batch"])] = (info["speedup_vs_tensorflow"], *info["speedup_interval"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--baseline-runs", type=int, default=3)
    parser.add_argument("--slowdown", type=float, default=0.2, help="extra latency per call, a fraction (0.2)")
    parser.add_argument("--margins", default="0.05,0.1,0.15,0.2", help="--harness-max-slowdown values to judge at")
    parser.add_argument("--json", type=Path, help="write every run's rows here")
    parser.add_argument("--write-baseline", type=Path, metavar="BASELINE",
                        help="also record the baseline (each row's median over the clean runs) in this file, "
                             "under this machine class, as --harness-update-baseline would")
    args = parser.parse_args()

    import numpy as np

    from harness.machine import class_id, machine_class
    from harness.measure import Speedup
    from harness.timing import Row, check_gate

    margins = [float(m) for m in args.margins.split(",")]
    here = class_id(machine_class())
    print(f"machine class: {here}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        clean = []
        for i in range(args.baseline_runs):
            clean.append(run_suite(Path(tmp) / f"base{i}.json", None, 0))
            print(f"baseline run {i + 1}/{args.baseline_runs}: "
                  + ", ".join(f"{e} b{b} {s[0]:.2f}x" for (e, b), s in sorted(clean[-1].items())), flush=True)
        keys = sorted(set.intersection(*(set(c) for c in clean)))
        baseline = {"format": 2, "machines": {here: {"machine": {}, "models": {"digits": {}}}}}
        for engine, batch in keys:
            baseline["machines"][here]["models"]["digits"].setdefault(engine, {})[str(batch)] = float(
                np.median([c[(engine, batch)][0] for c in clean]))
        if args.write_baseline:
            from harness.machine import machine_class as this_class
            from harness.machine import versions
            from harness.timing import update_baseline

            table = baseline["machines"][here]["models"]["digits"]
            update_baseline(args.write_baseline, {("digits", e, int(b)): Speedup.exact(v) for e, bs in table.items()
                                                  for b, v in bs.items()}, this_class(),
                            {"how": f"median of {args.baseline_runs} runs of CI's gate command (gate_detection.py)",
                             "versions": versions()})
            print(f"baseline written to {args.write_baseline}", flush=True)
        counts = {m: {"slowed": [0, 0, 0], "unmodified": [0, 0, 0]} for m in margins}  # regressed, undecided, rows
        false_runs = dict.fromkeys(margins, 0)  # runs in which an unmodified row was called REGRESSED
        trials = []
        for t in range(args.trials):
            slowed = ENGINES[t % len(ENGINES)]
            measured = run_suite(Path(tmp) / f"trial{t}.json", slowed, args.slowdown)
            trials.append({"slowed": slowed, "rows": {f"{e} b{b}": v for (e, b), v in measured.items()}})
            rows = [Row("digits", e, b, 1.0, None, Speedup(*v)) for (e, b), v in measured.items()]
            flagged = []
            for margin in margins:
                results = check_gate(rows, baseline, here, margin, allow_missing=True).results
                false_runs[margin] += any(r.regressed and r.engine != slowed for r in results)
                for result in results:
                    if result.measured is None:
                        continue
                    kind = counts[margin]["slowed" if result.engine == slowed else "unmodified"]
                    kind[0] += result.regressed
                    kind[1] += result.undecided
                    kind[2] += 1
                    if result.regressed:
                        flagged.append(f"{margin:.0%}:{result.engine} b{result.batch}")
            print(f"trial {t + 1}/{args.trials} ({slowed} slowed {args.slowdown:.0%}): "
                  + ", ".join(f"{e} b{b} {v[0]:.2f}x" for (e, b), v in sorted(measured.items()))
                  + f"; flagged: {' '.join(flagged) or 'none'}", flush=True)
    print(f"\n{args.trials} trials, {args.baseline_runs} baseline runs, slowdown {args.slowdown:.0%}, on {here}")
    print(f"{'margin':>7s} {'slowed rows flagged':>20s} {'unmodified rows flagged':>24s} {'runs with a false flag':>23s} "
          f"{'too noisy (slowed/unmod.)':>26s}")
    for margin in margins:
        s, u = counts[margin]["slowed"], counts[margin]["unmodified"]
        print(f"{margin:7.0%} {s[0]:>5d}/{s[2]:<4d} = {s[0] / max(s[2], 1):5.1%} {u[0]:>7d}/{u[2]:<4d} = "
              f"{u[0] / max(u[2], 1):5.1%} {false_runs[margin]:>15d}/{args.trials:<7d} {s[1]:>10d} / {u[1]}")
    if args.json:
        args.json.write_text(json.dumps({"machine": here, "baseline": baseline, "trials": trials,
                                         "counts": {str(m): c for m, c in counts.items()}}, indent=1))


if __name__ == "__main__":
    main()
