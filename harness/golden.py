"""Golden store: `GOLDEN_DIR/<model>/` holds representative inputs, the TensorFlow
reference outputs and `meta.json` (the frozen graph's digest, versions, seed).

Goldens are written only by `harness golden` (an explicit command), never by a test run;
a golden whose digest differs from the model's is stale and is refused with the command
that regenerates it."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from harness.artifacts import atomic_write_json, building_dir
from harness.backends.base import Runner
from harness.compare import Comparison, Tolerance, compare
from harness.errors import GoldenError, GoldenMissing, GoldenStale
from harness.policy import TolerancePolicy

DEFAULT_GOLDEN_DIR = Path("golden")
FORMAT = 1


@dataclass(frozen=True)
class Golden:
    model: str
    path: Path
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    meta: dict[str, Any]

    def check(self, runner: Runner, tolerance: Tolerance | Mapping[str, Tolerance] | TolerancePolicy) -> Comparison:
        """Run `runner` (active) on the golden inputs and compare with the golden outputs, under
        one tolerance, one per output, or a policy (resolved for this model and the runner's
        precision)."""
        if isinstance(tolerance, TolerancePolicy):
            tolerance = tolerance.for_outputs(runner.precision, self.model, list(self.outputs))
        return compare(
            runner.infer(self.inputs), self.outputs, tolerance, runner.backend, runner.precision, self.labels
        )


def golden_path(root: Path, model: str) -> Path:
    return Path(root) / model


def regenerate_hint(command: str) -> str:
    return f"regenerate it with: {command}"


def write_golden(
    root: Path,
    model: str,
    inputs: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    labels: np.ndarray | None,
    meta: dict[str, Any],
) -> Path:
    final = golden_path(root, model)
    with building_dir(final) as tmp:
        np.savez_compressed(tmp / "inputs.npz", **cast(dict[str, Any], inputs))
        np.savez_compressed(tmp / "outputs.npz", **cast(dict[str, Any], outputs))
        if labels is not None:
            np.save(tmp / "labels.npy", labels)
        atomic_write_json(tmp / "meta.json", {"format": FORMAT, "model": model, **meta})
    return final


def _load_npz(path: Path, hint: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise GoldenError(f"{path}: unreadable golden data ({e}); {hint}") from e


def load_golden(root: Path, model: str, digest: str, command: str) -> Golden:
    """Load the golden of `model`, refusing one made from a model whose digest differs."""
    path = golden_path(root, model)
    hint = regenerate_hint(command)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise GoldenMissing(f"{path}: no golden data for model {model!r}; write it with: {command}")
    try:
        meta = json.loads(meta_file.read_text())
    except ValueError as e:
        raise GoldenError(f"{meta_file}: not valid JSON ({e}); {hint}") from e
    if meta.get("model_digest") != digest:
        raise GoldenStale(
            f"{path}: stale golden: made from model digest {str(meta.get('model_digest'))[:12]} "
            f"(TensorFlow {meta.get('tensorflow', '?')}), the model now has {digest[:12]}; {hint}"
        )
    labels = None
    if (path / "labels.npy").is_file():
        try:
            labels = np.load(path / "labels.npy", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise GoldenError(f"{path / 'labels.npy'}: unreadable ({e}); {hint}") from e
    return Golden(
        model, path, _load_npz(path / "inputs.npz", hint), _load_npz(path / "outputs.npz", hint), labels, meta
    )
