"""Optional dependencies, imported where they are used, with the command that installs them.

One table of remedies, one helper: a missing module is a BackendUnavailable (a skip in
pytest, one line and exit 2 in the CLI) that says what to install, never an ImportError."""

from __future__ import annotations

import importlib
from types import ModuleType

from harness.errors import BackendUnavailable

REMEDIES = {
    "tensorflow": "pip install -e '.[tensorflow]'",
    "keras": "pip install -e '.[tensorflow]'",
    "tf2onnx": "pip install -e '.[tensorflow]'",
    "onnx": "pip install -e '.[tensorflow]'",
    "onnxruntime": "pip install -e '.[onnxruntime]' (or onnxruntime-gpu on a CUDA machine)",
    "onnxconverter_common": "pip install -e '.[onnxruntime]'",
    "tensorrt": "pip install tensorrt (from NVIDIA's index, on a machine with an NVIDIA GPU)",
    "tensorrt_rtx": "pip install tensorrt-rtx-cu13",
    "cuda.bindings.runtime": "pip install cuda-bindings",
    "matplotlib": "pip install -e '.[report]'",
    "openvino": "pip install -e '.[openvino]'",
}


def remedy(module: str) -> str:
    return REMEDIES.get(module) or REMEDIES.get(module.split(".")[0]) or f"pip install {module.split('.')[0]}"


def lazy_import(module: str, backend: str | None = None) -> ModuleType:
    """`module`, imported now; where it is missing (or its libraries fail to load), a
    BackendUnavailable naming `backend` (default: the module) and the install command."""
    try:
        return importlib.import_module(module)
    except (ImportError, OSError) as e:
        raise BackendUnavailable(
            backend or module, f"{module} not importable ({e}); install it with: {remedy(module)}"
        ) from e
