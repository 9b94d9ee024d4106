"""The one place TensorFlow is imported, quietly, with an error that names the fix.

TensorFlow's C++ side writes straight to file descriptor 2 while it loads and while it looks
for a GPU ("All log messages before absl::InitializeLog()", the oneDNN banner, and on a CPU
machine "failed call to cuInit: ... UNKNOWN ERROR (303)", which reads like a failure);
TF_CPP_MIN_LOG_LEVEL does not reach those lines.  They are caught at the descriptor and
dropped, unless HARNESS_VERBOSE=1 (`harness --verbose`, `pytest --harness-verbose`)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from types import ModuleType

from harness.errors import BackendUnavailable
from harness.lazy import lazy_import, remedy

VERBOSE_ENV = "HARNESS_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


@contextlib.contextmanager
def quiet_stderr() -> Iterator[list[str]]:
    """Send what anything (C++ included) writes to fd 2 into a list, unless verbose."""
    captured: list[str] = []
    if verbose():
        yield captured
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.extend(tmp.read().decode(errors="replace").splitlines())


# absl's log lines ("I0000 00:00:1795757955.333 4365 port.cc:153] ...") and their preamble.
NOISE = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] |"
                   r"WARNING: All log messages before absl::InitializeLog\(\) is called)")


def import_tensorflow() -> ModuleType:
    if "tensorflow" in sys.modules and hasattr(sys.modules["tensorflow"], "config"):
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose() else "2")
    lines: list[str] = []
    try:
        with quiet_stderr() as lines:
            import tensorflow as tf

            tf.config.list_physical_devices()  # the GPU probe (and its cuInit line) happens here, not later
    except BaseException as e:
        _replay(lines)  # whatever TensorFlow said may explain the failure: all of it
        if isinstance(e, ImportError):
            raise BackendUnavailable(
                "tensorflow", f"tensorflow not importable ({e}); install it with: {remedy('tensorflow')}"
            ) from e
        raise
    _replay(line for line in lines if not NOISE.match(line))  # anything else written meanwhile (our progress)
    tf.get_logger().setLevel(logging.ERROR)
    return tf


def _replay(lines: Iterable[str]) -> None:
    for line in lines:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()


def import_tf2onnx() -> ModuleType:
    import_tensorflow()
    tf2onnx = lazy_import("tf2onnx")
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    return tf2onnx
