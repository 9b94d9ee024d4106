"""FP32 ONNX -> FP16 ONNX: weights and compute in float16; inputs and outputs stay float32
unless asked otherwise, so callers feed and read the same arrays in every precision."""

from __future__ import annotations

import warnings
from pathlib import Path

from harness.errors import ExportError
from harness.lazy import lazy_import


def convert_fp16(src: Path, dst: Path, keep_io_types: bool = True) -> dict[str, object]:
    import onnx

    float16 = lazy_import("onnxconverter_common.float16", "onnxconverter-common")

    model = onnx.load(str(src))
    try:
        # Weights beyond float16's range are clipped to it (and tiny ones to +-1e-7) rather
        # than becoming inf or 0; the converter warns once per weight, which is only noise.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            converted = float16.convert_float_to_float16(model, keep_io_types=keep_io_types)
    except Exception as e:  # the converter raises bare exceptions on graphs it cannot handle
        raise ExportError(f"{src}: float16 conversion failed ({type(e).__name__}: {e})") from e
    onnx.checker.check_model(converted, full_check=True)
    onnx.save(converted, str(dst))
    return {"keep_io_types": keep_io_types}
