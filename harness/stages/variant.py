"""Stage 3b: ONNX fp32 -> the ONNX file of another precision: fp16 (weights and compute in
float16, I/O float32) or int8 (Q/DQ from a calibration table, in one of two placements)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from harness.artifacts import ArtifactStore, digest_json
from harness.errors import UsageError
from harness.machine import installed_version
from harness.stages import Step
from harness.stages.calibrate import Calibration
from harness.stages.export import OnnxModel

# Changed when the conversion itself changes, so no file made the old way is reused.
FP16_RECIPE = "casts-from-integers-kept"
INT8_RECIPE = "integer-paths-and-detection-head-unquantized; onnxruntime form reduce_range"


def variant(store: ArtifactStore, fp32: OnnxModel, precision: str, calibration: Calibration | None, target: str,
            step: Step) -> OnnxModel:
    """`precision`'s file; int8 needs `calibration`, and `target` picks its placement
    (harness.precision.int8.TARGETS)."""
    start = time.perf_counter()
    if precision == "fp16":
        from harness.precision.fp16 import convert_fp16

        key = digest_json(["fp16", fp32.digest, installed_version("onnxconverter-common"), installed_version("onnx"),
                           FP16_RECIPE])

        def build(tmp: Path) -> dict[str, Any]:
            with step(f"converting {fp32.name} to fp16"):
                return convert_fp16(fp32.path, tmp / "model.onnx")
    elif precision == "int8":
        from harness.precision.int8 import quantize

        if calibration is None:
            raise UsageError(f"{fp32.name}: int8 needs a calibration")
        cal = calibration
        key = digest_json(["int8", fp32.digest, cal.digest, cal.method, target, installed_version("onnxruntime"),
                           INT8_RECIPE])

        def build(tmp: Path) -> dict[str, Any]:
            with step(f"quantizing {fp32.name} to int8 (Q/DQ for {target})"):
                info = quantize(fp32.path, cal.table, cal.method, tmp / "model.onnx", target)
            # The calibration table travels beside the model it produced.
            shutil.copyfile(cal.table, tmp / "calibration.json")
            return {**info, "calibration": cal.description, "method": cal.method}
    else:
        raise UsageError(f"no variant stage for precision {precision!r}")

    entry = store.get_or_build(precision, f"{fp32.name}-{target}" if precision == "int8" else fp32.name, key, build)
    return OnnxModel(fp32.name, fp32.spec, entry.file("model.onnx"), fp32.opset, entry.reused,
                     time.perf_counter() - start, entry.meta["files"]["model.onnx"])
