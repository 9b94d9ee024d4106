"""Precision ONNX -> serialized TensorRT plan (the classic `.plan` / `.engine` file).

`build_plan` is pure: bytes in, bytes out, no cache. The workspace keys and caches its
result (harness.workspace.Workspace.plan): a plan is reused only while the ONNX, the
library and its version, the target device and every build option are unchanged."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.backends.trt import import_trt, is_rtx, rtx_runs_on
from harness.backends.trt.cuda import device_count, device_properties
from harness.errors import ArtifactError, BackendUnavailable, ExportError, UsageError
from harness.spec import ModelSpec, TensorSpec

if TYPE_CHECKING:
    # tensorrt-stubs: the datacenter API, which tensorrt_rtx shares; mypy checks every call on
    # these annotated objects against it. RTX-only calls are marked where they are made.
    import tensorrt as trt_api

DEFAULT_MAX_BATCH = 32  # the classic MAX_BATCH_SIZE
DEFAULT_WORKSPACE = 1 << 30  # MAX_WORKSPACE: 1 GiB of scratch memory for tactics
DEFAULT_OPTIMIZATION_LEVEL = 3  # TensorRT's own default; 0 (fast build) .. 5 (slow build, best tactics)
# What TensorRT for RTX builds for when there is no GPU to build for: the GPUs it runs on.
RTX_AHEAD_OF_TIME = ("SM80", "SM86", "SM89", "SM120")
RTX_COMPUTE_CAPABILITIES = ("SM75", "SM80", "SM86", "SM89", "SM120", "SM121")  # tensorrt_rtx.ComputeCapability


@dataclass(frozen=True)
class BuildOptions:
    max_batch: int = DEFAULT_MAX_BATCH
    opt_batch: int | None = None  # the batch size tactics are tuned for; default: max_batch
    min_batch: int = 1
    workspace: int = DEFAULT_WORKSPACE
    optimization_level: int = DEFAULT_OPTIMIZATION_LEVEL
    compute_capabilities: tuple[str, ...] = ()  # tensorrt_rtx only: SM80, SM86...; () = this GPU, else all

    def __post_init__(self) -> None:
        opt = self.opt_batch if self.opt_batch is not None else self.max_batch
        if not 1 <= self.min_batch <= opt <= self.max_batch:
            raise UsageError(f"batch profile min {self.min_batch} <= opt {opt} <= max {self.max_batch} does not hold")
        if not 0 <= self.optimization_level <= 5:
            raise UsageError(f"builder optimization level {self.optimization_level}: 0 to 5")
        if self.workspace < 1 << 20:
            raise UsageError(f"workspace {self.workspace} bytes: at least 1 MiB")

    @property
    def profile(self) -> tuple[int, int, int]:
        return self.min_batch, self.opt_batch if self.opt_batch is not None else self.max_batch, self.max_batch

    def to_dict(self) -> dict[str, Any]:
        # The resolved profile, so "opt unset" and "opt = max" key the same plan.
        return {**asdict(self), "opt_batch": self.profile[1], "compute_capabilities": list(self.compute_capabilities)}


class _Logger:
    """One ILogger per library and process (TensorRT keeps the first one it is given and
    ignores later ones), collecting errors for the call that is running."""

    _instances: ClassVar[dict[str, Any]] = {}
    _lock = threading.Lock()

    @classmethod
    def get(cls, trt: Any) -> Any:
        with cls._lock:
            if trt.__name__ not in cls._instances:

                class Collecting(trt.ILogger):  # type: ignore[misc,name-defined]
                    def __init__(self) -> None:
                        trt.ILogger.__init__(self)
                        self.messages: list[str] = []

                    def log(self, severity: Any, msg: str) -> None:
                        if severity <= trt.ILogger.Severity.ERROR:
                            self.messages.append(msg)

                cls._instances[trt.__name__] = Collecting()
            return cls._instances[trt.__name__]


class ErrorLog:
    """The errors TensorRT logged since the block began, readable inside it: a call that
    returns None is explained by a message formatted right then (collecting them only when the
    block ended left every such message saying "no reason given")."""

    def __init__(self, messages: list[str]) -> None:
        self._messages = messages
        self._start = len(messages)
        self._kept: list[str] | None = None  # once the block has ended

    def __iter__(self) -> Iterator[str]:
        return iter(self._kept if self._kept is not None else self._messages[self._start:])

    def __bool__(self) -> bool:
        return any(True for _ in self)

    def reason(self) -> str:
        return "; ".join(self) or "no reason given (TensorRT logged no error)"

    def _close(self) -> None:
        self._kept = self._messages[self._start:]
        del self._messages[self._start:]


@contextmanager
def collected_errors(trt: Any) -> Iterator[ErrorLog]:
    log = ErrorLog(_Logger.get(trt).messages)
    try:
        yield log
    finally:
        log._close()


def logger_for(trt: Any) -> Any:
    return _Logger.get(trt)


def target_device(trt: Any, options: BuildOptions) -> dict[str, Any]:
    """What the plan is built for: recorded in its sidecar and part of its cache key."""
    gpus = device_count()
    gpu = device_properties(0) if gpus else None
    if is_rtx(trt):
        if options.compute_capabilities:
            return {"gpu": None, "ahead_of_time": list(options.compute_capabilities)}
        if gpu is not None and rtx_runs_on(gpu[1]):
            return {"gpu": gpu[0], "compute_capability": f"{gpu[1][0]}.{gpu[1][1]}"}
        return {"gpu": None, "ahead_of_time": list(RTX_AHEAD_OF_TIME)}
    if gpu is None:
        raise BackendUnavailable(trt.__name__, "no CUDA device: datacenter TensorRT builds plans on the GPU they run on")
    return {"gpu": gpu[0], "compute_capability": f"{gpu[1][0]}.{gpu[1][1]}"}


def dims_tuple(dims: trt_api.Dims) -> tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))


def profile_shapes(name: str, dims: tuple[int, ...], described: TensorSpec | None, batch: tuple[int, int, int],
                   onnx_path: Path) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """An input's (min, opt, max) shapes for the optimization profile: the batch from the build
    options, any other dynamic dim from the range `--input` gave it (`tokens:?x1..128`)."""
    shapes: list[list[int]] = [[b] for b in batch]
    for axis, d in enumerate(dims[1:], start=1):
        if d >= 0:
            for s in shapes:
                s.append(d)
            continue
        r = described.range_of(axis) if described is not None else None
        if r is None:
            raise ExportError(f"{onnx_path}: input {name!r} has shape {dims}: dimension {axis} is dynamic and "
                              f"TensorRT needs its range; give it, e.g. --input {name}:"
                              + "x".join("?" if a == 0 else (str(x) if x >= 0 else "1..128") for a, x in enumerate(dims)))
        for s, value in zip(shapes, r):
            s.append(value)
    low, opt, high = shapes
    return tuple(low), tuple(opt), tuple(high)


def _parse(trt: Any, builder: trt_api.Builder, onnx_path: Path) -> tuple[trt_api.INetworkDefinition, trt_api.OnnxParser]:
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:  # the default (and only) mode in TensorRT 11 and RTX
        flags |= 1 << int(strongly_typed)
    network: trt_api.INetworkDefinition = builder.create_network(flags)
    parser: trt_api.OnnxParser = trt.OnnxParser(network, logger_for(trt))
    if not parser.parse_from_file(str(onnx_path)):
        problems = []
        for i in range(parser.num_errors):
            error: trt_api.ParserError = parser.get_error(i)
            problems.append(f"node {error.node_name()!r} ({error.node_operator()}): {error.desc()}")
        raise ExportError(f"{onnx_path}: TensorRT ({trt.__name__} {trt.__version__}) cannot parse it: "
                          + "; ".join(problems))
    return network, parser


# Ops whose output shape depends on the values they are given.
DATA_DEPENDENT_OPS = ("NonZero", "NonMaxSuppression", "Unique", "Compress")


def data_dependent_outputs(onnx_path: Path) -> dict[str, str]:
    """The outputs whose shape depends on the data (a detection head's NMS), each with the ops
    that make it so: the runner gives them to TensorRT's IOutputAllocator instead of fixed
    buffers, and the plan's sidecar lists them.  Shapes come from ONNX shape inference with the
    batch fixed; an unknown output dimension counts only where the graph has an op that makes
    one, so a shape inference can't follow is not taken for one."""
    import onnx

    model = onnx.load(str(onnx_path))

    def nodes(graph: Any) -> Iterator[Any]:  # the graph's and its subgraphs' (Loop, If bodies)
        for node in graph.node:
            yield node
            for attr in node.attribute:
                for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                    yield from nodes(sub)

    makers = [f"{n.name or n.output[0]!r} ({n.op_type})" for n in nodes(model.graph) if n.op_type in DATA_DEPENDENT_OPS]
    if not makers:
        return {}
    for graph_input in model.graph.input:
        dims = graph_input.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
    del model.graph.value_info[:]
    for output in model.graph.output:  # what inference finds, not what the exporter declared (it
        output.type.tensor_type.ClearField("shape")  # names dimension 0 `batch` whatever it is)
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    found = {}
    for output in inferred.graph.output:
        dims = output.type.tensor_type.shape.dim
        if not output.type.tensor_type.HasField("shape") or any(not d.HasField("dim_value") for d in dims):
            found[output.name] = ", ".join(makers)
    return found


def build_plan(
    library: str, onnx_path: Path, spec: ModelSpec, options: BuildOptions, timing_cache: Path | None = None
) -> tuple[bytes, dict[str, Any]]:
    """Build a plan; returns its bytes and what went into it (for the sidecar)."""
    trt = import_trt(library)
    data_dependent = data_dependent_outputs(onnx_path)
    device = target_device(trt, options)
    with collected_errors(trt) as errors:
        try:
            builder: trt_api.Builder = trt.Builder(logger_for(trt))
        except (RuntimeError, TypeError) as e:
            raise BackendUnavailable(library, f"cannot create a TensorRT builder ({e}; {errors.reason()})") from e
        network, _parser = _parse(trt, builder, onnx_path)
        config: trt_api.IBuilderConfig = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace)
        config.builder_optimization_level = options.optimization_level

        profile: trt_api.IOptimizationProfile = builder.create_optimization_profile()
        low, opt, high = options.profile
        by_name = {t.name: t for t in spec.inputs}
        for i in range(network.num_inputs):
            tensor: trt_api.ITensor = network.get_input(i)
            shapes = profile_shapes(tensor.name, dims_tuple(tensor.shape), by_name.get(tensor.name), (low, opt, high),
                                    onnx_path)
            profile.set_shape(tensor.name, *(trt.Dims(list(s)) for s in shapes))
        config.add_optimization_profile(profile)
        cache = None
        if is_rtx(trt):
            if "ahead_of_time" in device:
                targets = device["ahead_of_time"]
                config.num_compute_capabilities = len(targets)  # type: ignore[attr-defined]  # RTX only
                for index, name in enumerate(targets):
                    capability = getattr(trt.ComputeCapability, name, None)
                    if capability is None:
                        raise UsageError(f"compute capability {name!r}: {library} knows "
                                         f"{[c for c in dir(trt.ComputeCapability) if c.startswith('SM')]}")
                    config.set_compute_capability(capability, index)  # type: ignore[attr-defined]  # RTX only
        elif timing_cache is not None:
            # Tactic timings reused from earlier builds: faster, and the same tactics each time.
            cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
            config.set_timing_cache(cache, ignore_mismatch=False)

        serialized: trt_api.IHostMemory | None = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ArtifactError(f"{onnx_path}: {library} could not build a plan: {errors.reason()}")
        plan = bytes(memoryview(serialized))
        if cache is not None and timing_cache is not None:
            from harness.artifacts import atomic_write_bytes

            written: trt_api.ITimingCache = config.get_timing_cache()
            atomic_write_bytes(timing_cache, bytes(memoryview(written.serialize())))
    info = {
        "library": library,
        "version": str(trt.__version__),
        "device": device,
        "options": options.to_dict(),
        "inputs": {t.name: list(t.shape) for t in spec.inputs},
        "profile": {t.name: [list(r) if r else None for r in t.ranges] for t in spec.inputs if any(t.ranges)},
        **({"data_dependent_outputs": data_dependent} if data_dependent else {}),
    }
    return plan, info
