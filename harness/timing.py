"""Latency statistics, speedups measured in one run, and the regression gate on speedups.

Absolute times differ between machines; the ratio of an engine's median to TensorFlow's
median at the same batch size, measured in the same run, is what a gate can hold across
machines of a kind. The baseline is a JSON file of those ratios:

    {"models": {"inception_v3": {"onnxruntime-int8": {"1": 2.1, "32": 2.4}, ...}}, "recorded": {...}}
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.artifacts import atomic_write_json
from harness.errors import UsageError

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


@dataclass(frozen=True)
class Row:
    """One measured engine at one batch size."""

    model: str
    engine: str  # backend-precision, e.g. onnxruntime-int8; the reference is tensorflow-fp32
    batch: int
    median: float  # seconds per call (one batch)

    @property
    def samples_per_s(self) -> float:
        return self.batch / self.median


def speedups(rows: Sequence[Row]) -> dict[tuple[str, str, int], float]:
    """(model, engine, batch) -> reference median / engine median, where the reference ran."""
    reference = {(r.model, r.batch): r.median for r in rows if r.engine == REFERENCE}
    return {
        (r.model, r.engine, r.batch): reference[(r.model, r.batch)] / r.median
        for r in rows if (r.model, r.batch) in reference
    }


@dataclass(frozen=True)
class GateResult:
    model: str
    engine: str
    batch: int
    baseline: float
    measured: float | None  # None: the row was in the baseline but not measured in this run
    floor: float

    @property
    def passed(self) -> bool:
        return self.measured is not None and self.measured >= self.floor

    @property
    def regressed(self) -> bool:
        """Measured and below the floor (a row not measured in this run is not a regression)."""
        return self.measured is not None and self.measured < self.floor

    def __str__(self) -> str:
        row = f"{self.model} {self.engine} batch {self.batch}"
        if self.measured is None:
            return f"{row}: not measured in this run (baseline {self.baseline:.2f}x)"
        verdict = "ok" if self.passed else "REGRESSED"
        return (f"{row}: speedup {self.measured:.2f}x vs baseline {self.baseline:.2f}x "
                f"(floor {self.floor:.2f}x) {verdict}")


def load_baseline(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise UsageError(f"baseline {path}: cannot read it ({e}); write one with --harness-update-baseline") from e
    except ValueError as e:
        raise UsageError(f"baseline {path}: not valid JSON ({e})") from e
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise UsageError(f"baseline {path}: no 'models' table; write one with --harness-update-baseline")
    for model, engines in models.items():
        for engine, batches in engines.items():
            for batch, ratio in batches.items():
                if not str(batch).isdigit() or not isinstance(ratio, int | float) or ratio <= 0:
                    raise UsageError(f"baseline {path}: {model}/{engine}/{batch} = {ratio!r}; "
                                     "expected a positive speedup per batch size")
    return data


def check_gate(
    measured: Mapping[tuple[str, str, int], float], baseline: Mapping[str, Any], max_slowdown: float
) -> list[GateResult]:
    """Every baseline row of the models measured in this run, against its measured speedup."""
    if not 0 <= max_slowdown < 1:
        raise UsageError(f"max slowdown {max_slowdown}: a fraction in [0, 1), e.g. 0.15")
    models_run = {m for m, _, _ in measured}
    results = []
    for model, engines in baseline["models"].items():
        if model not in models_run:
            continue
        for engine, batches in engines.items():
            for batch, ratio in batches.items():
                got = measured.get((model, engine, int(batch)))
                results.append(GateResult(model, engine, int(batch), float(ratio), got, ratio * (1 - max_slowdown)))
    return results


def update_baseline(
    path: Path, measured: Mapping[tuple[str, str, int], float], recorded: Mapping[str, Any]
) -> dict[str, Any]:
    """Write the measured speedups into the baseline, replacing the models measured and
    keeping the others."""
    path = Path(path)
    data: dict[str, Any] = {"models": {}, "recorded": {}}
    if path.is_file():
        data = load_baseline(path)
        data.setdefault("recorded", {})
    for model in sorted({m for m, _, _ in measured}):
        engines: dict[str, dict[str, float]] = {}
        for (m, engine, batch), ratio in sorted(measured.items()):
            if m == model and engine != REFERENCE:
                engines.setdefault(engine, {})[str(batch)] = round(ratio, 3)
        data["models"][model] = engines
        data["recorded"][model] = dict(recorded)
    atomic_write_json(path, data)
    return data
