"""Backends: what can run a model on this host, and why the others cannot."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.errors import BackendUnavailable
from harness.lazy import lazy_import


@dataclass(frozen=True)
class BackendInfo:
    name: str
    module: str
    available: bool
    version: str = ""
    devices: list[str] = field(default_factory=list)
    reason: str = ""




def _probe(name: str, module: str) -> BackendInfo:
    try:
        if module == "tensorflow":
            from harness.tfimport import import_tensorflow

            mod = import_tensorflow()
        elif module in ("tensorrt", "tensorrt_rtx"):
            from harness.backends.trt import import_trt

            mod = import_trt(module)  # also tells a stubs-only tensorrt from the library
        else:
            mod = lazy_import(module, name)
    except BackendUnavailable as e:
        return BackendInfo(name, module, False, reason=e.reason)
    version = str(getattr(mod, "__version__", "") or "")
    devices: list[str] = []
    if module == "tensorflow":
        devices = [d.name for d in mod.config.list_physical_devices()]
    elif module == "onnxruntime":
        devices = list(mod.get_available_providers())
    elif module == "cuda.bindings.runtime":
        err, count = mod.cudaGetDeviceCount()
        devices = [f"cuda:{i}" for i in range(count)] if int(err) == 0 else []
        if not devices:
            return BackendInfo(name, module, False, version, reason=f"no CUDA device ({err})")
    return BackendInfo(name, module, True, version, devices)


def probe_all() -> list[BackendInfo]:
    return [
        _probe(n, m)
        for n, m in [
            ("tensorflow", "tensorflow"),
            ("tf2onnx", "tf2onnx"),
            ("onnx", "onnx"),
            ("onnxruntime", "onnxruntime"),
            ("openvino", "openvino"),
            ("tensorrt", "tensorrt"),
            ("tensorrt_rtx", "tensorrt_rtx"),
            ("cuda-python", "cuda.bindings.runtime"),
        ]
    ]
