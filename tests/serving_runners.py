"""Runners the serving tests start in the engine worker (imported there by name)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from harness.backends.base import Runner
from harness.spec import ModelSpec, TensorSpec

SPEC = ModelSpec("slow", (TensorSpec("x", "float32", (None, 4)),), (TensorSpec("y", "float32", (None, 4)),))


class SlowDouble(Runner):
    """y = 2x after `delay` seconds: long enough for requests to be in flight at a stop, or for
    requests to queue up so the batcher has several to choose from."""

    backend = "test"

    def __init__(self, delay: float, spec: ModelSpec = SPEC) -> None:
        super().__init__(spec)
        self.delay = delay

    def _activate(self) -> None:
        pass

    def _deactivate(self) -> None:
        pass

    def infer_checked(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(self.delay)
        return {"y": feed["x"] * np.float32(2)}


def slow_double(delay: float = 0.3) -> Runner:
    return SlowDouble(delay)


# InceptionV3's inputs and outputs, for harness.serving.engines.NullRunner in scripts/serving_compare.py
IMAGE_SPEC = ModelSpec("null", (TensorSpec("image", "float32", (None, 299, 299, 3)),),
                       (TensorSpec("logits", "float32", (None, 1000)),))


SEQ_SPEC = ModelSpec("seq", (TensorSpec("x", "float32", (None, None)),), (TensorSpec("y", "float32", (None, None)),))


def seq_double(delay: float = 0.02) -> Runner:
    """SlowDouble for sequences of any length."""
    return SlowDouble(delay, SEQ_SPEC)


class KeptRows(SlowDouble):
    """2x of the rows whose first element is positive, from the whole batch (as NMS keeps
    boxes): an output whose rows are not per sample."""

    def infer_checked(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feed["x"]
        return {"y": x[x[:, 0] > 0] * np.float32(2)}


def kept_rows() -> Runner:
    return KeptRows(0.0)


class NapDouble(SlowDouble):
    """y = 2x after sleeping x[0, 0] seconds: a request chooses how long the engine takes."""

    def infer_checked(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(min(float(feed["x"].flat[0]), 30.0))
        return {"y": feed["x"] * np.float32(2)}


def nap_double() -> Runner:
    return NapDouble(0.0)


class FlakyDouble(SlowDouble):
    """SlowDouble that cannot load while the file `flag` exists: an engine that fails to start
    until something outside it is fixed."""

    def __init__(self, flag: str) -> None:
        super().__init__(0.0)
        self.flag = flag

    def _activate(self) -> None:
        from pathlib import Path

        if Path(self.flag).exists():
            raise RuntimeError(f"cannot load while {self.flag} exists")


def flaky_double(flag: str) -> Runner:
    return FlakyDouble(flag)


SERVE_SCRIPT = """import time
from harness.serving.server import InferenceServer
from harness.serving.worker import RunnerRecipe
from tests.serving_runners import SPEC
if __name__ == '__main__':
    s = InferenceServer(RunnerRecipe('tests.serving_runners:slow_double', {'delay': 0.0}), SPEC, 's', 't')
    s.start()
    print(s.url, s.worker.process.pid, flush=True)
    time.sleep(600)
"""


def serve_in_a_process(directory: Path, own_session: bool = False) -> tuple[subprocess.Popen[str], str, int]:
    """A server (slow_double, no delay) in a process of its own, as a killed one would be:
    (the process, its URL, its worker's pid).  `own_session`: in a process group of its own, so
    the test can kill the group."""
    root = Path(__file__).resolve().parents[1]
    script = directory / "serve.py"
    script.write_text(SERVE_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], cwd=root, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(root)}, start_new_session=own_session)
    assert proc.stdout is not None
    url, worker = proc.stdout.readline().split()
    return proc, url, int(worker)


# A text model in miniature: token ids and their attention mask, a pooled output that reads the
# mask (the mean of the unmasked ids) and a per-token one.
MASKED_SPEC = ModelSpec("masked", (TensorSpec("ids", "float32", (None, None)), TensorSpec("mask", "float32", (None, None))),
                        (TensorSpec("pooled", "float32", (None, 1)), TensorSpec("tokens", "float32", (None, None))))


class MaskedMean(SlowDouble):
    def infer_checked(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids, mask = feed["ids"], feed["mask"]
        pooled = (ids * mask).sum(axis=1, keepdims=True) / mask.sum(axis=1, keepdims=True)
        return {"pooled": pooled.astype(np.float32), "tokens": (ids * mask * 2).astype(np.float32)}


def masked_mean() -> Runner:
    return MaskedMean(0.0, MASKED_SPEC)
