"""ONNX Runtime runner: CPU by default; CUDA and TensorRT execution providers when asked
for and installed (onnxruntime-gpu)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.backends.base import Runner
from harness.errors import ArtifactError, BackendUnavailable
from harness.lazy import lazy_import
from harness.spec import ModelSpec

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def import_onnxruntime() -> Any:
    onnxruntime = lazy_import("onnxruntime")
    onnxruntime.set_default_logger_severity(3)
    return onnxruntime


def resolve_providers(names: Sequence[str]) -> list[str]:
    """Execution providers in priority order; CPU is always last so unsupported nodes fall back."""
    ort = import_onnxruntime()
    available = ort.get_available_providers()
    chosen = []
    for n in names:
        if n not in PROVIDERS:
            raise BackendUnavailable("onnxruntime", f"unknown execution provider {n!r}; choose from {sorted(PROVIDERS)}")
        if PROVIDERS[n] not in available:
            raise BackendUnavailable(
                "onnxruntime", f"execution provider {PROVIDERS[n]} not in this onnxruntime ({available}); "
                "install onnxruntime-gpu on a CUDA machine"
            )
        chosen.append(PROVIDERS[n])
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


class OrtRunner(Runner):
    backend = "onnxruntime"

    def __init__(
        self,
        onnx_path: Path,
        spec: ModelSpec,
        precision: str = "fp32",
        providers: Sequence[str] = ("cpu",),
        threads: int = 0,
        exact_qdq: bool = False,
    ) -> None:
        super().__init__(spec, precision)
        self.onnx_path = Path(onnx_path)
        self.providers = tuple(providers)
        self.threads = threads
        # TensorRT's int8 form checked here: Q/DQ left as float ops (basic graph optimizations), so
        # the check sees the quantization, not ONNX Runtime's fused int8 kernels, which on an x86
        # without VNNI add pairs of products into saturating int16 (TensorRT accumulates in int32):
        # InceptionV3's TensorRT form read cosine 0.74 fused and 0.965 unfused on an AVX2-only EPYC.
        self.exact_qdq = exact_qdq
        self.session: Any = None

    def recipe_args(self) -> dict[str, Any]:
        return {"onnx_path": str(self.onnx_path), "precision": self.precision, "providers": list(self.providers),
                "threads": self.threads, "exact_qdq": self.exact_qdq}

    def _activate(self) -> None:
        if not self.onnx_path.is_file():
            raise ArtifactError(f"{self.onnx_path}: no such file; build it again (harness export / harness compare)")
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if self.exact_qdq
                                            else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        options.intra_op_num_threads = self.threads  # 0: one per physical core
        try:
            self.session = ort.InferenceSession(
                str(self.onnx_path), options, providers=resolve_providers(self.providers)
            )
        except (ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.InvalidProtobuf,
                ort.capi.onnxruntime_pybind11_state.InvalidGraph) as e:
            raise ArtifactError(f"{self.onnx_path}: ONNX Runtime cannot load it ({str(e).splitlines()[0]})") from e
        names = {i.name for i in self.session.get_inputs()}
        if names != set(self.spec.input_names):
            raise ArtifactError(
                f"{self.onnx_path}: its inputs {sorted(names)} are not the model's {self.spec.input_names}; "
                "re-export it with `harness export`"
            )
        self._outputs = self.spec.output_names

    def _deactivate(self) -> None:
        self.session = None

    def infer_checked(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self.session.run(self._outputs, feed)))
