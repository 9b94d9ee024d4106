"""Calibration data for INT8: representative model inputs, from a directory of images or a
.npy/.npz file the user gives, or else the model's own default (`load_calibration`'s
`default`): a built-in model's calibration split, never its golden inputs, or seeded
synthetic inputs for a user's model, flagged as such all the way to the report.

Images go through a preprocessing function (a preset name or `module:function`); arrays
are taken as model inputs as they are. Everything is validated against the model's spec
here, so a wrong shape or dtype is a clear error before any calibration runs."""

from __future__ import annotations

import importlib
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.artifacts import digest_bytes
from harness.errors import InputError, UsageError
from harness.spec import ModelSpec

METHODS = ("minmax", "entropy", "percentile")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")

Preprocess = Callable[[np.ndarray], np.ndarray]  # HxWxC uint8 RGB (already resized) -> HxWxC


def _inception(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def _unit(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / np.float32(255.0)


PREPROCESS: dict[str, Preprocess] = {"inception": _inception, "unit": _unit}
DEFAULT_PREPROCESS = "inception"  # [-1, 1], what the built-in InceptionV3 takes


def preprocess_function(name: str) -> Preprocess:
    """A preset (inception: [-1, 1]; unit: [0, 1]) or an importable `module:function`."""
    if name in PREPROCESS:
        return PREPROCESS[name]
    module, _, attr = name.partition(":")
    if not module or not attr:
        raise UsageError(f"preprocess {name!r}: use one of {sorted(PREPROCESS)} or module:function")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise UsageError(f"preprocess {name!r}: cannot import it ({e})") from e
    if not callable(fn):
        raise UsageError(f"preprocess {name!r}: not a function")
    return fn  # type: ignore[no-any-return]


SYNTHETIC_SAMPLES = 32  # synthetic data prove nothing about accuracy: enough to get ranges, no more
SYNTHETIC_SEED = 20261127  # not the golden's seed (0): calibration is never the evaluation set


@dataclass(frozen=True)
class CalibrationData:
    feed: dict[str, np.ndarray]  # every input, N samples along the batch dim
    description: str
    synthetic: bool = False  # seeded random inputs, not representative data

    @classmethod
    def synthetic_for(cls, spec: ModelSpec, samples: int) -> CalibrationData:
        n = min(samples, SYNTHETIC_SAMPLES)
        return cls(spec.random_feed(n, SYNTHETIC_SEED),
                   f"{n} seeded synthetic samples (numpy default_rng({SYNTHETIC_SEED}); no calibration data given)",
                   synthetic=True)

    @property
    def samples(self) -> int:
        return len(next(iter(self.feed.values())))

    def digest(self) -> str:
        """Of the data themselves (names, dtypes, shapes, bytes), not of where they came from."""
        parts = [f"{k}|{v.dtype}|{v.shape}".encode() + np.ascontiguousarray(v).tobytes() for k, v in sorted(self.feed.items())]
        return digest_bytes(b"\0".join(parts))

    def batches(self, size: int) -> list[dict[str, np.ndarray]]:
        return [{k: v[i : i + size] for k, v in self.feed.items()} for i in range(0, self.samples, size)]


def _validated(spec: ModelSpec, feed: Mapping[str, np.ndarray], origin: str) -> dict[str, np.ndarray]:
    try:
        checked = spec.check_feed(feed)
    except InputError as e:
        raise InputError(f"calibration data {origin}: {e}") from e
    if any(len(v) == 0 for v in checked.values()):
        raise InputError(f"calibration data {origin}: no samples; give at least one")
    return checked


def _load_arrays(path: Path, spec: ModelSpec) -> dict[str, np.ndarray]:
    try:
        if path.suffix == ".npy":
            if len(spec.inputs) != 1:
                raise InputError(
                    f"calibration data {path}: a .npy holds one array but the model takes {spec.input_names}; "
                    "use an .npz with one array per input name"
                )
            return {spec.inputs[0].name: np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"calibration data {path}: unreadable ({e})") from e


def _load_images(directory: Path, spec: ModelSpec, preprocess: Preprocess) -> dict[str, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    if len(spec.inputs) != 1 or len(spec.inputs[0].shape) != 4:
        raise InputError(
            f"calibration data {directory}: images need a model with one NHWC input; "
            f"{spec.name!r} takes {spec.input_names}; give an .npz instead"
        )
    t = spec.inputs[0]
    _, height, width, channels = t.shape
    if height is None or width is None or channels not in (1, 3):
        raise InputError(f"calibration data {directory}: input {t.name!r} has no fixed HxWx(1|3) size to resize to")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    images = []
    for f in files:
        try:
            with Image.open(f) as opened:
                im = opened.convert("RGB" if channels == 3 else "L").resize((width, height), Image.Resampling.BILINEAR)
                pixels = np.asarray(im, dtype=np.uint8).reshape(height, width, channels)
        except (OSError, UnidentifiedImageError) as e:
            raise InputError(f"calibration image {f}: unreadable ({e})") from e
        images.append(np.asarray(preprocess(pixels)).astype(t.dtype, copy=False))
    if not images:
        raise InputError(f"calibration data {directory}: no images ({', '.join(IMAGE_SUFFIXES)}) in it")
    return {t.name: np.stack(images)}


def load_calibration(
    spec: ModelSpec,
    source: Path | None,
    default: CalibrationData | None,
    samples: int,
    preprocess: str = DEFAULT_PREPROCESS,
) -> CalibrationData:
    """The first `samples` representative inputs from `source`, else from `default` (the
    model's own calibration data; synthetic inputs where it has none)."""
    if samples < 1:
        raise UsageError(f"calibration samples {samples}: must be >= 1")
    if source is None:
        default = default or CalibrationData.synthetic_for(spec, samples)
        feed, origin, said, synthetic = dict(default.feed), default.description, f": {default.description}", default.synthetic
    else:
        source = Path(source)
        origin, said, synthetic = str(source), f" from {source}", False
        if source.is_dir():
            feed = _load_images(source, spec, preprocess_function(preprocess))
        elif source.suffix in (".npy", ".npz") and source.is_file():
            feed = _load_arrays(source, spec)
        elif not source.exists():
            raise InputError(f"calibration data {source}: no such file or directory")
        else:
            raise InputError(f"calibration data {source}: give a directory of images, a .npy or an .npz file")
    checked = _validated(spec, feed, origin)
    available = len(next(iter(checked.values())))
    taken = min(samples, available)
    return CalibrationData({k: v[:taken] for k, v in checked.items()}, f"{taken} of {available} samples{said}", synthetic)
