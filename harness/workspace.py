"""The pipeline, cached: model source -> frozen graph -> ONNX -> runners, plus goldens.

The CLI and the pytest plugin are both thin layers over a Workspace."""

from __future__ import annotations

import contextlib
import io
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import __version__
from harness.artifacts import DEFAULT_ROOT, ArtifactStore, digest_bytes, digest_json
from harness.backends.base import Runner
from harness.backends.onnxrt import OrtRunner
from harness.backends.tf import TFRunner
from harness.compare import DEFAULT_TOLERANCES, Comparison, OutputComparison, Tolerance
from harness.errors import ArtifactError, UsageError
from harness.export import DEFAULT_OPSET, export_onnx
from harness.golden import DEFAULT_GOLDEN_DIR, Golden, load_golden, write_golden
from harness.machine import package_version
from harness.progress import Stream, step
from harness.sources import ModelRequest, resolve
from harness.spec import ModelSpec

BACKENDS = ("tensorflow", "onnxruntime")
DEFAULT_GOLDEN_SAMPLES = 4
DEFAULT_SEED = 0


def _version(package: str) -> str:
    return package_version(package) or "not installed"


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


class Workspace:
    def __init__(
        self,
        artifacts: Path = DEFAULT_ROOT,
        golden_dir: Path = DEFAULT_GOLDEN_DIR,
        opset: int = DEFAULT_OPSET,
        quiet: bool = False,
        providers: Sequence[str] = ("cpu",),
        progress: Stream | None = None,
    ) -> None:
        self.store = ArtifactStore(Path(artifacts))
        self.golden_dir = Path(golden_dir)
        self.opset = opset
        self.quiet = quiet
        self.progress = progress  # where progress lines go (default stderr)
        self.providers = tuple(providers)  # ONNX Runtime execution providers, in priority order
        self._frozen: dict[ModelRequest, FrozenModel] = {}
        self._onnx: dict[ModelRequest, OnnxModel] = {}

    def _step(self, what: str) -> contextlib.AbstractContextManager[None]:
        return step(what, io.StringIO() if self.quiet else self.progress)

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
        result = OnnxModel(
            frozen.name, frozen.spec, entry.file("model.onnx"), self.opset, entry.reused, time.perf_counter() - start
        )
        self._onnx[request] = result
        return result

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

    # --- goldens -------------------------------------------------------------------------

    def golden_command(self, request: ModelRequest) -> str:
        words = ["harness", "golden", request.model]
        words += [f"--input={i}" for i in request.inputs] + [f"--output={o}" for o in request.outputs]
        if request.signature:
            words.append(f"--signature={request.signature}")
        if self.golden_dir != DEFAULT_GOLDEN_DIR:
            words.append(f"--golden-dir={self.golden_dir}")
        return shlex.join(words)

    def golden(self, request: ModelRequest) -> Golden:
        frozen = self.frozen(request)
        return load_golden(self.golden_dir, frozen.name, frozen.digest, self.golden_command(request))

    def write_golden(self, request: ModelRequest, samples: int = DEFAULT_GOLDEN_SAMPLES, seed: int = DEFAULT_SEED) -> Path:
        """Run the TensorFlow reference on representative inputs and store the result."""
        source = resolve(request)
        frozen = self.frozen(request)
        representative = getattr(source, "representative", None)
        if representative is not None:
            rep = representative()
            feed, labels, description = rep.feed, rep.labels, rep.description
        else:
            feed, labels = frozen.spec.random_feed(samples, seed), None
            description = f"{samples} seeded random samples (numpy default_rng({seed}); floats standard normal)"
        with self._step(f"computing TensorFlow reference outputs of {frozen.name}"), self.tf_runner(request) as tf_runner:
            outputs = tf_runner.infer(feed)
        meta = {
            "model_digest": frozen.digest,
            "spec": frozen.spec.to_dict(),
            "inputs": description,
            "seed": seed,
            "tensorflow": _version("tensorflow"),
            "keras": _version("keras"),
            "harness": __version__,
            "command": self.golden_command(request),
        }
        return write_golden(self.golden_dir, frozen.name, feed, outputs, labels, meta)

    def compare(
        self,
        request: ModelRequest,
        backends: Sequence[str] = ("onnxruntime",),
        tolerances: Mapping[str, Tolerance] | None = None,
    ) -> Comparison:
        """Each backend's outputs on the golden inputs against the golden reference outputs."""
        golden = self.golden(request)
        tols = dict(DEFAULT_TOLERANCES, **(tolerances or {}))
        results: list[OutputComparison] = []
        for backend in backends:
            with self.runner(request, backend) as runner:
                results += golden.check(runner, tols[runner.precision]).results
        return Comparison(tuple(results))
