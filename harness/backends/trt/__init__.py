"""TensorRT engines: one code path for the datacenter `tensorrt` module (10.x, 11.x) and
TensorRT for RTX (`tensorrt_rtx`), whose APIs differ in a few places handled explicitly:

- RTX builds ahead of time without a GPU for the compute capabilities it is told
  (`IBuilderConfig.set_compute_capability`); datacenter TensorRT builds for the GPU present.
- RTX has no timing cache (its calls are no-ops, deprecated in 1.2); it compiles kernels at
  run time and keeps them in a runtime cache (`IRuntimeConfig.create_runtime_cache`).
- RTX can check a plan's header against this machine (`Runtime.get_engine_validity`)
  before deserializing it.

Both parse the precision's ONNX into a strongly typed network: the precision comes from the
model, never from builder flags (TensorRT 11 has none)."""

from __future__ import annotations

from typing import Any

from harness.errors import BackendUnavailable
from harness.lazy import lazy_import, remedy

LIBRARIES = ("tensorrt", "tensorrt_rtx")
# Compute capabilities TensorRT for RTX runs on; its plans refuse others (9.0 H100/H200, 10.x).
RTX_RUNS_ON = ((8, 0), (8, 6), (8, 9), (12, 0), (12, 1))


def import_trt(library: str) -> Any:
    if library not in LIBRARIES:
        raise BackendUnavailable(library, f"unknown TensorRT library {library!r}; choose from {list(LIBRARIES)}")
    module = lazy_import(library)
    if not hasattr(module, "Builder"):
        # tensorrt-stubs installs a bare tensorrt/ of .pyi files: importable, but no library.
        raise BackendUnavailable(library, f"{library} here is type stubs only (no library); install it with: "
                                 f"{remedy(library)}")
    return module


def is_rtx(trt: Any) -> bool:
    return str(getattr(trt, "__name__", "")) == "tensorrt_rtx"


def rtx_runs_on(capability: tuple[int, int]) -> bool:
    return capability in RTX_RUNS_ON
