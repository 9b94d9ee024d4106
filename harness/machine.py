"""What a benchmark ran on: CPU model and the flags that change inference speed, GPUs, and
the versions of the libraries whose speed is measured.  Read without importing them."""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
PACKAGES = ("tensorflow", "keras", "onnxruntime", "onnxruntime-gpu", "openvino", "tf2onnx", "onnx", "tensorrt",
            "tensorrt-rtx-cu13",
            "tensorrt-rtx-cu12", "cuda-python", "numpy")


# What makes one CPU's speedups differ from another's: the vector and matrix units that
# ONNX Runtime's, OpenVINO's and TensorFlow's kernels dispatch on.
CLASS_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
# Settings that change which of those units the kernels use (and so the speed), where set.
CLASS_ENV = ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "NPY_DISABLE_CPU_FEATURES")
CLASS_ENV_DEFAULTS = ("", "1", "true", "all")  # values that change nothing: not part of the class


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    model, vendor, flags = platform.processor() or platform.machine(), "", set()
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "vendor_id":
                vendor = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {
        "model": model,
        "vendor": vendor,
        "class_flags": [f for f in CLASS_FLAGS if f in flags],
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "speed_flags": [f for f in SPEED_FLAGS if f in flags],
    }


def gpu_info() -> list[dict[str, str]]:
    """GPUs as nvidia-smi reports them (name, driver, compute capability); [] without one."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]
    return [{"name": r[0], "driver": r[1], "compute_capability": r[2]} for r in rows if len(r) == 3]


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def installed_version(name: str) -> str:
    """For cache keys and records: the version, or "not installed"."""
    return package_version(name) or "not installed"


def versions() -> dict[str, str]:
    return {p: v for p in PACKAGES if (v := package_version(p)) is not None}


def machine_info() -> dict[str, Any]:
    info = {"cpu": cpu_info(), "gpus": gpu_info(), "versions": versions()}
    info["class"] = class_id(machine_class(info))
    return info


def machine_class(info: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a speedup baseline is recorded per: CPU vendor and model, the ISA features that
    change inference speed, usable cores, and each GPU's name and compute capability."""
    info = info or {"cpu": cpu_info(), "gpus": gpu_info()}
    cpu = info["cpu"]
    return {
        "cpu": cpu["model"],
        "vendor": cpu.get("vendor", ""),
        "isa": list(cpu.get("class_flags", [])),
        "cores": cpu.get("usable_cores"),
        "gpus": [f"{g['name']} (compute capability {g['compute_capability']})" for g in info["gpus"]],
        "env": {k: os.environ[k] for k in CLASS_ENV if os.environ.get(k, "").lower() not in CLASS_ENV_DEFAULTS},
    }


def class_id(machine: Mapping[str, Any]) -> str:
    """One line naming a machine class, e.g. 'GenuineIntel Intel(R) Xeon(R) Processor, 2 cores,
    avx2+avx512f+avx512_vnni+amx_int8; no GPU'."""
    isa = "+".join(machine.get("isa", [])) or "no avx2"
    gpus = ", ".join(machine.get("gpus", [])) or "no GPU"
    vendor = f"{machine['vendor']} " if machine.get("vendor") else ""
    env = "".join(f"; {k}={v}" for k, v in sorted(machine.get("env", {}).items()))
    return f"{vendor}{machine['cpu']}, {machine.get('cores')} cores, {isa}; {gpus}{env}"


@functools.lru_cache(maxsize=1)
def visible_device() -> dict[str, Any]:
    """The device this process runs engines on: the first GPU `CUDA_VISIBLE_DEVICES` leaves it
    (with --harness-devices, an xdist worker's own), as its index on the host, name, driver and
    compute capability; or the CPU where there is no GPU."""
    gpus = gpu_info()
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    index = int(first) if first.isdigit() else 0
    if gpus and index < len(gpus):
        return {"kind": "gpu", "index": index, **gpus[index]}
    return {"kind": "cpu", "name": str(cpu_info().get("model", "?"))}
