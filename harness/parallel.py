"""The benchmark suite under pytest-xdist: workers build engines in parallel, but time one
benchmark at a time on the host, and the controller gathers what they measured.

- pytest-benchmark turns itself off under xdist and refuses `--benchmark-only` there.  The
  controller hands `--benchmark-only` to the workers as its own flag; each worker turns its
  pytest-benchmark session back on and writes no JSON of its own.
- A benchmark's timed call holds one file lock the workers of the host share, whatever GPU
  each worker has: every engine row also times the TensorFlow reference beside it on the host
  (and CPU engines run there), so two timed calls at once would time each other's load; the
  benchmarks run one after another.  A batch size's round-robin (harness.suite) runs in the
  first row of it a worker gets, over every engine row that worker collected, and builds the
  engines it lacks inside the lock: time with a warm cache (`harness build`, or a first run).
- At its end a worker sends its rows, unmeasured rows and its pytest-benchmark JSON to the
  controller (xdist's `workeroutput`); the controller's end-of-run table, gate, report and
  `--benchmark-json` cover every worker's."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

WORKER_ENV = "PYTEST_XDIST_WORKER"
ONLY = "harness_benchmark_only"  # set on the controller's options, which the workers receive


def worker_id() -> str:
    return os.environ.get(WORKER_ENV, "")


@contextlib.contextmanager
def timing_slot(artifacts: Path, extra_info: dict[str, Any] | None) -> Iterator[None]:
    """Hold the host's benchmark lock for the timed call; record when it held it."""
    from harness.artifacts import locked

    with locked(Path(artifacts) / "locks" / "benchmark-host"):
        start = time.time()
        try:
            yield
        finally:
            if extra_info is not None:
                extra_info["timed_between"] = [start, time.time()]
                extra_info["xdist_worker"] = worker_id()


def rows_out(rows: Sequence[Any], unmeasured: Sequence[Any]) -> dict[str, Any]:
    """A worker's rows as plain data (what execnet carries)."""
    return {"rows": json.dumps([asdict(r) for r in rows], default=str),
            "unmeasured": json.dumps([asdict(u) for u in unmeasured])}


def rows_in(data: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
    from harness.measure import Speedup
    from harness.timing import Row, Unmeasured

    rows = []
    for r in json.loads(data.get("rows", "[]")):
        speedup = r.pop("speedup", None)
        rows.append(Row(**r, speedup=Speedup(**speedup) if speedup else None))
    return rows, [Unmeasured(**u) for u in json.loads(data.get("unmeasured", "[]"))]


def merge_benchmark_json(parts: Sequence[str]) -> dict[str, Any] | None:
    """One pytest-benchmark JSON from the workers': the first one's machine and commit info,
    every worker's benchmarks."""
    docs = [json.loads(p) for p in parts if p]
    if not docs:
        return None
    merged = dict(docs[0])
    merged["benchmarks"] = [b for d in docs for b in d.get("benchmarks", [])]
    return merged
