"""Precision variants of the FP32 ONNX export, each itself an ONNX file.

TensorRT 11 networks are strongly typed (no FP16/INT8 builder flags, no implicit
calibrators), so the precision is decided here, in the model: fp16 by converting weights
and compute to float16, int8 by explicit QuantizeLinear/DequantizeLinear pairs with
calibrated scales. ONNX Runtime runs the same files on any CPU, so every precision is
golden-checked in CI, and the very file ONNX Runtime checks is the one TensorRT builds."""

from __future__ import annotations

PRECISIONS = ("fp32", "fp16", "int8", "bf16")
# Mixed variants (`harness debug --fix`): the fewest nodes kept in fp32 / unquantized so the
# golden check passes.  Asked for by name only (a search of golden runs builds them), never a
# default; each is judged by its base precision's tolerance.
MIXED = {"fp16-mixed": "fp16", "int8-mixed": "int8"}
ALL_PRECISIONS = (*PRECISIONS, *MIXED)


def base_precision(precision: str) -> str:
    return MIXED.get(precision, precision)
# bf16 has no file of its own: an engine that computes in bf16 (OpenVINO on a CPU with bf16
# units) compiles the fp32 file with its precision pinned to bf16.
SAME_FILE_AS = {"bf16": "fp32"}
# What each backend computes in; a combination missing here is not an engine (bf16 on ONNX
# Runtime's CPU kernels or through a TensorRT plan: not made by this harness).
BACKEND_PRECISIONS = {
    "tensorflow": ("fp32",),
    "onnxruntime": ("fp32", "fp16", "int8", *MIXED),
    "openvino": ("fp32", "fp16", "int8", "bf16", *MIXED),
    "tensorrt": ("fp32", "fp16", "int8", *MIXED),
    "tensorrt_rtx": ("fp32", "fp16", "int8", *MIXED),
}

# ONNX element types that are floating point (TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16):
# what the fp16 and int8 conversions treat as values rather than integers.
FLOAT_ELEM_TYPES = frozenset({1, 10, 11, 16})
