"""A contract engine for the TensorRT runner: the subset of the `tensorrt` API that
`harness.backends.trt.runner.TrtRunner` uses (Runtime, ICudaEngine, IExecutionContext, Dims,
TensorIOMode, nptype), computing a known function, y = 2x + 1, on the device buffers it is
given.  TensorRT itself cannot run on the lent GPUs (datacenter TensorRT is not installable;
TensorRT for RTX refuses compute capability 9.0), so these are contract tests **of the
runner** (chunking, dtype casts, shape and address checks, CUDA-graph capture and replay with
timings, all-or-nothing activation, the serving worker), not of TensorRT.

Two devices:
- "gpu": real cuda-python buffers, stream, events and graphs; execute_async_v3 launches an
  NVRTC kernel on the runner's stream (so a capture records it).
- "cpu": the runner's CUDA layer swapped for host-memory stand-ins (`FakeCuda`), so the
  runner's logic runs in CI; captures record the stream's operations and replay them, and a
  plain event record inside a capture poisons its timing as CUDA does
  (cudaEventElapsedTime -> cudaErrorInvalidValue).

A plan file for the contract engine is JSON: {"max_batch", "width", "data_dependent"}. A
data-dependent engine keeps only the rows whose first element is positive (as NMS keeps only
boxes over a threshold): `y` has shape (-1, width) until it runs, and it gets `y`'s memory from
the runner's IOutputAllocator with TensorRT's protocol (an upper bound asked for as it runs,
the real shape told before execute_async_v3 returns).
"""

from __future__ import annotations

import ctypes
import enum
import json
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Self

import numpy as np

from harness.backends.trt.cuda import CudaError, host_array
from harness.spec import ModelSpec, TensorSpec

WIDTH = 4
SPEC = ModelSpec("contract", (TensorSpec("x", "float32", (None, WIDTH)),), (TensorSpec("y", "float32", (None, WIDTH)),))
KERNEL = r"""
extern "C" __global__ void affine(const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = 2.0f * x[i] + 1.0f;
}
"""


def write_plan(path: Path, max_batch: int = 8, data_dependent: bool = False) -> Path:
    path.write_text(json.dumps({"max_batch": max_batch, "width": WIDTH, "data_dependent": data_dependent}))
    return path


# --- the TensorRT API subset ---------------------------------------------------------------


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = Severity

    def __init__(self) -> None:
        pass


class TensorIOMode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


class IOutputAllocator:
    def __init__(self) -> None:
        pass


class ContractEngine:
    def __init__(self, plan: dict[str, Any], device: Any) -> None:
        self.max_batch, self.width = int(plan["max_batch"]), int(plan["width"])
        self.data_dependent = bool(plan.get("data_dependent", False))
        self.device = device
        self.num_io_tensors = 2

    def get_tensor_name(self, i: int) -> str:
        return ("x", "y")[i]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name == "x" else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> str:
        return "float32"

    def get_tensor_profile_shape(self, name: str, profile: int) -> tuple[tuple[int, ...], ...]:
        return (1, self.width), (self.max_batch, self.width), (self.max_batch, self.width)

    def create_execution_context(self) -> ContractContext:
        return ContractContext(self)


class ContractContext:
    def __init__(self, engine: ContractEngine) -> None:
        self.engine = engine
        self.shape: tuple[int, ...] | None = None
        self.addresses: dict[str, int] = {}
        self.enqueues = 0
        self.refuse_shapes = False  # a test makes set_input_shape fail, as TensorRT does outside the profile
        self.refuse_addresses = False
        self.fail_in_capture = False  # a test makes the enqueue fail inside a capture
        self.changed = True  # a shape changed since the last plain enqueue
        self.allocators: dict[str, Any] = {}
        self.skip_notify = False  # a test makes the engine not tell an output's shape
        self.y_memory = 0  # what the allocator last gave for y (TensorRT passes it back as currentMemory)

    def set_input_shape(self, name: str, dims: tuple[int, ...]) -> bool:
        ok = (not self.refuse_shapes and name == "x" and len(dims) == 2
              and 1 <= dims[0] <= self.engine.max_batch and dims[1] == self.engine.width)
        if ok:
            new = tuple(int(d) for d in dims)
            self.changed |= new != self.shape
            self.shape = new
        return ok

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        assert self.shape is not None, "get_tensor_shape before set_input_shape"
        return (-1, self.engine.width) if name == "y" and self.engine.data_dependent else self.shape

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        if self.refuse_addresses or ptr % 256:  # TensorRT wants 256-byte aligned device memory
            return False
        self.addresses[name] = ptr
        return True

    def set_output_allocator(self, name: str, allocator: Any) -> bool:
        if name != "y" or not isinstance(allocator, IOutputAllocator):
            return False
        self.allocators[name] = allocator
        return True

    def execute_async_v3(self, stream: int) -> bool:
        if self.engine.data_dependent:
            return self._execute_selecting(stream)
        assert self.shape is not None and {"x", "y"} <= set(self.addresses), "enqueue before shapes and addresses"
        capturing = self.engine.device.capturing(stream)
        if capturing and self.changed:  # TensorRT: one enqueue after a shape change before a capture
            raise AssertionError("contract broken: a CUDA-graph capture right after a shape change")
        if capturing and self.fail_in_capture:
            return False
        self.changed &= capturing
        self.enqueues += 1
        self.engine.device.affine(self.addresses["x"], self.addresses["y"], int(np.prod(self.shape)), stream)
        return True

    def _execute_selecting(self, stream: int) -> bool:
        """y = 2x + 1 of the rows of x whose first element is positive, in the allocator's memory."""
        assert self.shape is not None and "x" in self.addresses, "enqueue before shapes and addresses"
        if self.engine.device.capturing(stream):
            raise AssertionError("contract broken: a data-dependent output inside a CUDA-graph capture")
        allocator = self.allocators.get("y")
        if allocator is None:  # TensorRT: neither an address nor an allocator for an output
            return False
        device = self.engine.device
        x = device.read(self.addresses["x"], self.shape, stream)  # TensorRT synchronizes too, to learn sizes
        y = 2 * x[x[:, 0] > 0] + 1
        upper = int(np.prod(self.shape)) * 4  # every row kept: an upper bound, asked for before the size is known
        ptr = allocator.reallocate_output_async("y", self.y_memory, upper, 256, stream)
        if not ptr:
            return False
        self.y_memory = ptr
        device.write(ptr, y.astype(np.float32), stream)
        if not self.skip_notify:
            allocator.notify_shape("y", y.shape)
        self.enqueues += 1
        return True


class Runtime:
    device: Any = None  # set by `contract_trt`

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, data: bytes) -> ContractEngine | None:
        try:
            return ContractEngine(json.loads(data), self.device)
        except ValueError:
            return None


def contract_trt(device: Any) -> SimpleNamespace:
    """A `tensorrt`-shaped module whose engines compute on `device` (GpuDevice or FakeCuda)."""
    runtime = type("Runtime", (Runtime,), {"device": device})
    return SimpleNamespace(
        __name__="tensorrt", __version__="contract", ILogger=ILogger, Runtime=runtime, TensorIOMode=TensorIOMode,
        IOutputAllocator=IOutputAllocator,
        Dims=lambda dims: tuple(int(d) for d in dims), nptype=np.dtype,
    )


# --- devices -----------------------------------------------------------------------------


class GpuDevice:
    """y = 2x + 1 by an NVRTC kernel launched on the runner's stream."""

    def __init__(self) -> None:
        from cuda.bindings import driver, nvrtc, runtime

        def ok(result: Any, call: str) -> Any:
            err, *rest = result if isinstance(result, tuple) else (result,)
            if int(err) != 0:
                raise RuntimeError(f"{call} failed: {err}")
            return rest[0] if len(rest) == 1 else rest

        ok(runtime.cudaFree(0), "cudaFree(0)")  # the primary context, current on this thread
        attr = runtime.cudaDeviceAttr
        major = ok(runtime.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, 0), "attr")
        minor = ok(runtime.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, 0), "attr")
        program = ok(nvrtc.nvrtcCreateProgram(KERNEL.encode(), b"affine.cu", 0, [], []), "nvrtcCreateProgram")
        options = [f"--gpu-architecture=compute_{major}{minor}".encode()]
        ok(nvrtc.nvrtcCompileProgram(program, len(options), options), "nvrtcCompileProgram")
        ptx = b" " * ok(nvrtc.nvrtcGetPTXSize(program), "nvrtcGetPTXSize")
        ok(nvrtc.nvrtcGetPTX(program, ptx), "nvrtcGetPTX")
        module = ok(driver.cuModuleLoadData(ptx), "cuModuleLoadData")
        self.kernel = ok(driver.cuModuleGetFunction(module, b"affine"), "cuModuleGetFunction")
        self._ok, self._driver = ok, driver

    def capturing(self, stream: int) -> bool:
        from cuda.bindings import runtime

        status = self._ok(runtime.cudaStreamIsCapturing(stream), "cudaStreamIsCapturing")
        return bool(status != runtime.cudaStreamCaptureStatus.cudaStreamCaptureStatusNone)

    def read(self, ptr: int, shape: tuple[int, ...], stream: int) -> np.ndarray:
        from cuda.bindings import runtime

        self._ok(runtime.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        out = np.empty(shape, np.float32)
        self._ok(runtime.cudaMemcpy(out.ctypes.data, ptr, out.nbytes, runtime.cudaMemcpyKind.cudaMemcpyDeviceToHost),
                 "cudaMemcpy(device->host)")
        return out

    def write(self, ptr: int, array: np.ndarray, stream: int) -> None:
        from cuda.bindings import runtime

        # On the runner's stream (a non-blocking one: the legacy default stream would not order
        # this before the runner's copy back), and finished before `array` may go.
        array = np.ascontiguousarray(array)
        kind = runtime.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(runtime.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, kind, stream), "cudaMemcpyAsync")
        self._ok(runtime.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def affine(self, x: int, y: int, n: int, stream: int) -> None:
        args = ((x, y, n), (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int))
        self._ok(self._driver.cuLaunchKernel(self.kernel, (n + 255) // 256, 1, 1, 256, 1, 1, 0,
                                             self._driver.CUstream(stream), args, 0), "cuLaunchKernel")


class FakeCuda:
    """Host-memory stand-ins for harness.backends.trt.cuda, with CUDA's capture semantics
    where the runner depends on them.  `live` holds what is made and not yet freed."""

    def __init__(self) -> None:
        self.live: set[int] = set()
        self.streams: dict[int, Any] = {}
        fake = self

        class _Memory:
            def __init__(self, nbytes: int) -> None:
                self.nbytes = max(int(nbytes), 1)
                self._raw = np.zeros(self.nbytes + 256, np.uint8)
                base = self._raw.ctypes.data
                self.ptr = base + (-base % 256)
                fake.live.add(id(self))

            def array(self, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
                return host_array(self.ptr, self.nbytes, dtype, shape)

            def free(self) -> None:
                fake.live.discard(id(self))
                self.ptr = 0  # as the real buffers do

        class PinnedBuffer(_Memory):
            pass

        class DeviceBuffer(_Memory):
            pass

        class Stream:
            def __init__(self) -> None:
                self.ptr = id(self)
                self.capture: list[Callable[[], None]] | None = None  # operations recorded while capturing
                fake.streams[self.ptr] = self
                fake.live.add(self.ptr)

            def run(self, op: Callable[[], None]) -> None:
                if self.capture is not None:
                    self.capture.append(op)
                else:
                    op()

            def copy_to_device(self, dst: Any, src: Any, nbytes: int) -> None:
                if nbytes > dst.nbytes:
                    raise CudaError(f"cudaMemcpyAsync(host->device) failed: {nbytes} bytes into {dst.nbytes}")
                self.run(lambda: ctypes.memmove(dst.ptr, src.ptr, nbytes))

            def copy_to_host(self, dst: Any, src: Any, nbytes: int) -> None:
                self.run(lambda: ctypes.memmove(dst.ptr, src.ptr, nbytes))

            def synchronize(self) -> None:
                pass

            def destroy(self) -> None:
                fake.live.discard(self.ptr)

        class Event:
            def __init__(self) -> None:
                self.at: float | None = None
                self.poisoned = False
                fake.live.add(id(self))

            def record(self, stream: Stream, captured: bool = False) -> None:
                if stream.capture is not None and not captured:
                    self.poisoned = True  # an internal node: no timing from it after the capture
                    return

                def now() -> None:
                    self.at = time.perf_counter()

                stream.run(now)

            def seconds_since(self, start: Event) -> float:
                if self.poisoned or start.poisoned or self.at is None or start.at is None:
                    raise CudaError("cudaEventElapsedTime failed: cudaErrorInvalidValue: invalid argument")
                return self.at - start.at

            def destroy(self) -> None:
                fake.live.discard(id(self))

        class Graph:
            def __init__(self, stream: Stream) -> None:
                self.stream = stream
                self.ops: list[Callable[[], None]] | None = None
                fake.live.add(id(self))

            @classmethod
            def capture(cls, stream: Stream) -> Graph:
                return cls(stream)

            def __enter__(self) -> Self:
                self.stream.capture = []
                return self

            def __exit__(self, *exc: object) -> None:
                self.ops, self.stream.capture = self.stream.capture, None

            def launch(self, stream: Stream) -> None:
                assert self.ops is not None, "graph was not captured"
                for op in self.ops:
                    op()

            def destroy(self) -> None:
                fake.live.discard(id(self))

        self.PinnedBuffer, self.DeviceBuffer, self.Stream, self.Event, self.Graph = (
            PinnedBuffer, DeviceBuffer, Stream, Event, Graph)

    def capturing(self, stream: int) -> bool:
        return self.streams[stream].capture is not None

    def read(self, ptr: int, shape: tuple[int, ...], stream: int) -> np.ndarray:
        return np.frombuffer((ctypes.c_float * int(np.prod(shape))).from_address(ptr), np.float32).reshape(shape).copy()

    def write(self, ptr: int, array: np.ndarray, stream: int) -> None:
        array = np.ascontiguousarray(array)
        ctypes.memmove(ptr, array.ctypes.data, array.nbytes)

    def affine(self, x: int, y: int, n: int, stream: int) -> None:
        def compute() -> None:
            src = np.frombuffer((ctypes.c_float * n).from_address(x), np.float32)
            dst = np.frombuffer((ctypes.c_float * n).from_address(y), np.float32)
            dst[...] = 2.0 * src + 1.0

        self.streams[stream].run(compute)


def install(monkeypatch: Any, device: str) -> tuple[Any, Any]:
    """Point the TensorRT runner at the contract engine on `device` ("cpu" or "gpu"); returns
    (the contract `tensorrt` module, the FakeCuda for "cpu" or None)."""
    import harness.backends.trt.runner as runner_module
    from harness.backends.trt.build import _Logger

    monkeypatch.setattr(_Logger, "_instances", {})  # never leave a contract logger for the real tensorrt
    fake = None
    if device == "cpu":
        fake = FakeCuda()
        for name in ("PinnedBuffer", "DeviceBuffer", "Stream", "Event", "Graph"):
            monkeypatch.setattr(runner_module, name, getattr(fake, name))
        monkeypatch.setattr(runner_module, "device_count", lambda: 1)
        monkeypatch.setattr(runner_module, "device_properties", lambda device=0: ("contract CPU", (0, 0)))
        trt = contract_trt(fake)
    else:
        trt = contract_trt(GpuDevice())
    monkeypatch.setattr(runner_module, "import_trt", lambda library: trt)
    return trt, fake


def make_gpu_runner(plan: str, max_batch: int, cuda_graph: bool) -> Any:
    """The serving worker's factory (another process): a TrtRunner on the contract engine, GPU."""
    import harness.backends.trt.runner as runner_module

    trt = contract_trt(GpuDevice())
    runner_module.import_trt = lambda library: trt  # type: ignore[assignment]  # this worker process only
    return runner_module.TrtRunner(Path(plan), SPEC, "fp32", "tensorrt", max_batch, cuda_graph=cuda_graph)
