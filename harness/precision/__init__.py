"""Precision variants of the FP32 ONNX export, each itself an ONNX file.

TensorRT 11 networks are strongly typed (no FP16/INT8 builder flags, no implicit
calibrators), so the precision is decided here, in the model: fp16 by converting weights
and compute to float16, int8 by explicit QuantizeLinear/DequantizeLinear pairs with
calibrated scales. ONNX Runtime runs the same files on any CPU, so every precision is
golden-checked in CI, and the very file ONNX Runtime checks is the one TensorRT builds."""

from __future__ import annotations

PRECISIONS = ("fp32", "fp16", "int8")
