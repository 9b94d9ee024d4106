"""TensorRT runner: a deserialized plan, one execution context, pinned host and device
buffers sized for the profile's max batch, one stream, CUDA events.

    host array -> pinned buffer -(async H2D)-> device -(execute_async_v3)-> device -(async D2H)-> pinned -> copy

`timings` after each call holds the GPU time of the engine alone (events around
execute_async_v3) and of the whole round trip including both copies (events around all
of it), so a benchmark can show compute time beside end-to-end time."""

from __future__ import annotations

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
from harness.errors import ArtifactError, BackendUnavailable, HarnessError, InputError
from harness.spec import ModelSpec

if TYPE_CHECKING:
    import tensorrt as trt_api  # tensorrt-stubs; see build.py


@dataclass
class _Binding:
    name: str
    is_input: bool
    dtype: np.dtype[Any]
    max_shape: tuple[int, ...]
    host: PinnedBuffer
    device: DeviceBuffer


@dataclass
class Timings:
    compute_s: float = 0.0  # execute_async_v3 alone, GPU time
    with_copies_s: float = 0.0  # host->device, execute, device->host, GPU time
    graph: bool = False


@dataclass
class _State:
    engine: trt_api.ICudaEngine | None = None
    context: trt_api.IExecutionContext | None = None
    runtime_cache: Any = None
    stream: Stream | None = None
    events: list[Event] = field(default_factory=list)
    bindings: list[_Binding] = field(default_factory=list)
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
        self._warm: set[tuple[tuple[int, ...], ...]] = set()  # input shapes run once already
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
                                f"another GPU or TensorRT version ({'; '.join(errors) or 'no reason given'}); "
                                f"{self.rebuild_hint}")
        return runtime, engine

    def _activate(self) -> None:
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
            s.context = engine.create_execution_context(runtime_config)
        else:
            s.context = engine.create_execution_context()
        if s.context is None:
            raise HarnessError(f"{self.plan}: could not create an execution context (GPU memory?)")
        s.stream = Stream()
        s.events = [Event() for _ in range(4)]
        self._allocate(trt)

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
            s.context.set_input_shape(name, trt.Dims(list(max_shape)))
        for name in names:
            is_input = name in inputs
            shape = dims_tuple(s.context.get_tensor_shape(name))  # outputs: at the max input shapes
            dtype = np.dtype(trt.nptype(s.engine.get_tensor_dtype(name)))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            binding = _Binding(name, is_input, dtype, shape, PinnedBuffer(nbytes), DeviceBuffer(nbytes))
            s.context.set_tensor_address(name, binding.device.ptr)
            s.bindings.append(binding)

    # --- inference -------------------------------------------------------------------------

    def infer_checked(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        s = self._s
        assert s.stream is not None and s.context is not None
        batch = len(next(iter(feed.values())))
        if batch > self.max_batch:
            raise InputError(f"batch {batch} is larger than the plan's max batch {self.max_batch}; "
                             "rebuild with a larger --max-batch")
        shapes = tuple(feed[b.name].shape for b in s.bindings if b.is_input)
        for b in s.bindings:
            if b.is_input:
                array = feed[b.name]
                b.host.array(b.dtype, array.shape)[...] = array
                s.context.set_input_shape(b.name, self._trt.Dims(list(array.shape)))
        out_shapes = {b.name: dims_tuple(s.context.get_tensor_shape(b.name)) for b in s.bindings if not b.is_input}

        graph = s.graphs.get(shapes)
        if graph is not None:
            graph.launch(s.stream)
        elif self.cuda_graph and shapes in self._warm:
            # Second call with these shapes: TensorRT has done its lazy setup; capture it.
            with Graph.capture(s.stream) as captured:
                self._enqueue(feed, out_shapes)
            s.graphs[shapes] = captured
            captured.launch(s.stream)
        else:
            self._enqueue(feed, out_shapes)
            self._warm.add(shapes)
        s.stream.synchronize()
        first, before, after, last = s.events
        self.timings = Timings(after.seconds_since(before), last.seconds_since(first), graph is not None)
        return {
            b.name: b.host.array(b.dtype, out_shapes[b.name]).copy() for b in s.bindings if not b.is_input
        }

    def _enqueue(self, feed: dict[str, np.ndarray], out_shapes: dict[str, tuple[int, ...]]) -> None:
        s = self._s
        assert s.stream is not None and s.context is not None
        first, before, after, last = s.events
        first.record(s.stream)
        for b in s.bindings:
            if b.is_input:
                s.stream.copy_to_device(b.device, b.host, feed[b.name].nbytes)
        before.record(s.stream)
        if not s.context.execute_async_v3(s.stream.ptr):
            raise HarnessError(f"{self.plan}: execute_async_v3 failed")
        after.record(s.stream)
        for b in s.bindings:
            if not b.is_input:
                s.stream.copy_to_host(b.host, b.device, int(np.prod(out_shapes[b.name])) * b.dtype.itemsize)
        last.record(s.stream)

    # --- release ---------------------------------------------------------------------------

    def _deactivate(self) -> None:
        s = self._s
        try:
            if s.runtime_cache is not None and self.runtime_cache_path is not None:
                atomic_write_bytes(self.runtime_cache_path, bytes(memoryview(s.runtime_cache.serialize())))
        finally:
            for graph in s.graphs.values():
                graph.destroy()
            for b in s.bindings:
                b.host.free()
                b.device.free()
            for event in s.events:
                event.destroy()
            if s.stream is not None:
                s.stream.destroy()
            # The context before the engine: TensorRT requires that order.
            s.context = None
            s.runtime_cache = None
            s.engine = None
            self._s = _State()
            self._warm = set()
