"""How much pytest-xdist buys the golden suite of several models on this machine: the same
user golden suite (every engine of ONNX Runtime and OpenVINO x fp32/fp16/int8, against each
model's golden) over three models, run with `-n 0` and with `-n N`, artifacts already built so
only the checks are timed.  Prints each wall time and their ratio (one pair of runs per
repetition, alternated, so drift of the machine falls on both).

    python scripts/xdist_speedup.py --workers 2 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = """
def test_golden(engine, golden, harness_tolerances):
    comparison = golden.check(engine.runner, harness_tolerances)
    assert comparison.passed, str(comparison)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from harness.sources import ModelRequest
    from harness.workspace import Workspace
    from tests.zoo import FAMILIES

    with tempfile.TemporaryDirectory(prefix="xdist-speedup.") as tmp:
        work = Path(tmp)
        models = [FAMILIES[name].save(work) for name in ("lstm_text", "se_swish", "bert_tiny")]
        os.chdir(work)  # a user's golden is keyed by the model's path relative to where pytest runs
        workspace = Workspace(work / "artifacts", work / "golden", quiet=True)
        requests = [ModelRequest.of(str(m), FAMILIES[name].inputs)
                    for m, name in zip(models, ("lstm_text", "se_swish", "bert_tiny"))]
        for request in requests:
            workspace.write_golden(request)
        (work / "test_suite.py").write_text(SUITE)
        (work / "pyproject.toml").write_text("".join(
            f'[tool.harness.model.{name}]\npath = "{m.name}"\ninputs = {list(FAMILIES[name].inputs)!r}\n'
            for m, name in zip(models, ("lstm_text", "se_swish", "bert_tiny"))).replace("'", '"'))
        base = [sys.executable, "-m", "pytest", "test_suite.py", "-q", "-p", "no:cacheprovider",
                "--harness-model", "lstm_text,se_swish,bert_tiny", "--harness-backends", "onnxruntime,openvino",
                "--harness-precisions", "fp32,fp16,int8", "--harness-artifacts", str(work / "artifacts"),
                "--harness-golden-dir", str(work / "golden"), "--rootdir", str(work)]

        def run(workers: int) -> float:
            start = time.perf_counter()
            done = subprocess.run([*base, "-n", str(workers)], check=False, cwd=work, capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                sys.exit(f"pytest -n {workers} failed:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}")
            return seconds

        run(0)  # builds every artifact once; the timed runs only check
        serial, parallel = [], []
        for i in range(args.repeats):
            order = (0, args.workers) if i % 2 == 0 else (args.workers, 0)
            for workers in order:
                (serial if workers == 0 else parallel).append(run(workers))
            print(f"repeat {i + 1}: -n 0 {serial[-1]:.1f} s, -n {args.workers} {parallel[-1]:.1f} s", flush=True)
        ratio = statistics.median(s / p for s, p in zip(serial, parallel))
        print(f"golden suite, 3 models x 2 backends x 3 precisions (18 tests), {os.cpu_count()} CPUs: "
              f"-n 0 median {statistics.median(serial):.1f} s, -n {args.workers} median "
              f"{statistics.median(parallel):.1f} s, speedup {ratio:.2f}x (median of per-repeat ratios)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
