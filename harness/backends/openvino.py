"""OpenVINO runner (CPU): the same ONNX files ONNX Runtime runs, compiled by OpenVINO's CPU
plugin with the precision pinned.

The pin matters: on a CPU with AVX512_BF16 or AMX, OpenVINO's default inference precision
is bf16, so an "fp32" engine left on the default computes in bf16 (1.9x faster on an AMD
EPYC, logits off by up to 1.17).  Every precision here sets INFERENCE_PRECISION_HINT itself:
fp32, fp16 (the fp16 file's weights, computed in f32: the CPU plugin has no f16 arithmetic on
x86) and int8 (the Q/DQ file; what is not quantized runs in f32) all pin f32; bf16 pins bf16
and is refused on a CPU without bf16 units, naming the missing feature."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.backends.base import Runner
from harness.errors import ArtifactError, BackendUnavailable, PrecisionMismatch, UnsupportedModel
from harness.lazy import lazy_import
from harness.spec import ModelSpec

# precision -> the CPU plugin's INFERENCE_PRECISION_HINT (also the name of the ov.Type it reports back)
HINTS = {"fp32": "f32", "fp16": "f32", "int8": "f32", "bf16": "bf16", "fp16-mixed": "f32", "int8-mixed": "f32"}
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def import_openvino() -> Any:
    return lazy_import("openvino")


def cpu_has_bf16() -> tuple[bool, str]:
    """Whether this CPU has bf16 arithmetic, and the flags looked for (for a skip reason)."""
    from harness.machine import cpu_info

    flags = set(cpu_info()["class_flags"])
    return bool(flags & set(BF16_FLAGS)), " or ".join(BF16_FLAGS)


class OpenVinoRunner(Runner):
    backend = "openvino"

    def __init__(self, onnx_path: Path, spec: ModelSpec, precision: str = "fp32", threads: int = 0,
                 pin_precision: bool = True) -> None:
        super().__init__(spec, precision)
        if precision not in HINTS:
            raise BackendUnavailable("openvino", f"no {precision} engine in OpenVINO; it runs {sorted(HINTS)}")
        self.onnx_path = Path(onnx_path)
        self.threads = threads
        self.pin_precision = pin_precision  # False only to show what the default does (tests)
        self._request: Any = None
        self._compiled: Any = None

    def recipe_args(self) -> dict[str, Any]:
        return {"onnx_path": str(self.onnx_path), "precision": self.precision, "threads": self.threads,
                "pin_precision": self.pin_precision}

    def config(self) -> dict[str, Any]:
        """The CPU plugin's properties this engine is compiled with."""
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if self.pin_precision:
            config["INFERENCE_PRECISION_HINT"] = HINTS[self.precision]
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        return config

    def _activate(self) -> None:
        if self.precision == "bf16":
            has, flags = cpu_has_bf16()
            if not has:
                raise BackendUnavailable("openvino", f"bf16 needs a CPU with {flags}; this one has neither")
        if not self.onnx_path.is_file():
            raise ArtifactError(f"{self.onnx_path}: no such file; build it again (harness export / harness compare)")
        ov = import_openvino()
        core = ov.Core()
        try:
            model = core.read_model(str(self.onnx_path))
        except RuntimeError as e:
            failed = _unconverted(str(e))
            if failed:
                raise UnsupportedModel(f"{self.onnx_path}: OpenVINO {ov.__version__}'s ONNX frontend cannot convert "
                                       f"{failed}; run this model with onnxruntime (or TensorRT)") from e
            raise ArtifactError(f"{self.onnx_path}: OpenVINO cannot read it ({_gist(str(e))})") from e
        names = {n for port in model.inputs for n in port.get_names()}
        missing = sorted(set(self.spec.input_names) - names)
        if missing:
            raise ArtifactError(f"{self.onnx_path}: no input(s) {missing} (it has {sorted(names)}); "
                                "re-export it with `harness export`")
        try:
            self._compiled = core.compile_model(model, "CPU", self.config())
            self._outputs = [self._compiled.output(name) for name in self.spec.output_names]
        except RuntimeError as e:
            raise ArtifactError(f"{self.onnx_path}: OpenVINO cannot compile it for the CPU, or it lacks an output "
                                f"of {self.spec.output_names} ({str(e).splitlines()[0]})") from e
        if self.pin_precision:  # the plugin says what it will compute in; believe it, not the request
            actual = self._compiled.get_property("INFERENCE_PRECISION_HINT")
            if actual != getattr(ov.Type, HINTS[self.precision]):
                raise PrecisionMismatch(f"{self.onnx_path}: OpenVINO {self.precision} engine pinned to "
                                        f"{HINTS[self.precision]}, but the CPU plugin computes in {actual}; this "
                                        "engine would not be the precision it is named (check the OpenVINO version "
                                        "and the CPU's ISA)")
        self._request = self._compiled.create_infer_request()

    def _deactivate(self) -> None:
        self._request = None
        self._compiled = None

    def infer_checked(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self._request.infer(feed)  # copies already (share_outputs=False): safe past the next call
        return {name: np.asarray(results[port]) for name, port in zip(self.spec.output_names, self._outputs, strict=True)}


def _unconverted(message: str) -> str:
    """From OpenVINO's conversion report, the ops it could not convert and its reason for the first."""
    import re

    ops = re.findall(r"^-- (\S+) with a message:", message, re.MULTILINE)
    if not ops:
        return ""
    reasons = [line.strip() for line in message.splitlines() if line.strip().startswith("The provided")
               or line.strip().startswith("While validating")]
    return f"{', '.join(ops)}" + (f" ({'; '.join(reasons[:2])[:300]})" if reasons else "")


def _gist(message: str) -> str:
    """OpenVINO's first line is where it failed ("Exception from src/..."); the reason follows."""
    lines = [line.strip() for line in message.splitlines() if line.strip() and not line.startswith("Exception from")]
    return " ".join(lines[:3])[:400] or message.splitlines()[0]
