"""Golden store: `GOLDEN_DIR/<key>/` holds representative inputs, the TensorFlow reference
outputs and `meta.json` (the frozen graph's digest, versions, seed).

Goldens are written only by `harness golden` (an explicit command), never by a test run;
a golden whose digest differs from the model's is stale and is refused with the command
that regenerates it.

Where goldens live: the built-in models' are package data (`harness/sources/data/golden/`),
so they are found from any working directory; a user's model's are under `golden/` of the
working directory (or `--golden-dir`), keyed by the model's path relative to it, so
`a/model.keras` and `b/model.keras` never share one."""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from harness.artifacts import atomic_write_bytes, atomic_write_json, digest_json
from harness.backends.base import SHAPE, Runner
from harness.compare import Comparison, Tolerance, compare, compare_output
from harness.errors import GoldenError, GoldenMissing, GoldenStale
from harness.floor import HOW, OutputFloor, unstable_warnings
from harness.policy import TolerancePolicy

DEFAULT_GOLDEN_DIR = Path("golden")  # users' models, relative to the working directory
BUILTIN_GOLDEN_DIR = Path(__file__).resolve().parent / "sources" / "data" / "golden"
FORMAT = 1
GOLDEN_DIR_DEFAULT = ("built-in models' goldens ship with the harness, found from any directory; "
                      f"other models' are under ./{DEFAULT_GOLDEN_DIR}/, keyed by their path")
# A per-output spread across samples below this share of the output's magnitude means the
# output hardly depends on the input.
MIN_RELATIVE_SPREAD = 0.01


@dataclass(frozen=True)
class Golden:
    model: str  # the model's name: what tolerance policies are keyed by
    path: Path | None  # None: a reference computed in this run, not stored (the model has no golden)
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    meta: dict[str, Any]
    classes: tuple[str, ...] = ()  # outputs the model declares as class scores
    floors: Mapping[str, OutputFloor] | None = None  # the reference's own noise floor (harness.floor)

    @property
    def description(self) -> str:
        return str(self.meta.get("inputs", "golden inputs"))

    def warnings(self, tolerances: Mapping[str, Mapping[str, Tolerance]] | None = None,
                 classes: Collection[str] = ()) -> list[str]:
        return golden_warnings(self.outputs, set(self.classes) | set(classes), tolerances)

    def check(
        self,
        runner: Runner,
        tolerance: Tolerance | Mapping[str, Tolerance] | TolerancePolicy,
        classes: Collection[str] = (),
    ) -> Comparison:
        """Run `runner` (active) on the golden inputs and compare with the golden outputs, under
        one tolerance, one per output, or a policy (resolved for this model and the runner's
        precision; its class-score outputs are added to the model's own).  The comparison
        carries warnings when the golden could not tell a broken engine from a good one."""
        all_classes = set(self.classes) | set(classes)
        detections, segmentations = [], []
        if isinstance(tolerance, TolerancePolicy):
            all_classes |= tolerance.classes(self.model)
            detections = tolerance.detections(self.model, runner.precision)
            segmentations = tolerance.segmentations(self.model, runner.precision)
            tolerance = tolerance.elementwise(runner.precision, self.model, list(self.outputs))
        per_output = (tolerance if not isinstance(tolerance, Tolerance)
                      else {o: tolerance for o in self.outputs if not o.endswith(SHAPE)})
        comparison = compare(
            runner.infer_batched(self.inputs), self.outputs, per_output, runner.backend, runner.precision,
            self.labels, all_classes, self.floors, detections, segmentations,
        )
        found = golden_warnings(self.outputs, all_classes, {runner.precision: per_output})
        found += unstable_warnings(self.floors or {}, self.outputs, {runner.precision: per_output}, all_classes)
        for warning in found:  # pytest lists these in its warnings summary, pass or fail
            warnings.warn(GoldenWarning(f"{self.where}: {warning}"), stacklevel=2)
        return replace(comparison, warnings=tuple(found), reference=self.reference)

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else f"{self.model} (no golden)"

    @property
    def reference(self) -> str:
        """What the outputs were compared with: a stored golden, or TensorFlow run in this process."""
        if self.path is None:
            return f"TensorFlow run now on {self.description} (no golden)"
        return f"golden {self.path}"


class GoldenWarning(UserWarning):
    """A golden that may not tell a broken engine from a good one."""


def golden_warnings(
    outputs: Mapping[str, np.ndarray],
    classes: Collection[str],
    tolerances: Mapping[str, Mapping[str, Tolerance]] | None = None,
) -> list[str]:
    """Why this golden may not tell a broken engine from a good one: an output that hardly
    depends on the input (the same top-1 class for every sample; a spread across samples that
    is tiny next to its magnitude), or one that an engine ignoring its input (always returning
    the mean output) would pass, under `tolerances` (precision -> output -> tolerance)."""
    found = []
    for name, ref in outputs.items():
        if name.endswith(SHAPE):  # an output's shapes per sample, not an output
            continue
        r = np.asarray(ref, np.float64)
        n = len(r)
        if n < 2:
            found.append(f"output {name!r}: 1 sample only: whether it depends on the input cannot be told; "
                         "use more samples (--samples)")
            continue
        flat = r.reshape(n, -1)
        if name in classes and len(set(flat.argmax(1).tolist())) == 1:
            found.append(f"output {name!r}: the same top-1 class ({int(flat[0].argmax())}) for all {n} samples: "
                         "an engine that always answers that class would agree with it")
        spread, magnitude = float(flat.std(axis=0).mean()), float(np.abs(flat).mean())
        if spread <= MIN_RELATIVE_SPREAD * magnitude or magnitude == 0:
            found.append(f"output {name!r} hardly depends on the input: spread across the {n} samples {spread:.3g} "
                         f"vs magnitude {magnitude:.3g}; check the model, or give inputs that exercise it")
        for precision, tols in (tolerances or {}).items():
            if name not in tols:
                continue
            constant = np.broadcast_to(r.mean(axis=0, keepdims=True), r.shape).astype(np.asarray(ref).dtype)
            if compare_output(name, constant, np.asarray(ref), tols[name], classes=name in classes).passed:
                found.append(f"output {name!r}: an engine ignoring its input (always the mean output) would pass "
                             f"the {precision} tolerance; this golden cannot catch a broken {precision} engine (give inputs "
                             "that vary more, or tighten this output's tolerance in [tool.harness])")
    return found


def golden_key(model: str, name: str, builtin: bool, cwd: Path | None = None, variant: str = "") -> str:
    """Where a model's golden lives under its root: a built-in's name, or a file's path relative
    to the working directory (a path outside it: its name and a digest of the absolute path),
    then `@variant` where one file holds several models (a SavedModel's other signature, a
    graph's other --input/--output nodes)."""
    if builtin:
        return name
    base = (cwd or Path.cwd()).resolve()
    path = (base / model).resolve()  # an absolute `model` stays as it is
    try:
        rel = path.relative_to(base)
        key = rel.as_posix() if rel.parts else name
    except ValueError:
        key = f"{name}-{digest_json(str(path))[:10]}"
    return f"{key}@{variant}" if variant else key


def golden_path(root: Path, key: str) -> Path:
    return Path(root) / key


def regenerate_hint(command: str) -> str:
    return f"regenerate it with: {command}"


def _npz(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **cast(dict[str, Any], dict(arrays)))
    return buf.getvalue()


def write_golden(
    root: Path,
    key: str,
    inputs: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    labels: np.ndarray | None,
    meta: dict[str, Any],
    floors: Mapping[str, OutputFloor] | None = None,
    floor_how: str = "",
) -> Path:
    """Replace the golden's own files one by one, never the directory (a golden of a SavedModel
    `m` and one of `m/x.keras` nest).  meta.json goes first and comes back last: an interrupted
    write leaves a golden that reads as missing, never a mix that reads as valid.  `floors`: the
    reference's noise floor (floor.npz, and its figures in meta.json)."""
    final = golden_path(root, key)
    final.mkdir(parents=True, exist_ok=True)
    (final / "meta.json").unlink(missing_ok=True)
    atomic_write_bytes(final / "inputs.npz", _npz(inputs))
    atomic_write_bytes(final / "outputs.npz", _npz(outputs))
    if floors:
        meta = {**meta, "floor": _write_floor(final, floors, floor_how)}
    else:
        (final / "floor.npz").unlink(missing_ok=True)
        meta = {k: v for k, v in meta.items() if k != "floor"}
    if labels is not None:
        buf = io.BytesIO()
        np.save(buf, labels)
        atomic_write_bytes(final / "labels.npy", buf.getvalue())
    else:
        (final / "labels.npy").unlink(missing_ok=True)
    atomic_write_json(final / "meta.json", {"format": FORMAT, **meta})
    return final


def add_floor(golden: Golden, floors: Mapping[str, OutputFloor], how: str = "") -> Path:
    """Store `floors` in an existing golden, its inputs and outputs untouched (a golden written
    before floors were): meta.json out first, back last, as in write_golden."""
    if golden.path is None:
        raise GoldenError(f"{golden.model}: no stored golden to add a noise floor to")
    meta = {k: v for k, v in golden.meta.items() if k != "floor"}
    (golden.path / "meta.json").unlink(missing_ok=True)
    atomic_write_json(golden.path / "meta.json", {**meta, "floor": _write_floor(golden.path, floors, how)})
    return golden.path


def _write_floor(directory: Path, floors: Mapping[str, OutputFloor], how: str) -> dict[str, Any]:
    """floor.npz into `directory`; the entry meta.json keeps of it."""
    atomic_write_bytes(directory / "floor.npz", _npz({k: v for f in floors.values() for k, v in f.arrays().items()}))
    return {"how": HOW + how, "outputs": {o: f.summary() for o, f in floors.items()}}


def _load_npz(path: Path, hint: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise GoldenError(f"{path}: unreadable golden data ({e}); {hint}") from e


def load_golden(root: Path, key: str, model: str, digest: str, command: str, classes: tuple[str, ...] = (),
                with_floor: bool = True) -> Golden:
    """Load the golden of `model` (stored under `key`), refusing one made from a model whose
    digest differs; `classes`: the model's class-score outputs (its spec says, not the golden)."""
    path = golden_path(root, key)
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
    outputs = _load_npz(path / "outputs.npz", hint)
    floors = _load_floors(path, meta, outputs, hint) if "floor" in meta and with_floor else None
    return Golden(model, path, _load_npz(path / "inputs.npz", hint), outputs, labels, meta, classes, floors)


def _load_floors(path: Path, meta: Mapping[str, Any], outputs: Mapping[str, np.ndarray],
                 hint: str) -> dict[str, OutputFloor]:
    """The floor.npz a meta.json announces, checked against the outputs it is the floor of."""
    arrays = _load_npz(path / "floor.npz", f"measure it again with --floor-only, or {hint}")
    floors = {}
    for name, ref in outputs.items():
        error, cosine, kept = arrays.get(name), arrays.get(f"{name}.cosine"), arrays.get(f"{name}.top1")
        if error is None or cosine is None or error.shape != np.shape(ref) or cosine.shape != (len(ref) if np.ndim(ref) else 1,):
            raise GoldenError(f"{path / 'floor.npz'}: no floor of output {name!r} of its shape {np.shape(ref)} "
                              f"(a floor from an older harness?); measure it again with --floor-only, or {hint}")
        floors[name] = OutputFloor(name, error, cosine, kept)
    return floors
