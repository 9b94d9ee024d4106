"""The pipeline, cached: model source -> frozen graph -> ONNX -> runners, plus goldens.

The CLI and the pytest plugin are both thin layers over a Workspace."""

from __future__ import annotations

import contextlib
import io
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness import __version__
from harness.artifacts import (
    DEFAULT_ROOT,
    ArtifactStore,
    atomic_write_json,
    digest_bytes,
    digest_json,
    locked,
)
from harness.backends.base import Runner
from harness.backends.onnxrt import OrtRunner
from harness.backends.tf import TFRunner
from harness.backends.trt.build import BuildOptions
from harness.compare import Comparison, OutputComparison
from harness.errors import ArtifactError, BackendUnavailable, GoldenMissing, UsageError
from harness.export import DEFAULT_OPSET, export_onnx
from harness.golden import (
    BUILTIN_GOLDEN_DIR,
    DEFAULT_GOLDEN_DIR,
    Golden,
    golden_key,
    golden_warnings,
    load_golden,
    write_golden,
)
from harness.machine import installed_version as _version
from harness.policy import TolerancePolicy
from harness.precision import PRECISIONS
from harness.precision.calibration import DEFAULT_PREPROCESS, CalibrationData, load_calibration
from harness.progress import Stream, step
from harness.sources import DEFAULT_SIGNATURE, ModelRequest, resolve
from harness.spec import ModelSpec

DEFAULT_CALIBRATION_SAMPLES = 256
DEFAULT_CALIBRATION_METHOD = "minmax"
# Engines: what is built from the ONNX and checked against TensorFlow.
ENGINE_BACKENDS = ("onnxruntime", "tensorrt", "tensorrt_rtx")
TRT_LIBRARIES = ("tensorrt", "tensorrt_rtx")
BACKENDS = ("tensorflow", *ENGINE_BACKENDS)  # what `harness compare --backend` accepts
DEFAULT_GOLDEN_SAMPLES = 32  # user models: enough that one flipped sample moves top-1 by 0.03, not 0.25
DEFAULT_SEED = 0


@dataclass(frozen=True)
class FrozenModel:
    name: str
    spec: ModelSpec
    graph_path: Path
    digest: str  # of the frozen GraphDef: what goldens are checked against
    reused: bool


@dataclass(frozen=True)
class OnnxModel:
    name: str
    spec: ModelSpec
    path: Path
    opset: int
    reused: bool
    seconds: float
    digest: str  # of the file, as its cache entry recorded (and checked) it: keys what is made from it


@dataclass(frozen=True)
class CalibrationOptions:
    """Where INT8 calibration data come from; None means the model's own calibration data
    (a built-in's calibration split) or, for a user's model, seeded synthetic inputs."""

    source: Path | None = None
    samples: int = DEFAULT_CALIBRATION_SAMPLES
    method: str = DEFAULT_CALIBRATION_METHOD
    preprocess: str = DEFAULT_PREPROCESS


@dataclass(frozen=True)
class Calibration:
    table: Path  # activation ranges (ONNX Runtime's calibration cache format, JSON)
    description: str
    method: str
    reused: bool
    seconds: float
    digest: str  # of the table, as its cache entry recorded it
    synthetic: bool = False  # calibrated on seeded synthetic inputs: int8 agreement proves little


@dataclass(frozen=True)
class Engine:
    """One deployable engine of the model: `plan` is what the backend loads (the precision's
    ONNX file for ONNX Runtime, a serialized plan for TensorRT)."""

    model: str
    backend: str
    precision: str
    plan: Path
    spec: ModelSpec
    runner: Runner
    reused: bool
    calibration: Calibration | None = None

    @property
    def id(self) -> str:
        return f"{self.backend}-{self.precision}"


@dataclass(frozen=True)
class Plan:
    """A serialized TensorRT plan and its sidecar (`model.plan.json`: library and version,
    target GPU or ahead-of-time capabilities, ONNX and plan hashes, build options)."""

    path: Path
    sidecar: dict[str, Any]
    reused: bool
    seconds: float

    @property
    def size(self) -> int:
        return self.path.stat().st_size


class Workspace:
    def __init__(
        self,
        artifacts: Path = DEFAULT_ROOT,
        golden_dir: Path | None = None,
        opset: int = DEFAULT_OPSET,
        quiet: bool = False,
        providers: Sequence[str] = ("cpu",),
        progress: Stream | None = None,
        engine_dir: Path | None = None,
        build_options: BuildOptions | None = None,
        rebuild: bool = False,
        cuda_graph: bool = False,
    ) -> None:
        self.store = ArtifactStore(Path(artifacts))
        self.engine_dir = Path(engine_dir) if engine_dir is not None else Path(artifacts) / "engines"
        self.build_options = build_options or BuildOptions()
        self.rebuild = rebuild  # rebuild plans once in this workspace's life, then reuse them
        self.cuda_graph = cuda_graph
        # None: built-in models' goldens from the package, users' from ./golden
        self.golden_dir = Path(golden_dir) if golden_dir is not None else None
        self._warned: set[str] = set()
        self.opset = opset
        self.quiet = quiet
        self.progress = progress  # where progress lines go (default stderr)
        self.providers = tuple(providers)  # ONNX Runtime execution providers, in priority order
        self._frozen: dict[ModelRequest, FrozenModel] = {}
        self._onnx: dict[ModelRequest, OnnxModel] = {}
        self._plans: dict[tuple[ModelRequest, str, str, CalibrationOptions], Plan] = {}
        self._calibrations: dict[tuple[ModelRequest, CalibrationOptions], Calibration] = {}
        self._variants: dict[tuple[ModelRequest, str, CalibrationOptions, str], tuple[OnnxModel, Calibration | None]] = {}

    def _step(self, what: str) -> contextlib.AbstractContextManager[None]:
        return step(what, io.StringIO() if self.quiet else self.progress)

    def warn(self, message: str) -> None:
        """A warning line, once per workspace (quiet or not: a warning is not progress)."""
        if message in self._warned:
            return
        self._warned.add(message)
        stream = self.progress or sys.stderr
        stream.write(f"harness: warning: {message}\n")
        stream.flush()

    def frozen(self, request: ModelRequest) -> FrozenModel:
        if request in self._frozen:
            return self._frozen[request]
        source = resolve(request)
        key = digest_json(["frozen", source.key(), _version("tensorflow"), _version("keras")])

        def build(tmp: Path) -> dict[str, Any]:
            with self._step(f"freezing {source.name} ({source.kind})"):
                frozen = source.freeze()
            (tmp / "graph.pb").write_bytes(frozen.graph_def)
            return {"spec": frozen.spec.to_dict(), "digest": digest_bytes(frozen.graph_def), "source": source.kind}

        entry = self.store.get_or_build("frozen", source.name, key, build)
        result = FrozenModel(
            source.name, ModelSpec.from_dict(entry.meta["spec"]), entry.file("graph.pb"), entry.meta["digest"], entry.reused
        )
        self._frozen[request] = result
        return result

    def onnx(self, request: ModelRequest) -> OnnxModel:
        if request in self._onnx:
            return self._onnx[request]
        frozen = self.frozen(request)
        key = digest_json(["onnx", frozen.digest, self.opset, _version("tf2onnx"), _version("onnx"), frozen.spec.to_dict()])
        start = time.perf_counter()

        def build(tmp: Path) -> dict[str, Any]:
            from harness.sources import Frozen

            with self._step(f"exporting {frozen.name} to ONNX (tf2onnx, opset {self.opset})"):
                info = export_onnx(Frozen(frozen.graph_path.read_bytes(), frozen.spec), tmp / "model.onnx", self.opset)
            return {**info, "model_digest": frozen.digest}

        entry = self.store.get_or_build("onnx", frozen.name, key, build)
        if not entry.file("model.onnx").is_file():
            raise ArtifactError(f"{entry.path}: cache entry has no model.onnx; delete the directory and retry")
        result = OnnxModel(frozen.name, frozen.spec, entry.file("model.onnx"), self.opset, entry.reused,
                           time.perf_counter() - start, entry.meta["files"]["model.onnx"])
        self._onnx[request] = result
        return result

    # --- precision variants ---------------------------------------------------------------

    def calibration(self, request: ModelRequest, options: CalibrationOptions) -> Calibration:
        """INT8 activation ranges of the FP32 ONNX on the calibration data, cached: reused
        while the FP32 model, the data (by content) and the method are unchanged."""
        from harness.precision.int8 import calibrate, check_table

        if (request, options) in self._calibrations:
            return self._calibrations[(request, options)]
        model = self.onnx(request)
        default = None
        if options.source is None:
            own = getattr(resolve(request), "calibration", None)  # built-in models carry a calibration split
            if own is not None:
                rep = own()
                default = CalibrationData(rep.feed, rep.description)
        data = load_calibration(model.spec, options.source, default, options.samples, options.preprocess)
        if data.synthetic:
            self.warn(f"{model.name}: int8 is calibrated on {data.description}: int8 agreement is not evidence of "
                      "accuracy; give representative inputs with --calibration (pytest: --harness-calibration)")
        data_digest = data.digest()
        key = digest_json(["calibration", model.digest, data_digest, options.method, _version("onnxruntime")])
        start = time.perf_counter()

        def build(tmp: Path) -> dict[str, Any]:
            with self._step(f"calibrating {model.name} for int8 on {data.description} ({options.method})"):
                calibrate(model.path, data, options.method, tmp / "calibration.json")
            return {"description": data.description, "method": options.method, "data_digest": data_digest,
                    "synthetic": data.synthetic}

        entry = self.store.get_or_build("calibration", model.name, key, build)
        check_table(entry.file("calibration.json"))
        result = Calibration(entry.file("calibration.json"), entry.meta["description"], options.method, entry.reused,
                             time.perf_counter() - start, entry.meta["files"]["calibration.json"],
                             bool(entry.meta.get("synthetic", False)))
        self._calibrations[(request, options)] = result
        return result

    def variant(
        self,
        request: ModelRequest,
        precision: str,
        calibration: CalibrationOptions = CalibrationOptions(),
        target: str = "tensorrt",
    ) -> tuple[OnnxModel, Calibration | None]:
        """The ONNX file of `precision` (fp32 is the export itself), and its calibration (int8).
        `target` picks the int8 placement (harness.precision.int8.TARGETS); both come from the
        same calibration table."""
        if precision not in PRECISIONS:
            raise UsageError(f"unknown precision {precision!r}; choose from {list(PRECISIONS)}")
        target = target if precision == "int8" else "any"
        cache_key = (request, precision, calibration, target)
        if cache_key in self._variants:
            return self._variants[cache_key]
        fp32 = self.onnx(request)
        cal: Calibration | None = None
        if precision == "fp32":
            result = (fp32, None)
            self._variants[cache_key] = result
            return result
        start = time.perf_counter()
        if precision == "fp16":
            from harness.precision.fp16 import convert_fp16

            key = digest_json(["fp16", fp32.digest, _version("onnxconverter-common"), _version("onnx")])

            def build(tmp: Path) -> dict[str, Any]:
                with self._step(f"converting {fp32.name} to fp16"):
                    return convert_fp16(fp32.path, tmp / "model.onnx")
        else:
            from harness.precision.int8 import quantize

            cal = self.calibration(request, calibration)
            key = digest_json(["int8", fp32.digest, cal.digest, cal.method, target, _version("onnxruntime")])

            def build(tmp: Path) -> dict[str, Any]:
                with self._step(f"quantizing {fp32.name} to int8 (Q/DQ for {target})"):
                    info = quantize(fp32.path, cal.table, cal.method, tmp / "model.onnx", target)
                # The calibration table travels beside the model it produced.
                shutil.copyfile(cal.table, tmp / "calibration.json")
                return {**info, "calibration": cal.description, "method": cal.method}

        entry = self.store.get_or_build(precision, f"{fp32.name}-{target}" if precision == "int8" else fp32.name, key, build)
        model = OnnxModel(fp32.name, fp32.spec, entry.file("model.onnx"), fp32.opset, entry.reused,
                          time.perf_counter() - start, entry.meta["files"]["model.onnx"])
        self._variants[cache_key] = (model, cal)
        return model, cal

    def plan(
        self, request: ModelRequest, library: str, precision: str, calibration: CalibrationOptions = CalibrationOptions()
    ) -> Plan:
        """The TensorRT plan of `precision`, cached under the engine dir: reused while its key
        (ONNX bytes, library and version, target device, build options) matches and its
        files match the hashes recorded when it was built; rebuilt otherwise."""
        from harness.backends.trt import import_trt, is_rtx
        from harness.backends.trt.build import build_plan, target_device

        memo = (request, library, precision, calibration)
        if memo in self._plans:
            return self._plans[memo]
        trt = import_trt(library)
        model, _ = self.variant(request, precision, calibration, target="tensorrt")
        device = target_device(trt, self.build_options)
        onnx_digest = model.digest
        key = digest_json(["plan", onnx_digest, library, str(trt.__version__), device, self.build_options.to_dict()])
        device_slug = digest_json(device)[:12]
        timing_cache = None if is_rtx(trt) else self.engine_dir / f"timing-{library}-{trt.__version__}-{device_slug}.cache"
        start = time.perf_counter()

        def build(tmp: Path) -> dict[str, Any]:
            target = device.get("gpu") or "ahead of time for " + ",".join(device["ahead_of_time"])
            with self._step(f"building {library} plan of {model.name} {precision} ({target})"):
                if timing_cache is not None:
                    with locked(timing_cache):
                        plan, info = build_plan(library, model.path, model.spec, self.build_options, timing_cache)
                else:
                    plan, info = build_plan(library, model.path, model.spec, self.build_options)
            (tmp / "model.plan").write_bytes(plan)
            sidecar = {
                **info,
                "model": model.name,
                "precision": precision,
                "onnx": str(model.path),
                "onnx_sha256": onnx_digest,
                "plan_sha256": digest_bytes(plan),
                "built_without_gpu": device.get("gpu") is None,
            }
            atomic_write_json(tmp / "model.plan.json", sidecar)
            return {"sidecar": sidecar}

        plans = ArtifactStore(self.engine_dir)
        entry = plans.get_or_build("plans", f"{model.name}-{library}-{precision}", key, build, rebuild=self.rebuild)
        result = Plan(entry.file("model.plan"), dict(entry.meta["sidecar"]), entry.reused, time.perf_counter() - start)
        self._plans[memo] = result
        return result

    def engine(
        self, request: ModelRequest, backend: str, precision: str, calibration: CalibrationOptions = CalibrationOptions()
    ) -> Engine:
        """A built (not yet active) engine of `backend` in `precision`."""
        if backend not in ENGINE_BACKENDS:
            raise UsageError(f"unknown engine backend {backend!r}; choose from {list(ENGINE_BACKENDS)}")
        if backend in TRT_LIBRARIES:
            from harness.backends.trt.runner import TrtRunner

            plan = self.plan(request, backend, precision, calibration)
            spec = self.frozen(request).spec
            cache = self.engine_dir / f"runtime-{backend}.cache" if backend == "tensorrt_rtx" else None
            hint = f"rebuild it with: harness build {request.model} --backend {backend} --precision {precision} --rebuild"
            trt_runner = TrtRunner(plan.path, spec, precision, backend, self.build_options.max_batch, cache,
                                   self.cuda_graph, hint)
            cal = self.calibration(request, calibration) if precision == "int8" else None  # cached: what the plan used
            return Engine(spec.name, backend, precision, plan.path, spec, trt_runner, plan.reused, cal)
        model, cal = self.variant(request, precision, calibration, target=backend)
        runner = OrtRunner(model.path, model.spec, precision, self.providers)
        return Engine(model.name, backend, precision, model.path, model.spec, runner, model.reused, cal)

    def tf_runner(self, request: ModelRequest) -> TFRunner:
        frozen = self.frozen(request)
        return TFRunner(frozen.graph_path, frozen.spec)

    def ort_runner(self, request: ModelRequest, threads: int = 0) -> OrtRunner:
        model = self.onnx(request)
        return OrtRunner(model.path, model.spec, "fp32", self.providers, threads)

    def runner(self, request: ModelRequest, backend: str) -> Runner:
        if backend == "tensorflow":
            return self.tf_runner(request)
        if backend == "onnxruntime":
            return self.ort_runner(request)
        raise UsageError(f"unknown backend {backend!r}; choose from {list(BACKENDS)}")

    # --- goldens ---------------------------------------------------------------------------

    def golden_location(self, request: ModelRequest) -> tuple[Path, str]:
        """(root, key) of the model's golden: built-ins' in the package (found from any working
        directory), users' under ./golden keyed by their path; `--golden-dir` overrides the root."""
        builtin = resolve(request).kind == "builtin"
        root = self.golden_dir or (BUILTIN_GOLDEN_DIR if builtin else DEFAULT_GOLDEN_DIR)
        variant = request.signature if request.signature not in (None, DEFAULT_SIGNATURE) else ""
        if request.inputs or request.outputs:  # one graph file, several models: one golden each
            variant += ("-" if variant else "") + digest_json([[str(i) for i in request.inputs], list(request.outputs)])[:8]
        return root, golden_key(request.model, self.frozen(request).name, builtin, variant=variant)

    def golden_command(self, request: ModelRequest) -> str:
        words = ["harness", "golden", request.model]
        words += [f"--input={i}" for i in request.inputs] + [f"--output={o}" for o in request.outputs]
        if request.signature:
            words.append(f"--signature={request.signature}")
        if self.golden_dir is not None:
            words.append(f"--golden-dir={self.golden_dir}")
        return shlex.join(words)

    def golden(self, request: ModelRequest) -> Golden:
        frozen = self.frozen(request)
        root, key = self.golden_location(request)
        golden = load_golden(root, key, frozen.name, frozen.digest, self.golden_command(request))
        # Which outputs are class scores is the model's to say (its spec), not the golden's.
        golden = replace(golden, classes=tuple(frozen.spec.metadata.get("classes", ())))
        for warning in golden.warnings():
            self.warn(f"golden {golden.path}: {warning}")
        return golden

    def reference(self, request: ModelRequest) -> Golden:
        """The golden, or where the model has none, TensorFlow's outputs computed now on the
        inputs `harness golden` would use (nothing is written): compare works without a golden."""
        try:
            return self.golden(request)
        except GoldenMissing:
            pass
        frozen = self.frozen(request)
        feed, labels, description = self._golden_inputs(request, DEFAULT_GOLDEN_SAMPLES, DEFAULT_SEED)
        self.warn(f"{frozen.name}: no golden; comparing with TensorFlow run now on {description} "
                  f"(store them with: {self.golden_command(request)})")
        with self._step(f"computing TensorFlow reference outputs of {frozen.name}"), self.tf_runner(request) as tf:
            outputs = tf.infer(feed)
        classes = tuple(frozen.spec.metadata.get("classes", ()))
        return Golden(frozen.name, None, feed, outputs, labels, {"inputs": description, "live": True}, classes)

    def _golden_inputs(
        self, request: ModelRequest, samples: int, seed: int
    ) -> tuple[dict[str, Any], Any, str]:
        representative = getattr(resolve(request), "representative", None)
        if representative is not None:
            rep = representative()
            return rep.feed, rep.labels, rep.description
        spec = self.frozen(request).spec
        return (spec.random_feed(samples, seed), None,
                f"{samples} seeded random samples (numpy default_rng({seed}); floats standard normal)")

    def write_golden(
        self,
        request: ModelRequest,
        samples: int = DEFAULT_GOLDEN_SAMPLES,
        seed: int = DEFAULT_SEED,
        policy: TolerancePolicy | None = None,
    ) -> tuple[Path, list[str]]:
        """Run the TensorFlow reference on representative inputs and store the result; returns
        where, and warnings about outputs that could not tell a broken engine from a good one
        (under `policy`'s tolerances of every precision)."""
        frozen = self.frozen(request)
        feed, labels, description = self._golden_inputs(request, samples, seed)
        with self._step(f"computing TensorFlow reference outputs of {frozen.name}"), self.tf_runner(request) as tf_runner:
            outputs = tf_runner.infer(feed)
        root, key = self.golden_location(request)
        meta = {
            "model": frozen.name,
            "model_digest": frozen.digest,
            "spec": frozen.spec.to_dict(),
            "inputs": description,
            "seed": seed,
            "tensorflow": _version("tensorflow"),
            "keras": _version("keras"),
            "harness": __version__,
            "command": self.golden_command(request),
        }
        path = write_golden(root, key, feed, outputs, labels, meta)
        policy = policy or TolerancePolicy()
        classes = set(frozen.spec.metadata.get("classes", ())) | policy.classes(frozen.name)
        tolerances = {p: policy.for_outputs(p, frozen.name, list(outputs)) for p in PRECISIONS}
        return path, golden_warnings(outputs, classes, tolerances)

    def compare(
        self,
        request: ModelRequest,
        backends: Sequence[str] = ("onnxruntime",),
        precisions: Sequence[str] = ("fp32",),
        policy: TolerancePolicy | None = None,
        calibration: CalibrationOptions = CalibrationOptions(),
    ) -> Comparison:
        """Each backend x precision on the golden inputs against the golden reference outputs
        (TensorFlow, the reference, only in fp32)."""
        golden = self.reference(request)
        policy = policy or TolerancePolicy()
        results: list[OutputComparison] = []
        skipped: list[tuple[str, str, str]] = []
        warnings: list[str] = []
        for backend in backends:
            for precision in ("fp32",) if backend == "tensorflow" else precisions:
                try:
                    cal: Calibration | None = None
                    if backend == "tensorflow":
                        runner: Runner = self.tf_runner(request)
                    else:
                        engine = self.engine(request, backend, precision, calibration)
                        runner = engine.runner
                        cal = engine.calibration
                    with runner:
                        checked = golden.check(runner, policy)
                    warnings += [w for w in checked.warnings if w not in warnings]
                    results += [r if cal is None else replace(r, calibration=cal.description,
                                                              calibration_synthetic=cal.synthetic)
                                for r in checked.results]
                except BackendUnavailable as e:
                    # Built (where it can be) but not runnable here: reported, not fatal.
                    skipped.append((backend, precision, e.reason))
        return Comparison(tuple(results), tuple(skipped), tuple(warnings), golden.reference)
