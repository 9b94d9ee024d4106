"""Built-in models: the defaults that work with no files of the user's.

- `inception_v3`: Keras InceptionV3 (299x299x3 NHWC, 1000 logits, no softmax) with seeded
  weights, because pretrained weights cannot be downloaded everywhere.  A freshly
  initialised InceptionV3 is degenerate (its logits hardly depend on the input, so any
  engine "agrees" with it); recomputing the batch-norm statistics on real images after the
  seeded init makes the logits vary with the input, so golden comparisons mean something.
- `digits`: a small CNN trained on scikit-learn's handwritten digits (8x8, 10 classes);
  the trained weights are committed (`data/digits_cnn.npz`, made by
  `scripts/train_digits.py`) and the held-out split gives labeled data for accuracy."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.artifacts import digest_json, file_digest
from harness.errors import ModelSourceError
from harness.machine import installed_version
from harness.sources import Frozen
from harness.sources.graph import freeze_keras
from harness.tfimport import import_tensorflow

DATA = Path(__file__).with_name("data")
DIGITS_WEIGHTS = DATA / "digits_cnn.npz"


@dataclass(frozen=True)
class Representative:
    """Inputs that look like what the model sees in production (and labels, if known)."""

    feed: dict[str, np.ndarray]
    labels: np.ndarray | None
    description: str


def _versions() -> list[str]:
    # numpy too: InceptionV3's weights come from its generator.
    return [f"{p}=={installed_version(p)}" for p in ("tensorflow", "keras", "numpy")]


# --- inception_v3 -------------------------------------------------------------------------

INCEPTION_SEED = 0
INCEPTION_BN_IMAGES = 16
INCEPTION_BN_STATS = DATA / "inception_v3_bn.npz"
INCEPTION_GOLDEN_SEED = 1  # the golden inputs' crops
INCEPTION_GOLDEN_CROPS = 8
INCEPTION_CALIBRATION_SEED = 2  # int8 calibration crops: never the golden ones
INCEPTION_CALIBRATION_CROPS = 32


def sample_image_crops(count: int, seed: int, size: int = 299) -> np.ndarray:
    """Random crops (and flips) of the photos scikit-learn ships, scaled to [-1, 1] as
    InceptionV3 expects."""
    from sklearn.datasets import load_sample_images

    images = load_sample_images().images
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(count):
        im = images[i % len(images)]
        y = int(rng.integers(0, im.shape[0] - size + 1))
        x = int(rng.integers(0, im.shape[1] - size + 1))
        crop = im[y : y + size, x : x + size]
        crops.append(crop[:, ::-1] if rng.random() < 0.5 else crop)
    return (np.stack(crops).astype(np.float32) / np.float32(127.5)) - np.float32(1.0)


def glorot_uniform(shapes: Sequence[tuple[int, ...]], seed: int) -> list[np.ndarray]:
    """Glorot-uniform float32 arrays of `shapes`, in order, from one numpy generator.

    Bit-identical on every machine: the bits come from PCG64, and the only float work is
    exact (2u - 1), one correctly rounded multiplication and a correctly rounded cast.
    Keras's own initializers run TensorFlow kernels, whose float paths depend on the CPU."""
    rng = np.random.default_rng(seed)
    arrays = []
    for shape in shapes:
        receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
        fan_in, fan_out = receptive * shape[-2], receptive * shape[-1]
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        arrays.append(((rng.random(shape) * 2.0 - 1.0) * limit).astype(np.float32))
    return arrays


def inception_weights(model: Any, bn_stats: Mapping[str, np.ndarray] | None) -> list[np.ndarray]:
    """Every weight of a Keras InceptionV3, in `model.weights` order: seeded Glorot-uniform
    kernels, zero biases and betas, and the batch-norm statistics of `bn_stats` (`mean{i}`,
    `var{i}` of the i-th BatchNormalization; None: mean 0, variance 1, what the script that
    computes them starts from)."""
    kernels = iter(glorot_uniform([tuple(w.shape) for w in model.weights if w.path.endswith("/kernel")],
                                  INCEPTION_SEED))
    bn = -1
    weights = []
    for w in model.weights:
        kind = w.path.rsplit("/", 1)[-1]
        shape = tuple(w.shape)
        if kind == "kernel":
            weights.append(next(kernels))
        elif kind in ("bias", "beta"):
            weights.append(np.zeros(shape, np.float32))
        elif kind in ("moving_mean", "moving_variance"):
            bn += kind == "moving_mean"
            key = f"{'mean' if kind == 'moving_mean' else 'var'}{bn}"
            if bn_stats is None:
                weights.append(np.zeros(shape, np.float32) if kind == "moving_mean" else np.ones(shape, np.float32))
            else:
                weights.append(np.asarray(bn_stats[key], np.float32).reshape(shape))
        else:
            raise ModelSourceError(f"inception_v3: unexpected weight {w.path!r} (Keras {installed_version('keras')}); "
                                   "the built-in recipe knows kernel, bias, beta and batch-norm statistics")
    return weights


def build_inception_keras(bn_stats: Mapping[str, np.ndarray] | None) -> Any:
    import_tensorflow()
    import keras

    keras.backend.clear_session()  # layer names (and so the graph) must not depend on what ran before
    model = keras.applications.InceptionV3(
        weights=None, classifier_activation=None, input_shape=(299, 299, 3), name="inception_v3"
    )
    model.set_weights(inception_weights(model, bn_stats))
    return model


class InceptionV3:
    """Seeded weights (numpy, see `glorot_uniform`) and batch-norm statistics of real photos,
    committed in `data/inception_v3_bn.npz` (made by `scripts/inception_bn_stats.py`): the
    statistics come from float reductions whose last bits depend on the CPU, so they are
    data, computed once, not recomputed on every machine.  Nothing in the frozen graph
    depends on float work done here, so its bytes are the same on every CPU."""

    name = "inception_v3"
    kind = "builtin"

    def key(self) -> str:
        return digest_json([self.kind, self.name, "recipe-2", INCEPTION_SEED, file_digest(INCEPTION_BN_STATS),
                            _versions()])

    def build_keras(self) -> Any:
        with np.load(INCEPTION_BN_STATS, allow_pickle=False) as data:
            stats = {k: data[k] for k in data.files}
        return build_inception_keras(stats)

    def freeze(self) -> Frozen:
        frozen = freeze_keras(self.build_keras(), self.name, {"source": "builtin", "classes": ["logits"]})
        return _rename(frozen, inputs=["input"], outputs=["logits"])

    def representative(self) -> Representative:
        return Representative(
            {"input": sample_image_crops(INCEPTION_GOLDEN_CROPS, seed=INCEPTION_GOLDEN_SEED)}, None,
            f"{INCEPTION_GOLDEN_CROPS} random 299x299 crops of scikit-learn's sample photos (china.jpg, flower.jpg), seed "
            f"{INCEPTION_GOLDEN_SEED}, scaled to [-1, 1]",
        )

    def calibration(self) -> Representative:
        return Representative(
            {"input": sample_image_crops(INCEPTION_CALIBRATION_CROPS, seed=INCEPTION_CALIBRATION_SEED)}, None,
            f"{INCEPTION_CALIBRATION_CROPS} other random crops of the same photos (seed {INCEPTION_CALIBRATION_SEED}; "
            f"the golden's are seed {INCEPTION_GOLDEN_SEED})",
        )


# --- digits --------------------------------------------------------------------------------

DIGITS_SPLIT_SEED = 0


def digits_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): scikit-learn's 1797 8x8 digits, 20% held out,
    stratified; pixels scaled from 0..16 to [0, 1], NHWC."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / np.float32(16.0))[..., None]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=DIGITS_SPLIT_SEED, stratify=y
    )
    return x_train, y_train, x_test, y_test


def build_digits_model() -> Any:
    import_tensorflow()
    import keras

    keras.backend.clear_session()
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64, activation="relu", name="fc1")(x)
    logits = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, logits, name="digits")


class Digits:
    name = "digits"
    kind = "builtin"

    def key(self) -> str:
        return digest_json([self.kind, self.name, "recipe-2", file_digest(DIGITS_WEIGHTS), _versions()])

    def build_keras(self) -> Any:
        model = build_digits_model()
        with np.load(DIGITS_WEIGHTS) as weights:
            model.set_weights([weights[f"w{i}"] for i in range(len(weights.files))])
        return model

    def freeze(self) -> Frozen:
        frozen = freeze_keras(self.build_keras(), self.name, {"source": "builtin", "classes": ["logits"]})
        return _rename(frozen, inputs=["image"], outputs=["logits"])

    def calibration(self) -> Representative:
        x_train, _, _, _ = digits_data()
        return Representative(
            {"image": x_train}, None,
            f"the {len(x_train)} training digits (the golden is the held-out split, never calibrated on)",
        )

    def representative(self) -> Representative:
        _, _, x_test, y_test = digits_data()
        return Representative(
            {"image": x_test}, y_test,
            f"the {len(x_test)} held-out digits of scikit-learn's load_digits (20%, stratified, seed {DIGITS_SPLIT_SEED})",
        )


def _rename(frozen: Frozen, inputs: list[str], outputs: list[str]) -> Frozen:
    from dataclasses import replace

    spec = frozen.spec
    spec = replace(
        spec,
        inputs=tuple(replace(t, name=n) for t, n in zip(spec.inputs, inputs, strict=True)),
        outputs=tuple(replace(t, name=n) for t, n in zip(spec.outputs, outputs, strict=True)),
    )
    return Frozen(frozen.graph_def, spec)


MODELS: dict[str, Callable[[], InceptionV3 | Digits]] = {"inception_v3": InceptionV3, "digits": Digits}
