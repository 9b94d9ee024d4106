"""Peak memory and wall time of each stage of the cold pipeline (empty artifact store), so a
regression shows: freeze, export, fp16, calibration, int8 quantization (both placements),
and a TensorRT for RTX plan per precision.

    python scripts/pipeline_profile.py                  # InceptionV3, the main job's model
    python scripts/pipeline_profile.py --model digits --no-plans

Peak RSS per stage is the process's high-water mark reset before the stage (Linux:
/proc/self/clear_refs), so each row is that stage's own peak, whatever ran before it."""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="inception_v3")
    parser.add_argument("--no-plans", action="store_true", help="skip the TensorRT for RTX plans")
    args = parser.parse_args()

    from harness.sources import ModelRequest
    from harness.workspace import DEFAULT_CALIBRATION, Workspace

    rows: list[tuple[str, float, int]] = []
    start_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="harness-profile.") as tmp:
        ws = Workspace(artifacts=Path(tmp), quiet=True)
        request = ModelRequest(args.model)

        def stage(name: str, fn: Callable[[], Any]) -> None:
            exact = _reset_peak()
            start = time.perf_counter()
            fn()
            rows.append((name + ("" if exact else " (peak since start)"), time.perf_counter() - start,
                         _status("VmHWM")))
            print(f"{name:28s} {rows[-1][1]:7.1f} s {rows[-1][2] / 2**30:7.2f} GB", flush=True)

        stage("freeze", lambda: ws.frozen(request))
        stage("export (tf2onnx)", lambda: ws.onnx(request))
        print(f"  exported ONNX sha256 {hashlib.sha256(ws.onnx(request).path.read_bytes()).hexdigest()}", flush=True)
        stage("fp16", lambda: ws.variant(request, "fp16"))
        stage("calibration", lambda: ws.calibration(request, DEFAULT_CALIBRATION))
        stage("int8 (TensorRT form)", lambda: ws.variant(request, "int8", DEFAULT_CALIBRATION, target="tensorrt"))
        stage("int8 (ONNX Runtime form)", lambda: ws.variant(request, "int8", DEFAULT_CALIBRATION, target="onnxruntime"))
        if not args.no_plans:
            for precision in ("fp32", "fp16", "int8"):
                stage(f"plan tensorrt_rtx {precision}", lambda p=precision: ws.plan(request, "tensorrt_rtx", p))
    total = time.perf_counter() - start_all
    print(f"{'total':28s} {total:7.1f} s {max(r[2] for r in rows) / 2**30:7.2f} GB (the largest stage peak)")


if __name__ == "__main__":
    main()
