"""The CUDA the TensorRT runner needs, through NVIDIA's cuda-python (`cuda.bindings.runtime`):
pinned host buffers, device buffers, one stream, events, graphs of captured work.

Not pycuda: `pycuda.autoinit` makes a global context bound to the importing thread, the
classic "invalid device context" in web servers, and pycuda needs a toolkit to build. The
runtime API used here binds the device's primary context to whichever thread calls it.

Every call is checked; a failure raises CudaError naming the call and CUDA's own error."""

from __future__ import annotations

import ctypes
from types import TracebackType
from typing import Any, Self

import numpy as np

from harness.errors import BackendUnavailable, HarnessError
from harness.lazy import lazy_import


class CudaError(HarnessError):
    pass


def import_cudart() -> Any:
    return lazy_import("cuda.bindings.runtime", "cuda")


def check(result: tuple[Any, ...], call: str) -> Any:
    """cuda-python returns (error, *values); raise on error, return the value(s)."""
    cudart = import_cudart()
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        _, name = cudart.cudaGetErrorName(err)
        _, text = cudart.cudaGetErrorString(err)
        raise CudaError(f"{call} failed: {name.decode() if isinstance(name, bytes) else name}: "
                        f"{text.decode() if isinstance(text, bytes) else text}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def device_count() -> int:
    """CUDA devices usable here; 0 without a driver, a device, or cuda-python."""
    try:
        cudart = import_cudart()
    except BackendUnavailable:
        return 0
    err, count = cudart.cudaGetDeviceCount()
    return int(count) if err == cudart.cudaError_t.cudaSuccess else 0


def device_properties(device: int = 0) -> tuple[str, tuple[int, int]]:
    """(name, (major, minor) compute capability) of a device."""
    cudart = import_cudart()
    props = check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return name.rstrip("\0"), (int(props.major), int(props.minor))


def host_array(ptr: int, nbytes: int, dtype: np.dtype[Any] | type, shape: tuple[int, ...],
               what: str = "buffer") -> np.ndarray:
    """The `nbytes` of host memory at `ptr` seen as an array of `shape`, or CudaError if it won't fit."""
    count = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if count > nbytes:
        raise CudaError(f"{what} of {nbytes} bytes cannot hold {shape} {np.dtype(dtype)}")
    raw = (ctypes.c_byte * count).from_address(ptr)
    return np.frombuffer(memoryview(raw), dtype=dtype, count=int(np.prod(shape))).reshape(shape)


class PinnedBuffer:
    """Page-locked host memory seen as a numpy array: async copies need it to be truly async."""

    def __init__(self, nbytes: int) -> None:
        cudart = import_cudart()
        self.nbytes = max(int(nbytes), 1)
        self.ptr: int = int(check(cudart.cudaMallocHost(self.nbytes), "cudaMallocHost"))

    def array(self, dtype: np.dtype[Any] | type, shape: tuple[int, ...]) -> np.ndarray:
        return host_array(self.ptr, self.nbytes, dtype, shape, "pinned buffer")

    def free(self) -> None:
        if self.ptr:
            check(import_cudart().cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0


class DeviceBuffer:
    def __init__(self, nbytes: int) -> None:
        cudart = import_cudart()
        self.nbytes = max(int(nbytes), 1)
        self.ptr: int = int(check(cudart.cudaMalloc(self.nbytes), "cudaMalloc"))

    def free(self) -> None:
        if self.ptr:
            check(import_cudart().cudaFree(self.ptr), "cudaFree")
            self.ptr = 0


class Stream:
    def __init__(self) -> None:
        cudart = import_cudart()
        self.handle = check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "cudaStreamCreate")

    @property
    def ptr(self) -> int:
        return int(self.handle)

    def copy_to_device(self, dst: DeviceBuffer, src: PinnedBuffer, nbytes: int) -> None:
        cudart = import_cudart()
        kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(cudart.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, kind, self.handle), "cudaMemcpyAsync(host->device)")

    def copy_to_host(self, dst: PinnedBuffer, src: DeviceBuffer, nbytes: int) -> None:
        cudart = import_cudart()
        kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(cudart.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, kind, self.handle), "cudaMemcpyAsync(device->host)")

    def synchronize(self) -> None:
        check(import_cudart().cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def destroy(self) -> None:
        if self.handle is not None:
            check(import_cudart().cudaStreamDestroy(self.handle), "cudaStreamDestroy")
            self.handle = None


class Event:
    def __init__(self) -> None:
        self.handle = check(import_cudart().cudaEventCreate(), "cudaEventCreate")

    def record(self, stream: Stream, captured: bool = False) -> None:
        """`captured`: inside a stream capture, where a plain record becomes an internal graph node
        that cudaEventElapsedTime then refuses (cudaErrorInvalidValue) after the capture and on
        every replay; an external record is replayed as a real event record."""
        cudart = import_cudart()
        if captured:
            check(cudart.cudaEventRecordWithFlags(self.handle, stream.handle, cudart.cudaEventRecordExternal),
                  "cudaEventRecordWithFlags(external)")
        else:
            check(cudart.cudaEventRecord(self.handle, stream.handle), "cudaEventRecord")

    def seconds_since(self, start: Event) -> float:
        """GPU time between two recorded events (both must have completed)."""
        ms = check(import_cudart().cudaEventElapsedTime(start.handle, self.handle), "cudaEventElapsedTime")
        return float(ms) / 1e3

    def destroy(self) -> None:
        if self.handle is not None:
            check(import_cudart().cudaEventDestroy(self.handle), "cudaEventDestroy")
            self.handle = None


class Graph:
    """Work captured once from a stream and replayed with one launch: for low-latency runs
    where launching each kernel and copy costs more than the work itself.

        with Graph.capture(stream) as graph:
            ...enqueue copies / execute_async_v3 on `stream`...
        graph.launch(stream)
    """

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.graph: Any = None
        self.exec: Any = None

    @classmethod
    def capture(cls, stream: Stream) -> Graph:
        return cls(stream)

    def __enter__(self) -> Self:
        cudart = import_cudart()
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        check(cudart.cudaStreamBeginCapture(self.stream.handle, mode), "cudaStreamBeginCapture")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        cudart = import_cudart()
        if exc_type is not None:
            # The capture failed: end it (so the stream is usable again) without letting the
            # end's own error (capture invalidated) replace the cause, and drop the graph.
            err, graph = cudart.cudaStreamEndCapture(self.stream.handle)
            if graph is not None and err == cudart.cudaError_t.cudaSuccess:
                cudart.cudaGraphDestroy(graph)
            return
        graph = check(cudart.cudaStreamEndCapture(self.stream.handle), "cudaStreamEndCapture")
        try:
            self.exec = check(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        except CudaError:
            cudart.cudaGraphDestroy(graph)
            raise
        self.graph = graph

    def launch(self, stream: Stream) -> None:
        if self.exec is None:
            raise CudaError("graph was not captured")
        check(import_cudart().cudaGraphLaunch(self.exec, stream.handle), "cudaGraphLaunch")

    def destroy(self) -> None:
        cudart = import_cudart()
        if self.exec is not None:
            check(cudart.cudaGraphExecDestroy(self.exec), "cudaGraphExecDestroy")
            self.exec = None
        if self.graph is not None:
            check(cudart.cudaGraphDestroy(self.graph), "cudaGraphDestroy")
            self.graph = None
