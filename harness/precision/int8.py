"""FP32 ONNX -> INT8 ONNX with explicit QuantizeLinear/DequantizeLinear, in the form
TensorRT accepts: symmetric int8 (zero point 0), per-channel weight scales, per-tensor
activation scales.

Two steps so the slow one is cached on its own: `calibrate` runs the FP32 model on the
calibration data and writes the activation ranges (the "calibration table") to a JSON
file; `quantize` turns FP32 + table into the Q/DQ model without running anything."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.backends.onnxrt import import_onnxruntime
from harness.errors import ArtifactError, UsageError
from harness.precision.calibration import METHODS, CalibrationData

CALIBRATION_BATCH = 2  # minmax holds one batch's activations at a time: InceptionV3 at 8 peaked 1.3 GB higher
PERCENTILE = 99.999  # of |activation|, for the percentile method


def _method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    if name not in METHODS:
        raise UsageError(f"calibration method {name!r}: choose from {list(METHODS)}")
    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over in-memory batches."""

    def __init__(self, data: CalibrationData) -> None:
        self._batches = iter(data.batches(CALIBRATION_BATCH))

    def get_next(self) -> dict[str, Any] | None:
        return next(self._batches, None)

    def __len__(self) -> int:  # only for strided calibration, which is not used
        raise NotImplementedError


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantization tools print progress and log advice on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def calibrate(fp32: Path, data: CalibrationData, method: str, table: Path) -> None:
    import_onnxruntime()
    from onnxruntime.quantization.calibrate import CalibrationDataReader, create_calibrator, save_tensors_data

    CalibrationDataReader.register(_Reader)
    # The real (min, max) of each tensor: a symmetric recipe takes max(|min|, |max|) from it,
    # an asymmetric one uses both ends (half the int8 range is wasted on a ReLU output if
    # the range is made symmetric here).
    options: dict[str, Any] = {"symmetric": False}
    if method == "percentile":
        options["percentile"] = PERCENTILE
    with tempfile.TemporaryDirectory(prefix="harness-calib.") as tmp, _quiet():
        calibrator = create_calibrator(
            Path(fp32),
            None,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=_method(method),
            extra_options=options,
        )
        calibrator.collect_data(_Reader(data))
        ranges = calibrator.compute_data()
        del calibrator
    save_tensors_data(ranges, table)


def check_table(table: Path) -> dict[str, Any]:
    """The calibration table, or ArtifactError naming it: never quantize with a broken one."""
    try:
        raw = json.loads(table.read_text())
        from onnxruntime.quantization.calibrate import TensorsData

        TensorsData.from_dict(raw)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ArtifactError(
            f"{table}: not a readable calibration table ({type(e).__name__}: {e}); delete it to recalibrate"
        ) from e
    if not isinstance(raw, dict):
        raise ArtifactError(f"{table}: not a calibration table; delete it to recalibrate")
    return raw


# Two placements of the same calibration:
# - tensorrt: int8 activations, symmetric (zero point 0), per-tensor; int8 weights symmetric
#   per-channel; float biases. What TensorRT's explicit quantization accepts.
# - onnxruntime: uint8 activations with a zero point, the form ONNX Runtime's x86 kernels fuse
#   into QLinearConv end to end. With symmetric int8 activations it cannot drop the ReLU after
#   a convolution, so only 55 of InceptionV3's 94 convolutions fuse and int8 runs no faster than
#   fp32 (41.9 vs 41.4 ms at batch 1 on the 2-core CI machine; uint8: 18.7 ms).
TARGETS = ("tensorrt", "onnxruntime")


def quantize(fp32: Path, table: Path, method: str, dst: Path, target: str = "tensorrt") -> dict[str, Any]:
    import_onnxruntime()
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if target not in TARGETS:
        raise UsageError(f"int8 target {target!r}: choose from {list(TARGETS)}")
    check_table(table)
    symmetric = target == "tensorrt"

    with _quiet():
        quantize_static(
            str(fp32),
            str(dst),
            None,  # no reader: the ranges come from the table, nothing is recomputed
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=_method(method),
            calibration_cache_path=str(table),
            # TensorRT's Q/DQ types are int8/fp8/int4: a bias stays float (it fuses it itself).
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True, "QuantizeBias": not symmetric},
        )
    return {
        "target": target,
        "format": "QDQ",
        "activations": "int8 symmetric per-tensor" if symmetric else "uint8 asymmetric per-tensor",
        "weights": "int8 symmetric per-channel",
    }
