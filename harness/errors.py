"""Every user-facing failure is a HarnessError: the CLI prints its message and exits 2,
pytest shows it as the test's failure.  Messages name the file or tensor and the fix."""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""


class UsageError(HarnessError):
    """A bad option or argument (wrong format, unknown name)."""


class ModelSourceError(HarnessError):
    """The model could not be found, read or frozen (missing shard, corrupt .pb, wrong node)."""


class ExportError(HarnessError):
    """The frozen graph could not be converted to a valid ONNX model."""


class InputError(HarnessError):
    """A feed does not match the model's inputs (name, shape or dtype)."""


class BackendUnavailable(HarnessError):
    """A backend's module is not installed or cannot run on this host.

    `reason` is short enough to be a pytest skip reason."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"backend {backend!r} is unavailable: {reason}")
        self.backend = backend
        self.reason = reason


class PrecisionMismatch(HarnessError):
    """An engine computes in another precision than the one it was pinned to (OpenVINO's CPU
    plugin answering bf16 when f32 was asked): a failure, never a skip, so a run cannot go green
    by timing or checking something other than what it names."""


class UnsupportedModel(HarnessError):
    """A backend or step cannot take this model (an op it cannot convert, an output whose size
    depends on the data); the message names the op or tensor, the step and what to use instead."""


class ArtifactError(HarnessError):
    """A cached or given artifact (ONNX file, plan) is corrupt or unreadable."""


class GoldenError(HarnessError):
    """Golden data is missing, stale or corrupt."""


class GoldenMissing(GoldenError):
    pass


class GoldenStale(GoldenError):
    pass
