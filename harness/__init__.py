"""Benchmarking and validation harness for TensorFlow models deployed with TensorRT.

Importing this package is cheap: TensorFlow, tf2onnx, ONNX Runtime and TensorRT are
imported only by the backends that need them."""

from harness.errors import HarnessError
from harness.spec import InputArg, ModelSpec, TensorSpec

__version__ = "0.1.0"
__all__ = ["HarnessError", "InputArg", "ModelSpec", "TensorSpec", "__version__"]
