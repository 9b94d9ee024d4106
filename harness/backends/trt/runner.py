"""TensorRT runner: a deserialized plan, one execution context, pinned host and device
buffers sized for the profile's max batch, one stream, CUDA events.

    host array -> pinned buffer -(async H2D)-> device -(execute_async_v3)-> device -(async D2H)-> pinned -> copy

`timings` after each call holds the GPU time of the engine alone (events around
execute_async_v3) and of the whole round trip including both copies (events around all
of it), so a benchmark can show compute time beside end-to-end time."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.artifacts import atomic_write_bytes
from harness.backends.base import Runner
from harness.backends.trt import RTX_RUNS_ON, import_trt, is_rtx, rtx_runs_on
from harness.backends.trt.build import collected_errors, dims_tuple, logger_for
from harness.backends.trt.cuda import (
    DeviceBuffer,
    Event,
    Graph,
    PinnedBuffer,
    Stream,
    device_count,
    device_properties,
)
from harness.errors import ArtifactError, BackendUnavailable, HarnessError, InputError, UsageError
from harness.spec import ModelSpec

if TYPE_CHECKING:
    import tensorrt as trt_api  # tensorrt-stubs; see build.py


@dataclass
class _Binding:
    name: str
    is_input: bool
    dtype: np.dtype[Any]
    max_shape: tuple[int, ...]  # -1 where the output's size depends on the data
    host: PinnedBuffer
    device: DeviceBuffer | None  # None: a data-dependent output, in the output allocator's memory

    @property
    def data_dependent(self) -> bool:
        return self.device is None


def _output_allocator(trt: Any) -> Any:
    """An IOutputAllocator (TensorRT's mechanism for data-dependent output shapes: NMS,
    NonZero): TensorRT asks it for device memory once it knows an upper bound on an output's
    size, and tells it the output's shape before execute_async_v3 returns. Memory grows only,
    one buffer per output, kept across calls (a steady stream of calls stops allocating)."""

    class OutputAllocator(trt.IOutputAllocator):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.IOutputAllocator.__init__(self)
            self.buffers: dict[str, DeviceBuffer] = {}
            self.shapes: dict[str, tuple[int, ...]] = {}
            self.failure = ""  # why a request for memory could not be met

        def reallocate_output_async(self, tensor_name: str, memory: Any, size: int, alignment: int,
                                    stream: Any) -> int | None:
            buffer = self.buffers.get(tensor_name)
            if buffer is None or buffer.nbytes < size:
                try:  # TensorRT's callback must not raise: None is how it fails
                    grown = DeviceBuffer(max(int(size), 1))  # 0 bytes (nothing detected) would be a null pointer
                    self.buffers[tensor_name] = grown
                    if buffer is not None:
                        buffer.free()
                except Exception as e:  # noqa: BLE001 - said through `failure` once execute_async_v3 fails
                    self.failure = f"output {tensor_name!r}: no device memory for {size} bytes ({e})"
                    return None
                buffer = grown
            return buffer.ptr

        def reallocate_output(self, tensor_name: str, memory: Any, size: int, alignment: int) -> int | None:
            return self.reallocate_output_async(tensor_name, memory, size, alignment, None)  # before TensorRT 10

        def notify_shape(self, tensor_name: str, shape: Any) -> None:
            self.shapes[tensor_name] = dims_tuple(shape)

        def free(self) -> None:
            buffers, self.buffers = self.buffers, {}
            for buffer in buffers.values():
                buffer.free()

    return OutputAllocator()


@dataclass
class Timings:
    compute_s: float = 0.0  # execute_async_v3 alone, GPU time
    with_copies_s: float = 0.0  # host->device, execute, device->host, GPU time
    graph: bool = False  # this call ran a captured CUDA graph (the one it captured, or a replay)


@dataclass
class _State:
    engine: trt_api.ICudaEngine | None = None
    context: trt_api.IExecutionContext | None = None
    runtime_cache: Any = None
    stream: Stream | None = None
    events: list[Event] = field(default_factory=list)
    allocations: list[PinnedBuffer | DeviceBuffer] = field(default_factory=list)  # each one as it is made
    bindings: list[_Binding] = field(default_factory=list)
    output_allocator: Any = None  # for data-dependent outputs; None without any
    graphs: dict[tuple[tuple[int, ...], ...], Graph] = field(default_factory=dict)


def _capabilities(pairs: tuple[tuple[int, int], ...]) -> str:
    return ", ".join(f"{a}.{b}" for a, b in pairs)


class TrtRunner(Runner):
    max_batch: int  # the plan's profile: always set
    def __init__(
        self,
        plan: Path,
        spec: ModelSpec,
        precision: str,
        library: str,
        max_batch: int,
        runtime_cache: Path | None = None,
        cuda_graph: bool = False,
        rebuild_hint: str = "rebuild it with --rebuild",
    ) -> None:
        super().__init__(spec, precision)
        self.backend = library
        self.plan = Path(plan)
        self.max_batch = max_batch
        self.runtime_cache_path = Path(runtime_cache) if runtime_cache else None
        self.cuda_graph = cuda_graph  # capture copies + execution per input shape, replay with one launch
        self.rebuild_hint = rebuild_hint
        self.timings = Timings()
        self._s = _State()
        # TensorRT wants one enqueue after every shape change before a capture (and, to be safe,
        # before a replay): the input shapes of the context's last plain enqueue, None once a
        # shape changed since.
        self._enqueued: tuple[tuple[int, ...], ...] | None = None
        self._context_shapes: dict[str, tuple[int, ...]] = {}  # what the context was last given
        self._uncapturable: set[tuple[tuple[int, ...], ...]] = set()  # shapes whose capture failed
        self._manual_graph = False  # capture ourselves (datacenter TensorRT); RTX captures in its runtime
        self._trt: Any = None

    def recipe_args(self) -> dict[str, Any]:
        return {"plan": str(self.plan), "precision": self.precision, "library": self.backend,
                "max_batch": self.max_batch, "runtime_cache": str(self.runtime_cache_path or "") or None,
                "cuda_graph": self.cuda_graph, "rebuild_hint": self.rebuild_hint}

    # --- activation ------------------------------------------------------------------------

    def _check_device(self, trt: Any) -> None:
        if device_count() == 0:
            raise BackendUnavailable(self.backend, "no CUDA device: TensorRT plans run on an NVIDIA GPU")
        name, capability = device_properties(0)
        if is_rtx(trt) and not rtx_runs_on(capability):
            raise BackendUnavailable(
                self.backend,
                f"tensorrt_rtx plans cannot run on compute capability {capability[0]}.{capability[1]} ({name}); "
                f"they run on {_capabilities(RTX_RUNS_ON)}",
            )

    def _deserialize(self, trt: Any) -> tuple[trt_api.Runtime, trt_api.ICudaEngine]:
        data = self.plan.read_bytes()
        runtime: trt_api.Runtime = trt.Runtime(logger_for(trt))
        if is_rtx(trt):
            # Checks the header only: a plan for another GPU or version is refused before loading.
            header = data[: runtime.engine_header_size]  # type: ignore[attr-defined]  # RTX only
            validity, diagnostics = runtime.get_engine_validity(header)  # type: ignore[attr-defined]  # RTX only
            if validity == trt.EngineValidity.INVALID:
                raise ArtifactError(f"{self.plan}: built for another GPU or TensorRT-RTX version "
                                    f"(diagnostics {diagnostics}); {self.rebuild_hint}")
        with collected_errors(trt) as errors:
            engine: trt_api.ICudaEngine | None = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise ArtifactError(f"{self.plan}: {self.backend} {trt.__version__} cannot load it, most likely built for "
                                f"another GPU or TensorRT version ({errors.reason()}); "
                                f"{self.rebuild_hint}")
        return runtime, engine

    def _activate(self) -> None:
        # All or nothing: a failure part way (no GPU memory for a buffer) frees what was made,
        # so a retry starts clean instead of leaking or binding tensors twice.
        try:
            self._activate_steps()
        except BaseException:
            with contextlib.suppress(Exception):
                self._release()
            raise

    def _activate_steps(self) -> None:
        trt = self._trt = import_trt(self.backend)
        self._check_device(trt)
        _runtime, engine = self._deserialize(trt)
        s = self._s
        s.engine = engine
        if is_rtx(trt):
            # Kernels TensorRT-RTX compiles at run time, kept across processes in a file.
            runtime_config: trt_api.IRuntimeConfig = engine.create_runtime_config()
            s.runtime_cache = runtime_config.create_runtime_cache()  # type: ignore[attr-defined]  # RTX only
            if self.runtime_cache_path is not None and self.runtime_cache_path.is_file():
                s.runtime_cache.deserialize(self.runtime_cache_path.read_bytes())
            runtime_config.set_runtime_cache(s.runtime_cache)  # type: ignore[attr-defined]  # RTX only
            if self.cuda_graph:
                # RTX captures and replays in its runtime (a capture of our own would need
                # user-managed allocation and an is_stream_capturable check on every call).
                strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
                runtime_config.cuda_graph_strategy = strategy  # type: ignore[attr-defined]  # RTX only
            s.context = engine.create_execution_context(runtime_config)
        else:
            s.context = engine.create_execution_context()
            self._manual_graph = self.cuda_graph
        if s.context is None:
            raise HarnessError(f"{self.plan}: could not create an execution context (GPU memory?)")
        s.stream = Stream()
        for _ in range(4):
            s.events.append(Event())
        self._allocate(trt)

    def _set_shape(self, name: str, shape: tuple[int, ...]) -> None:
        """Give the context an input shape, only where it changes (each change calls for an
        enqueue before a graph is captured or replayed)."""
        s = self._s
        assert s.context is not None
        if self._context_shapes.get(name) == shape:
            return
        self._enqueued = None
        self._context_shapes.pop(name, None)  # unknown until TensorRT accepts it
        if not s.context.set_input_shape(name, self._trt.Dims(list(shape))):
            raise InputError(f"input {name!r}: the plan {self.plan.name} refuses shape {shape} (outside its "
                             f"optimization profile, batch 1..{self.max_batch}?); {self.rebuild_hint}")
        self._context_shapes[name] = shape

    def _output_shape(self, name: str) -> tuple[int, ...]:
        """An output's shape at the context's input shapes; -1 where it depends on the data."""
        s = self._s
        assert s.context is not None
        return dims_tuple(s.context.get_tensor_shape(name))

    def _allocate(self, trt: Any) -> None:
        s = self._s
        assert s.engine is not None and s.context is not None
        names = [s.engine.get_tensor_name(i) for i in range(s.engine.num_io_tensors)]
        inputs = [n for n in names if s.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        missing = sorted(set(self.spec.input_names) - set(inputs))
        if missing:
            raise ArtifactError(f"{self.plan}: has inputs {inputs}, the model {self.spec.input_names}; {self.rebuild_hint}")
        for name in inputs:
            max_shape = dims_tuple(s.engine.get_tensor_profile_shape(name, 0)[2])
            if max_shape[0] < self.max_batch:
                raise ArtifactError(f"{self.plan}: built for batch <= {max_shape[0]}, not {self.max_batch}; "
                                    f"{self.rebuild_hint}")
            self._set_shape(name, max_shape)
        for name in names:
            is_input = name in inputs
            shape = self._output_shape(name)  # outputs: at the max input shapes
            dtype = np.dtype(trt.nptype(s.engine.get_tensor_dtype(name)))
            if not is_input and any(d < 0 for d in shape):
                # Sized by the data (a detection head's NMS): TensorRT asks the allocator for
                # memory as it runs; the host side grows with what comes back.
                if self.cuda_graph:
                    raise UsageError(f"{self.plan}: output {name!r} has shape {shape}: its size depends on the data, "
                                     "and a CUDA graph replays fixed sizes; run it without --cuda-graph")
                if s.output_allocator is None:
                    s.output_allocator = _output_allocator(trt)
                if not s.context.set_output_allocator(name, s.output_allocator):
                    raise HarnessError(f"{self.plan}: TensorRT refused an output allocator for {name!r}")
                host = PinnedBuffer(dtype.itemsize * int(np.prod([max(d, 1) for d in shape])))
                s.allocations.append(host)
                s.bindings.append(_Binding(name, is_input, dtype, shape, host, None))
                continue
            nbytes = int(np.prod(shape)) * dtype.itemsize
            host = PinnedBuffer(nbytes)
            s.allocations.append(host)
            device = DeviceBuffer(nbytes)
            s.allocations.append(device)
            if not s.context.set_tensor_address(name, device.ptr):
                raise HarnessError(f"{self.plan}: TensorRT refused the device address of tensor {name!r} "
                                   "(misaligned or not device memory)")
            s.bindings.append(_Binding(name, is_input, dtype, shape, host, device))

    # --- inference -------------------------------------------------------------------------

    def _engine_array(self, b: _Binding, array: np.ndarray) -> np.ndarray:
        """The feed in the plan's dtype: TensorRT copies raw bytes, so float64 into a float32
        input would be read as garbage (and copy twice the bytes the buffer holds)."""
        if array.dtype == b.dtype:
            return array
        if np.can_cast(array.dtype, b.dtype, casting="same_kind"):
            if b.dtype.kind in "iu" and array.size and not np.can_cast(array.dtype, b.dtype, casting="safe"):
                info = np.iinfo(b.dtype)  # int64 ids into an int32 input: only if every value fits
                if array.min() < info.min or array.max() > info.max:
                    raise InputError(f"input {b.name!r}: {array.dtype} values outside {b.dtype}'s range "
                                     f"[{info.min}, {info.max}] cannot be fed to the plan's {b.dtype} input")
            return array.astype(b.dtype)
        raise InputError(f"input {b.name!r}: {array.dtype} values cannot be fed to the plan's {b.dtype} input; "
                         f"convert them to {b.dtype} first")

    @property
    def data_dependent(self) -> tuple[str, ...]:
        return tuple(b.name for b in self._s.bindings if b.data_dependent)

    def infer_batched(self, feed: Mapping[str, Any], ragged: bool = True) -> dict[str, np.ndarray]:
        """As `Runner.infer_batched`; without `ragged` (the serving worker), a feed larger than
        the plan's batch is refused when an output's shape depends on the data: its rows are not
        per sample (NMS's selected indices carry their chunk's batch index), so chunks' outputs
        cannot be joined.  With it, such a feed runs one sample at a time."""
        total = len(next(iter(feed.values()))) if feed else 0
        if not ragged and self.data_dependent and total > self.max_batch:
            raise InputError(f"{self.plan}: output(s) {list(self.data_dependent)} have shapes that depend on the data, "
                             f"so a batch of {total} cannot be run in chunks of the plan's {self.max_batch} and "
                             f"joined; build the plan with --max-batch {total} or more")
        return super().infer_batched(feed, ragged)

    def infer_checked(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        s = self._s
        assert s.stream is not None and s.context is not None
        batch = len(next(iter(feed.values())))
        if batch > self.max_batch:
            raise InputError(f"batch {batch} is larger than the plan's max batch {self.max_batch}; "
                             "rebuild with a larger --max-batch")
        arrays = {b.name: self._engine_array(b, feed[b.name]) for b in s.bindings if b.is_input}
        shapes = tuple(arrays[b.name].shape for b in s.bindings if b.is_input)
        for b in s.bindings:
            if b.is_input:
                b.host.array(b.dtype, arrays[b.name].shape)[...] = arrays[b.name]
                self._set_shape(b.name, arrays[b.name].shape)
        out_shapes = {b.name: self._output_shape(b.name) for b in s.bindings if not b.is_input and not b.data_dependent}

        ready = self._enqueued == shapes  # a plain enqueue of these shapes since the last change
        graph = s.graphs.get(shapes) if ready else None
        if graph is not None:
            graph.launch(s.stream)
        elif self._manual_graph and ready and shapes not in self._uncapturable:
            graph = self._capture(arrays, out_shapes, shapes)
            graph.launch(s.stream)
        else:
            self._enqueue(arrays, out_shapes)
            self._enqueued = shapes
        s.stream.synchronize()
        first, before, after, last = s.events
        self.timings = Timings(after.seconds_since(before), last.seconds_since(first), graph is not None)
        return {
            b.name: b.host.array(b.dtype, out_shapes[b.name]).copy() for b in s.bindings if not b.is_input
        }

    def _copy_data_dependent(self, out_shapes: dict[str, tuple[int, ...]]) -> None:
        """After execute_async_v3: each data-dependent output's shape (TensorRT told the
        allocator before returning) and its copy to the host, the host buffer grown to fit."""
        s = self._s
        allocator = s.output_allocator
        assert s.stream is not None and allocator is not None
        for i, b in enumerate(s.bindings):
            if not b.data_dependent:
                continue
            shape = allocator.shapes.get(b.name)
            if shape is None or b.name not in allocator.buffers:
                raise HarnessError(f"{self.plan}: TensorRT ran without telling the shape of data-dependent output "
                                   f"{b.name!r}" + (f" ({allocator.failure})" if allocator.failure else ""))
            nbytes = int(np.prod(shape)) * b.dtype.itemsize
            if nbytes > b.host.nbytes:
                # as large as the device side (TensorRT's upper bound), so one more detection next
                # call is no cudaMallocHost, which synchronizes, inside a timed call
                host = PinnedBuffer(max(nbytes, allocator.buffers[b.name].nbytes))
                s.allocations.append(host)
                old, s.bindings[i] = b.host, _Binding(b.name, False, b.dtype, b.max_shape, host, None)
                b = s.bindings[i]
                s.allocations.remove(old)
                old.free()
            out_shapes[b.name] = shape
            s.stream.copy_to_host(b.host, allocator.buffers[b.name], nbytes)

    def _capture(self, arrays: dict[str, np.ndarray], out_shapes: dict[str, tuple[int, ...]],
                 shapes: tuple[tuple[int, ...], ...]) -> Graph:
        s = self._s
        assert s.stream is not None
        try:
            with Graph.capture(s.stream) as captured:
                self._enqueue(arrays, out_shapes, captured=True)
        except HarnessError as e:  # never tried again for these shapes: they run without a graph
            self._uncapturable.add(shapes)
            self._enqueued = None
            raise HarnessError(f"{self.plan}: capturing a CUDA graph for input shapes {list(shapes)} failed ({e}); "
                               "run it without --cuda-graph") from e
        s.graphs[shapes] = captured
        return captured

    def _enqueue(self, arrays: dict[str, np.ndarray], out_shapes: dict[str, tuple[int, ...]],
                 captured: bool = False) -> None:
        s = self._s
        assert s.stream is not None and s.context is not None
        first, before, after, last = s.events
        first.record(s.stream, captured)
        for b in s.bindings:
            if b.is_input and b.device is not None:  # (an input always has its buffer)
                s.stream.copy_to_device(b.device, b.host, arrays[b.name].nbytes)  # in the plan's dtype
        before.record(s.stream, captured)
        if s.output_allocator is not None:  # what TensorRT tells this call, not what it told the last
            s.output_allocator.shapes.clear()
            s.output_allocator.failure = ""
        if not s.context.execute_async_v3(s.stream.ptr):
            failure = s.output_allocator.failure if s.output_allocator is not None else ""
            raise HarnessError(f"{self.plan}: execute_async_v3 failed" + (f": {failure}" if failure else ""))
        after.record(s.stream, captured)
        for b in s.bindings:
            if not b.is_input and b.device is not None:
                s.stream.copy_to_host(b.host, b.device, int(np.prod(out_shapes[b.name])) * b.dtype.itemsize)
        if s.output_allocator is not None:
            self._copy_data_dependent(out_shapes)
        last.record(s.stream, captured)

    # --- release ---------------------------------------------------------------------------

    def _deactivate(self) -> None:
        s = self._s
        try:
            if s.runtime_cache is not None and self.runtime_cache_path is not None:
                atomic_write_bytes(self.runtime_cache_path, bytes(memoryview(s.runtime_cache.serialize())))
        finally:
            self._release()

    def _release(self) -> None:
        """Free whatever exists (graphs, then buffers newest first, events, the stream; then the
        context before the engine); safe on a half-made state. Every free is tried; the first
        failure is raised after the rest (when activation failed, its own error propagates)."""
        s = self._s
        self._s = _State()
        self._enqueued = None
        self._context_shapes = {}
        self._uncapturable = set()
        self._manual_graph = False
        failures: list[BaseException] = []
        frees = [g.destroy for g in s.graphs.values()] + [b.free for b in reversed(s.allocations)]
        frees += [s.output_allocator.free] if s.output_allocator is not None else []
        frees += [e.destroy for e in s.events] + ([s.stream.destroy] if s.stream is not None else [])
        for free in frees:
            try:
                free()
            except Exception as e:  # noqa: BLE001 - keep freeing; raised below
                failures.append(e)
        # The context before the engine: TensorRT requires that order.
        s.context = None
        s.runtime_cache = None
        s.engine = None
        if failures:
            raise failures[0]
