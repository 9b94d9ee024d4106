"""A Workspace wires the pipeline's stages (harness/stages/: freeze, export, calibrate,
variant, plan) for model requests, remembers what they made, and adds engines, goldens and
the compare loop.  The CLI and the pytest plugin are both thin layers over it."""

from __future__ import annotations

import contextlib
import io
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness import __version__, stages
from harness.artifacts import DEFAULT_ROOT, ArtifactStore, digest_json
from harness.backends.base import Runner, by_sample
from harness.backends.names import BACKENDS, ENGINE_BACKENDS, TRT_LIBRARIES
from harness.backends.onnxrt import OrtRunner
from harness.backends.tf import TFRunner
from harness.backends.trt.build import BuildOptions
from harness.compare import Comparison, OutputComparison
from harness.debug import DebugReport
from harness.errors import BackendUnavailable, GoldenMissing, HarnessError, UnsupportedModel, UsageError
from harness.export import DEFAULT_OPSET
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
from harness.precision import ALL_PRECISIONS, BACKEND_PRECISIONS, MIXED, PRECISIONS, SAME_FILE_AS, base_precision
from harness.precision.calibration import CalibrationData, load_calibration
from harness.progress import Stream, step
from harness.sources import DEFAULT_SIGNATURE, ModelRequest, resolve
from harness.spec import ModelSpec
from harness.stages.calibrate import (  # noqa: F401  (re-exported: the options users build)
    DEFAULT_CALIBRATION_METHOD,
    DEFAULT_CALIBRATION_SAMPLES,
    Calibration,
    CalibrationOptions,
)
from harness.stages.export import OnnxModel
from harness.stages.freeze import FrozenModel
from harness.stages.plan import Plan

# The int8 placement each ONNX-running backend builds from (harness.precision.int8.TARGETS).
# OpenVINO runs TensorRT's own file as fast as ONNX Runtime's form (InceptionV3, 2-core Intel
# Xeon with AMX: 8.0 vs 7.5 ms at batch 1, 176 vs 182 ms at batch 32), so one int8 file serves
# TensorRT and OpenVINO, and the golden check of one is the check of the other.
INT8_FORM = {"onnxruntime": "onnxruntime", "openvino": "tensorrt"}
DEFAULT_GOLDEN_SAMPLES = 32  # user models: enough that one flipped sample moves top-1 by 0.03, not 0.25
DEFAULT_SEED = 0
DEFAULT_CALIBRATION = CalibrationOptions()  # the model's own calibration data (see CalibrationOptions)


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
        policy: TolerancePolicy | None = None,
        fix_budget: int = 12,
        threads: int = 0,
    ) -> None:
        self.store = ArtifactStore(Path(artifacts))
        self.threads = threads  # of the CPU engines (ONNX Runtime, OpenVINO); 0: their own default
        self.policy = policy or TolerancePolicy()  # what a mixed-precision search must pass
        self.fix_budget = fix_budget  # golden runs a mixed-precision search may make
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
        self._debugged: dict[tuple[ModelRequest, str, CalibrationOptions, str, int], DebugReport] = {}

    def _say(self, what: str) -> None:
        """One progress line (where `_step`'s go)."""
        if not self.quiet:
            print(f"[harness]   {what}", file=self.progress or sys.stderr, flush=True)

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
        if request not in self._frozen:
            self._frozen[request] = stages.freeze.freeze(self.store, resolve(request), self._step, request.inputs)
        return self._frozen[request]

    def onnx(self, request: ModelRequest) -> OnnxModel:
        if request not in self._onnx:
            self._onnx[request] = stages.export.export(self.store, self.frozen(request), self.opset, self._step)
        return self._onnx[request]

    # --- precision variants ---------------------------------------------------------------

    def calibration_data(self, request: ModelRequest, options: CalibrationOptions) -> CalibrationData:
        """The data int8 is calibrated on: the user's, else the model's own calibration split (a
        built-in's), else seeded synthetic inputs, said once."""
        spec = self.frozen(request).spec
        default = None
        if options.source is None:
            own = getattr(resolve(request), "calibration", None)  # built-in models carry a calibration split
            if own is not None:
                rep = own()
                default = CalibrationData(rep.feed, rep.description)
        data = load_calibration(spec, options.source, default, options.samples, options.preprocess)
        if data.synthetic:
            self.warn(f"{spec.name}: int8 is calibrated on {data.description}: int8 agreement is not evidence of "
                      "accuracy; give representative inputs with --calibration (pytest: --harness-calibration)")
        return data

    def calibration(self, request: ModelRequest, options: CalibrationOptions) -> Calibration:
        if (request, options) not in self._calibrations:
            data = self.calibration_data(request, options)
            self._calibrations[(request, options)] = stages.calibrate.calibrate(
                self.store, self.onnx(request), data, options.method, self._step)
        return self._calibrations[(request, options)]

    def variant(
        self,
        request: ModelRequest,
        precision: str,
        calibration: CalibrationOptions = DEFAULT_CALIBRATION,
        target: str = "tensorrt",
    ) -> tuple[OnnxModel, Calibration | None]:
        """The ONNX file of `precision` (fp32 is the export itself), and its calibration (int8).
        `target` picks the int8 placement (harness.precision.int8.TARGETS); both come from the
        same calibration table."""
        if precision in MIXED:
            return self._mixed(request, precision, calibration, target)
        if precision not in PRECISIONS:
            raise UsageError(f"unknown precision {precision!r}; choose from {list(ALL_PRECISIONS)}")
        target = target if precision == "int8" else "any"
        memo = (request, precision, calibration, target)
        if memo not in self._variants:
            fp32 = self.onnx(request)
            if SAME_FILE_AS.get(precision, precision) == "fp32":
                self._variants[memo] = (fp32, None)
            else:
                cal = self.calibration(request, calibration) if precision == "int8" else None
                self._variants[memo] = (stages.variant.variant(self.store, fp32, precision, cal, target, self._step), cal)
        return self._variants[memo]

    def debug(self, request: ModelRequest, precision: str, calibration: CalibrationOptions = DEFAULT_CALIBRATION,
              target: str = "tensorrt", samples: int = 32) -> DebugReport:
        """Every tensor of `precision`'s ONNX file against fp32's on (up to `samples` of) the golden
        inputs, and the golden check of that file (ONNX Runtime, CPU). int8: TensorRT's placement
        by default, the file TensorRT builds."""
        from harness.debug import DEBUG_PRECISIONS, debug_precision

        if precision not in DEBUG_PRECISIONS:
            raise UsageError(f"harness debug --precision {precision}: choose from {list(DEBUG_PRECISIONS)}")
        memo = (request, precision, calibration, target, samples)
        if memo in self._debugged:
            return self._debugged[memo]
        golden = self.reference(request)
        fp32 = self.onnx(request)
        model, cal = self.variant(request, precision, calibration, target)
        feed = {k: v[:samples] for k, v in golden.inputs.items()}
        with self._step(f"comparing every tensor of {fp32.name} {precision} with fp32 "
                        f"({len(next(iter(feed.values())))} samples)"):
            report = debug_precision(fp32.path, model.path, precision, feed, fp32.name,
                                     cal.table if cal is not None else None, symmetric=target == "tensorrt")
        with OrtRunner(model.path, model.spec, precision, exact_qdq=target == "tensorrt") as runner:
            comparison = golden.check(runner, self.policy)
        report.passed = comparison.passed
        failed = [f"{r.output}: {'; '.join(r.failures)}" for r in comparison.results if r.failures]
        report.golden_summary = ("FAILS (" + " | ".join(failed)[:400] + ")" if not comparison.passed
                                 else "passes" if not failed else
                                 "UNSTABLE: outside the tolerance only within the reference's own noise floor ("
                                 + " | ".join(failed)[:400] + ")")
        report.notes += self._floor_notes(golden, report, [r.output for r in comparison.results if r.verdict != "PASS"],
                                          self.golden_command(request))
        self._debugged[memo] = report
        return report

    def _floor_notes(self, golden: Golden, report: DebugReport, failing: Sequence[str], command: str) -> list[str]:
        """The reference's own noise floor per output (intermediate tensors have none: a golden
        stores outputs only), and which failing outputs it cannot hold steady in fp32."""
        if golden.path is None:
            return [f"reference's noise floor: not measured (no golden; `{command}` writes one with its floor)"]
        if by_sample(golden.outputs):
            return ["reference's noise floor: none (outputs whose shapes depend on the data are judged per sample)"]
        if not golden.floors:
            return [f"reference's noise floor: not in this golden ({golden.where}); measure it with: "
                    + f"{command} --floor-only"]
        classes = set(golden.classes) | self.policy.classes(golden.model)
        fp32 = self.policy.for_outputs("fp32", golden.model, list(golden.outputs))
        notes = ["reference's own noise floor per output (TensorFlow against itself; outputs only):"]
        for name, floor in golden.floors.items():
            why = floor.exceeds(golden.outputs[name], fp32[name], name in classes)
            notes.append(f"  {name}: max {floor.max_abs:.3g}, p99 {floor.p99_abs:.3g}, worst cosine {floor.cosine:.6f}"
                         + (f", top-1 {floor.top1:.4f}" if floor.top1 is not None else "")
                         + (f"; UNSTABLE in fp32 ({'; '.join(why)})" if why else "; steady within the fp32 tolerance"))
            if why and name in failing:
                report.unstable_fp32.append(name)
        return notes

    def _mixed(self, request: ModelRequest, precision: str, calibration: CalibrationOptions,
               target: str) -> tuple[OnnxModel, Calibration | None]:
        """The mixed variant: the fewest nodes, ranked by `debug`, kept in fp32 (unquantized) for
        the golden check to pass under the policy; searched once, then cached like any variant."""
        from harness.artifacts import digest_bytes
        from harness.debug import find_mixed, write_mixed

        base = MIXED[precision]
        target = "tensorrt" if base == "int8" else "any"  # one file, TensorRT's placement, for every backend
        memo = (request, precision, calibration, target)
        if memo in self._variants:
            return self._variants[memo]
        fp32 = self.onnx(request)
        plain, cal = self.variant(request, base, calibration, "tensorrt")
        golden = self.reference(request)
        tolerances = self.policy.for_outputs(base, golden.model, list(golden.outputs))
        outputs = digest_bytes(b"".join(v.tobytes() for v in golden.outputs.values()))
        # Not the budget: only a failed search depends on it, and a failure is not cached.
        key = digest_json(["mixed", precision, plain.digest, fp32.digest, outputs, target,
                           {o: repr(t) for o, t in tolerances.items()}])

        def build(tmp: Path) -> dict[str, Any]:
            import tempfile

            report = self.debug(request, base, calibration)
            if report.unstable_fp32 and not report.passed:
                from harness.floor import refusal

                raise HarnessError(refusal(fp32.name, base, report.unstable_fp32))
            if report.passed:
                self.warn(f"{fp32.name}: plain {base} already passes its golden check; {precision} keeps nothing")
            table = cal.table if cal is not None else None
            method = cal.method if cal is not None else "minmax"
            with tempfile.TemporaryDirectory(prefix="harness-mixed.") as trials:
                count = iter(range(10**6))

                def passes(kept: Sequence[str]) -> bool:
                    path = Path(trials) / f"trial-{next(count)}.onnx"
                    write_mixed(fp32.path, base, kept, path, table, method, "tensorrt")
                    with OrtRunner(path, fp32.spec, precision, exact_qdq=True) as runner:  # TensorRT's form
                        return golden.check(runner, self.policy).passed

                with self._step(f"searching the fewest nodes of {fp32.name} to keep out of {base} "
                                f"(at most {self.fix_budget} golden runs)"):
                    kept, runs = find_mixed(report.ranking(), passes, self.fix_budget, self._say)
            if kept is None:
                raise HarnessError(
                    f"{fp32.name}: no {precision} model passed the golden check within {runs} runs (the ranking has "
                    f"{len(report.ranking())} nodes); raise the budget (--fix-budget) or loosen the {base} tolerance")
            info = write_mixed(fp32.path, base, kept, tmp / "model.onnx", table, method, "tensorrt")
            return {**info, "base": base, "golden_runs": runs, "debug": report.summary()}

        entry = self.store.get_or_build(precision, f"{fp32.name}-{target}", key, build)
        model = OnnxModel(fp32.name, fp32.spec, entry.file("model.onnx"), fp32.opset, entry.reused, 0.0,
                          entry.meta["files"]["model.onnx"])
        self._variants[memo] = (model, cal)
        return self._variants[memo]

    def plan(
        self, request: ModelRequest, library: str, precision: str, calibration: CalibrationOptions = DEFAULT_CALIBRATION
    ) -> Plan:
        """The TensorRT plan of `precision` (built from TensorRT's int8 placement), cached under
        the engine dir."""
        memo = (request, library, precision, calibration)
        if precision not in BACKEND_PRECISIONS.get(library, ()):
            raise BackendUnavailable(library, f"no {precision} plan: {library} builds "
                                     f"{', '.join(BACKEND_PRECISIONS.get(library, ()))}")
        if memo not in self._plans:
            from harness.backends.trt import import_trt

            import_trt(library)  # a missing library is said before any variant is made for it
            model, _ = self.variant(request, precision, calibration, target="tensorrt")
            self._plans[memo] = stages.plan.build(self.engine_dir, model, precision, library, self.build_options,
                                                  self.rebuild, self._step)
        return self._plans[memo]

    def engine(
        self, request: ModelRequest, backend: str, precision: str, calibration: CalibrationOptions = DEFAULT_CALIBRATION
    ) -> Engine:
        """A built (not yet active) engine of `backend` in `precision`."""
        if backend not in ENGINE_BACKENDS:
            raise UsageError(f"unknown engine backend {backend!r}; choose from {list(ENGINE_BACKENDS)}")
        if precision not in BACKEND_PRECISIONS[backend]:
            raise BackendUnavailable(backend, f"no {precision} engine: {backend} runs {', '.join(BACKEND_PRECISIONS[backend])}")
        if backend in TRT_LIBRARIES:
            from harness.backends.trt.runner import TrtRunner

            plan = self.plan(request, backend, precision, calibration)
            spec = self.frozen(request).spec
            cache = self.engine_dir / f"runtime-{backend}.cache" if backend == "tensorrt_rtx" else None
            hint = f"rebuild it with: harness build {request.model} --backends {backend} --precisions {precision} --rebuild"
            trt_runner = TrtRunner(plan.path, spec, precision, backend, self.build_options.max_batch, cache,
                                   self.cuda_graph, hint)
            cal = (self.calibration(request, calibration) if base_precision(precision) == "int8"
                   else None)  # cached: what the plan used
            return Engine(spec.name, backend, precision, plan.path, spec, trt_runner, plan.reused, cal)
        model, cal = self.variant(request, precision, calibration, target=INT8_FORM[backend])
        runner: Runner
        if backend == "openvino":
            from harness.backends.openvino import OpenVinoRunner

            runner = OpenVinoRunner(model.path, model.spec, precision, threads=self.threads)
        else:
            runner = OrtRunner(model.path, model.spec, precision, self.providers, self.threads)
        return Engine(model.name, backend, precision, model.path, model.spec, runner, model.reused, cal)

    def tf_runner(self, request: ModelRequest) -> TFRunner:
        frozen = self.frozen(request)
        return TFRunner(frozen.graph_path, frozen.spec)

    def ort_runner(self, request: ModelRequest, threads: int = 0) -> OrtRunner:
        model = self.onnx(request)
        return OrtRunner(model.path, model.spec, "fp32", self.providers, threads or self.threads)

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
        golden = load_golden(root, key, frozen.name, frozen.digest, self.golden_command(request), frozen.spec.classes)
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
        outputs = self._reference_outputs(request, feed)
        return Golden(frozen.name, None, feed, outputs, labels, {"inputs": description, "live": True},
                      frozen.spec.classes)

    def _reference_outputs(self, request: ModelRequest, feed: dict[str, Any]) -> dict[str, Any]:
        with self._step(f"computing TensorFlow reference outputs of {request.model}"), self.tf_runner(request) as tf:
            return tf.infer_batched(feed)

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
        from harness.floor import measure_floor, unstable_warnings

        frozen = self.frozen(request)
        feed, labels, description = self._golden_inputs(request, samples, seed)
        policy = policy or TolerancePolicy()
        classes = set(frozen.spec.classes) | policy.classes(frozen.name)
        floors: dict[str, Any] | None = None
        floor_how, floor_warnings = "", []
        with self.tf_runner(request) as tf:
            with self._step(f"computing TensorFlow reference outputs of {request.model}"):
                outputs = tf.infer_batched(feed)
            fixed = any(t.shape and t.shape[0] is not None for t in frozen.spec.inputs)
            ragged = by_sample(outputs)
            if ragged:  # nudged inputs may change a count of boxes: no elementwise floor to measure
                floor_warnings.append(f"no noise floor measured: output(s) {ragged} have shapes that depend on "
                                      "the data (judged per sample)")
            else:
                with self._step(f"measuring the reference's own noise floor of {request.model} (TensorFlow on the "
                                f"samples {'one at a time and ' if not fixed else ''}with inputs nudged one ulp)"):
                    try:
                        floors, ran = measure_floor(tf.infer_batched, feed, outputs, classes, one_at_a_time=not fixed)
                        floor_how = ", ".join(ran)
                    except Exception as e:  # noqa: BLE001 - the golden is still worth writing; say why it has no floor
                        floor_warnings.append(f"no noise floor measured ({type(e).__name__}: {str(e)[:200]}); outputs "
                                              "TensorFlow cannot hold steady will read as engine failures")
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
        path = write_golden(root, key, feed, outputs, labels, meta, floors, floor_how)
        tolerances = {p: policy.elementwise(p, frozen.name, list(outputs)) for p in PRECISIONS}
        return path, (floor_warnings + golden_warnings(outputs, classes, tolerances)
                      + unstable_warnings(floors or {}, outputs, tolerances, classes))

    def write_floor(self, request: ModelRequest, policy: TolerancePolicy | None = None) -> tuple[Path, list[str]]:
        """Measure the reference's noise floor on an existing golden's inputs and store it there,
        its inputs and outputs untouched (goldens written before floors were)."""
        from harness.floor import measure_floor, unstable_warnings
        from harness.golden import add_floor

        frozen = self.frozen(request)
        root, key = self.golden_location(request)
        # Loaded without its old floor: this replaces it (one from an older harness may not load).
        golden = load_golden(root, key, frozen.name, frozen.digest, self.golden_command(request), frozen.spec.classes,
                             with_floor=False)
        ragged = by_sample(golden.outputs)
        if ragged:
            raise UsageError(f"{golden.where}: no noise floor can be measured: output(s) {ragged} have shapes that "
                             "depend on the data (judged per sample)")
        policy = policy or TolerancePolicy()
        classes = set(golden.classes) | policy.classes(frozen.name)
        with self.tf_runner(request) as tf, self._step(f"measuring the reference's own noise floor of {request.model}"):
            # Around the stored outputs, with TensorFlow run again now among the alternatives: the
            # difference between this machine and the one that wrote the golden is part of the floor.
            now = tf.infer_batched(golden.inputs)
            fixed = any(t.shape and t.shape[0] is not None for t in frozen.spec.inputs)
            floors, ran = measure_floor(tf.infer_batched, golden.inputs, golden.outputs, classes,
                                        one_at_a_time=not fixed, also=[now])
        path = add_floor(golden, floors, ", ".join(ran))
        tolerances = {p: policy.elementwise(p, frozen.name, list(golden.outputs)) for p in PRECISIONS}
        return path, unstable_warnings(floors, golden.outputs, tolerances, classes)

    def compare(
        self,
        request: ModelRequest,
        backends: Sequence[str] = ("onnxruntime",),
        precisions: Sequence[str] = ("fp32",),
        policy: TolerancePolicy | None = None,
        calibration: CalibrationOptions = DEFAULT_CALIBRATION,
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
                except UnsupportedModel as e:  # this backend can't take the model; the others still can
                    skipped.append((backend, precision, str(e)))
        return Comparison(tuple(results), tuple(skipped), tuple(warnings), golden.reference)
