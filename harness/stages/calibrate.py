"""Stage 3a: ONNX fp32 + calibration data -> int8 activation ranges (the calibration table).

The data come from the calibration source (harness.precision.calibration), never from the
golden store: int8 is not judged on what it was calibrated on."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.artifacts import ArtifactStore, digest_json
from harness.machine import installed_version
from harness.precision.calibration import DEFAULT_PREPROCESS, CalibrationData
from harness.stages import Step
from harness.stages.export import OnnxModel

DEFAULT_CALIBRATION_SAMPLES = 256
DEFAULT_CALIBRATION_METHOD = "minmax"


@dataclass(frozen=True)
class CalibrationOptions:
    """Where INT8 calibration data come from; None means the model's own calibration data
    (a built-in's calibration split) or, for a user's model, seeded synthetic inputs."""

    source: Path | None = None
    samples: int = DEFAULT_CALIBRATION_SAMPLES
    method: str = DEFAULT_CALIBRATION_METHOD
    preprocess: str = DEFAULT_PREPROCESS


@dataclass(frozen=True)
class Calibration:
    table: Path  # activation ranges (ONNX Runtime's calibration cache format, JSON)
    description: str
    method: str
    reused: bool
    seconds: float
    digest: str  # of the table, as its cache entry recorded it
    synthetic: bool = False  # calibrated on seeded synthetic inputs: int8 agreement proves little


def calibrate(store: ArtifactStore, model: OnnxModel, data: CalibrationData, method: str, step: Step) -> Calibration:
    """Cached: reused while the FP32 model, the data (by content) and the method are unchanged."""
    from harness.precision.int8 import calibrate as compute_ranges
    from harness.precision.int8 import check_table

    data_digest = data.digest()
    key = digest_json(["calibration", model.digest, data_digest, method, installed_version("onnxruntime")])
    start = time.perf_counter()

    def build(tmp: Path) -> dict[str, Any]:
        with step(f"calibrating {model.name} for int8 on {data.description} ({method})"):
            compute_ranges(model.path, data, method, tmp / "calibration.json")
        return {"description": data.description, "method": method, "data_digest": data_digest,
                "synthetic": data.synthetic}

    entry = store.get_or_build("calibration", model.name, key, build)
    check_table(entry.file("calibration.json"))
    return Calibration(entry.file("calibration.json"), entry.meta["description"], method, entry.reused,
                       time.perf_counter() - start, entry.meta["files"]["calibration.json"],
                       bool(entry.meta.get("synthetic", False)))
