"""Stage 4: a precision's ONNX -> a TensorRT plan (strongly typed: the precision comes from
the file), cached under the engine dir with its sidecar `model.plan.json`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.artifacts import ArtifactStore, atomic_write_json, digest_bytes, digest_json, locked
from harness.backends.trt.build import BuildOptions
from harness.stages import Step
from harness.stages.export import OnnxModel


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


def build(engine_dir: Path, model: OnnxModel, precision: str, library: str, options: BuildOptions, rebuild: bool,
          step: Step) -> Plan:
    """Reused while its key (ONNX bytes, library and version, target device, build options)
    matches and its files match the hashes recorded when it was built; rebuilt otherwise."""
    from harness.backends.trt import import_trt, is_rtx
    from harness.backends.trt.build import build_plan, target_device

    trt = import_trt(library)
    device = target_device(trt, options)
    ranges = {t.name: [list(r) if r else None for r in t.ranges] for t in model.spec.inputs if any(t.ranges)}
    key = digest_json(["plan", model.digest, library, str(trt.__version__), device, options.to_dict(),
                       *([ranges] if ranges else [])])  # the profile of dims besides the batch
    device_slug = digest_json(device)[:12]
    timing_cache = None if is_rtx(trt) else engine_dir / f"timing-{library}-{trt.__version__}-{device_slug}.cache"
    start = time.perf_counter()

    def make(tmp: Path) -> dict[str, Any]:
        target = device.get("gpu") or "ahead of time for " + ",".join(device["ahead_of_time"])
        with step(f"building {library} plan of {model.name} {precision} ({target})"):
            if timing_cache is not None:
                with locked(timing_cache):
                    plan, info = build_plan(library, model.path, model.spec, options, timing_cache)
            else:
                plan, info = build_plan(library, model.path, model.spec, options)
        (tmp / "model.plan").write_bytes(plan)
        sidecar = {
            **info,
            "model": model.name,
            "precision": precision,
            "onnx": str(model.path),
            "onnx_sha256": model.digest,
            "plan_sha256": digest_bytes(plan),
            "built_without_gpu": device.get("gpu") is None,
        }
        atomic_write_json(tmp / "model.plan.json", sidecar)
        return {"sidecar": sidecar}

    entry = ArtifactStore(engine_dir).get_or_build("plans", f"{model.name}-{library}-{precision}", key, make,
                                                   rebuild=rebuild)
    return Plan(entry.file("model.plan"), dict(entry.meta["sidecar"]), entry.reused, time.perf_counter() - start)
