"""A runner that does real GPU work per request through cuda-python: y = 2x + 1 by a kernel
compiled with NVRTC, with pinned/device buffers, a stream and async copies. The serving GPU
test runs it in the engine worker; each answer also says which process, thread and CUDA
context computed it."""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any

import numpy as np

from harness.backends.base import Runner
from harness.backends.trt.cuda import DeviceBuffer, PinnedBuffer, Stream
from harness.spec import ModelSpec, TensorSpec

SPEC = ModelSpec(
    "affine",
    (TensorSpec("x", "float32", (None, 4)),),
    (TensorSpec("y", "float32", (None, 4)), TensorSpec("owner", "int64", (None, 3))),
)
SOURCE = r"""
extern "C" __global__ void affine(const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = 2.0f * x[i] + 1.0f;
}
"""
MAX_ELEMENTS = 1 << 16


def _ok(result: Any, call: str) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"{call} failed: {err}")
    return rest[0] if len(rest) == 1 else rest


class CudaAffine(Runner):
    backend = "cuda-test"

    def __init__(self) -> None:
        super().__init__(SPEC)

    def _activate(self) -> None:
        from cuda.bindings import driver, nvrtc, runtime

        _ok(runtime.cudaSetDevice(0), "cudaSetDevice")
        _ok(runtime.cudaFree(0), "cudaFree(0)")  # creates the primary context, current on this thread
        self.context = _ok(driver.cuCtxGetCurrent(), "cuCtxGetCurrent")
        attr = runtime.cudaDeviceAttr
        major = _ok(runtime.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, 0), "attr")
        minor = _ok(runtime.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, 0), "attr")
        program = _ok(nvrtc.nvrtcCreateProgram(SOURCE.encode(), b"affine.cu", 0, [], []), "nvrtcCreateProgram")
        options = [f"--gpu-architecture=compute_{major}{minor}".encode()]
        _ok(nvrtc.nvrtcCompileProgram(program, len(options), options), "nvrtcCompileProgram")
        ptx = b" " * _ok(nvrtc.nvrtcGetPTXSize(program), "nvrtcGetPTXSize")
        _ok(nvrtc.nvrtcGetPTX(program, ptx), "nvrtcGetPTX")
        self.module = _ok(driver.cuModuleLoadData(ptx), "cuModuleLoadData")
        self.kernel = _ok(driver.cuModuleGetFunction(self.module, b"affine"), "cuModuleGetFunction")
        self.stream = Stream()
        nbytes = MAX_ELEMENTS * 4
        self.host_in, self.host_out = PinnedBuffer(nbytes), PinnedBuffer(nbytes)
        self.dev_in, self.dev_out = DeviceBuffer(nbytes), DeviceBuffer(nbytes)

    def _deactivate(self) -> None:
        for b in (self.host_in, self.host_out, self.dev_in, self.dev_out):
            b.free()
        self.stream.destroy()

    def infer_checked(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from cuda.bindings import driver

        x = feed["x"]
        n = int(x.size)
        current = _ok(driver.cuCtxGetCurrent(), "cuCtxGetCurrent")
        self.host_in.array(np.float32, (n,))[...] = x.ravel()
        self.stream.copy_to_device(self.dev_in, self.host_in, n * 4)
        args = ((self.dev_in.ptr, self.dev_out.ptr, n), (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int))
        _ok(driver.cuLaunchKernel(self.kernel, (n + 255) // 256, 1, 1, 256, 1, 1, 0,
                                  driver.CUstream(self.stream.ptr), args, 0), "cuLaunchKernel")
        self.stream.copy_to_host(self.host_out, self.dev_out, n * 4)
        self.stream.synchronize()
        owner = [os.getpid(), threading.get_ident(), int(current)]
        return {"y": self.host_out.array(np.float32, x.shape).copy(),
                "owner": np.array([owner] * len(x), dtype=np.int64)}


def make() -> Runner:
    return CudaAffine()
