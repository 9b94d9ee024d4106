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

from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from harness.artifacts import digest_json, file_digest
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
    return [f"{p}=={metadata.version(p)}" for p in ("tensorflow", "keras")]


# --- inception_v3 -------------------------------------------------------------------------

INCEPTION_SEED = 0
INCEPTION_BN_IMAGES = 16


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


class InceptionV3:
    name = "inception_v3"
    kind = "builtin"

    def key(self) -> str:
        return digest_json([self.kind, self.name, "recipe-1", INCEPTION_SEED, INCEPTION_BN_IMAGES, _versions()])

    def build_keras(self) -> Any:
        import_tensorflow()
        import keras

        keras.backend.clear_session()  # layer names (and so the graph) must not depend on what ran before
        keras.utils.set_random_seed(INCEPTION_SEED)
        model = keras.applications.InceptionV3(
            weights=None, classifier_activation=None, input_shape=(299, 299, 3), name="inception_v3"
        )
        # Batch-norm statistics of real images: one training-mode pass with momentum 0 sets
        # each layer's moving mean/variance to the batch's, layer after layer.
        bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
        for layer in bns:
            layer.momentum = 0.0
        model(sample_image_crops(INCEPTION_BN_IMAGES, seed=INCEPTION_SEED), training=True)
        for layer in bns:
            layer.momentum = 0.99
        return model

    def freeze(self) -> Frozen:
        frozen = freeze_keras(self.build_keras(), self.name, {"source": "builtin", "classifier": True})
        return _rename(frozen, inputs=["input"], outputs=["logits"])

    def representative(self) -> Representative:
        return Representative(
            {"input": sample_image_crops(4, seed=1)}, None,
            "4 random 299x299 crops of scikit-learn's sample photos (china.jpg, flower.jpg), seed 1, scaled to [-1, 1]",
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
        return digest_json([self.kind, self.name, "recipe-1", file_digest(DIGITS_WEIGHTS), _versions()])

    def build_keras(self) -> Any:
        model = build_digits_model()
        with np.load(DIGITS_WEIGHTS) as weights:
            model.set_weights([weights[f"w{i}"] for i in range(len(weights.files))])
        return model

    def freeze(self) -> Frozen:
        frozen = freeze_keras(self.build_keras(), self.name, {"source": "builtin", "classifier": True})
        return _rename(frozen, inputs=["image"], outputs=["logits"])

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
