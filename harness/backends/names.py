"""Backend names: the one list every layer reads (options, workspace, plugin), with no imports."""

from __future__ import annotations

# Engines: what is built from the ONNX and checked against TensorFlow.
ENGINE_BACKENDS = ("onnxruntime", "openvino", "tensorrt", "tensorrt_rtx")
TRT_LIBRARIES = ("tensorrt", "tensorrt_rtx")
BACKENDS = ("tensorflow", *ENGINE_BACKENDS)  # what `harness compare --backends` accepts
