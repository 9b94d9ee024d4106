"""Runners the counting tests make in a Valgrind child process (importable there by name)."""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.backends.onnxrt import OrtRunner


class TwiceOrt(OrtRunner):
    """ONNX Runtime doing every call's work twice: a known 2x regression."""

    def infer_checked(self, feed: dict[str, np.ndarray]) -> dict[str, Any]:
        super().infer_checked(feed)
        return super().infer_checked(feed)


class UnoptimizedOrt(OrtRunner):
    """ONNX Runtime with its graph optimizations off: a realistic regression (a mis-set option)."""

    def _activate(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])
        self._outputs = self.spec.output_names


class SpinOrt(OrtRunner):
    """ONNX Runtime plus `spin` Python iterations per call: a regression of a size one can choose
    (scripts/gate_detection.py sizes it from the clean count).  `spin` may map a batch size (as a
    string: it travels as JSON) to its own number, so one process slows every row by one share."""

    def __init__(self, *args: Any, spin: int | dict[str, int] = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spin = spin

    def infer_checked(self, feed: dict[str, np.ndarray]) -> dict[str, Any]:
        out = super().infer_checked(feed)
        n = self.spin if isinstance(self.spin, int) else self.spin.get(str(len(next(iter(feed.values())))), 0)
        for _ in range(n):
            pass
        return out


class OnceOrt(OrtRunner):
    """ONNX Runtime plus one-off work (`spin` Python iterations) in its `at`-th call only: an
    event like the one-time work ONNX Runtime does at a varying moment, which a count must not
    take for a change in every call."""

    def __init__(self, *args: Any, spin: int = 0, at: int = 7, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spin, self.at, self.done = spin, at, 0

    def infer_checked(self, feed: dict[str, np.ndarray]) -> dict[str, Any]:
        out = super().infer_checked(feed)
        self.done += 1
        if self.done == self.at:
            for _ in range(self.spin):
                pass
        return out
