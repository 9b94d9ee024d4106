"""The one place TensorFlow is imported, quietly, with an error that names the fix."""

from __future__ import annotations

import logging
import os
from types import ModuleType

from harness.errors import BackendUnavailable


def import_tensorflow() -> ModuleType:
    # Before the first import: quiets most of TF's C++ notices (a few absl lines remain).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as e:
        raise BackendUnavailable(
            "tensorflow", f"tensorflow not importable ({e}); install it with: pip install -e '.[tensorflow]'"
        ) from e
    tf.get_logger().setLevel(logging.ERROR)
    return tf


def import_tf2onnx() -> ModuleType:
    import_tensorflow()
    try:
        import tf2onnx
    except ImportError as e:
        raise BackendUnavailable(
            "tf2onnx", f"tf2onnx not importable ({e}); install it with: pip install -e '.[tensorflow]'"
        ) from e
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    return tf2onnx
