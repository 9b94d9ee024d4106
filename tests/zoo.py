"""Small instances of the architecture families people deploy, built by the tests themselves
(seeded), each written in the form a user would hand over: transformer (BERT-style three integer
inputs, dynamic sequence length, attention mask, exact and tanh GELU) as a TF2 SavedModel,
an LSTM text classifier with two outputs, a bidirectional GRU, and a squeeze-excite/swish CNN as
Keras files; an SSD-style detector with padded (combined) NMS, one with per-image NMS whose
number of boxes depends on the image, and a small segmenter, as TF2 SavedModels.  Each entry: how
to write it, the `--input` descriptions it needs and, for the task models, the output table a
user declares them with in [tool.harness]."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.policy import TolerancePolicy
from harness.tfimport import import_tensorflow

VOCAB = 50  # word-embedding rows: the inferred value range of token inputs


def _keras() -> Any:
    import_tensorflow()
    import keras

    return keras


def bert_tiny() -> Any:
    keras = _keras()
    layers, ops = keras.layers, keras.ops
    keras.utils.set_random_seed(11)
    ids = keras.Input((None,), dtype="int32", name="input_ids")
    mask = keras.Input((None,), dtype="int32", name="attention_mask")
    types = keras.Input((None,), dtype="int32", name="token_type_ids")
    x = layers.Embedding(VOCAB, 16, name="word_embeddings")(ids) + layers.Embedding(2, 16, name="type_embeddings")(types)
    x = layers.LayerNormalization()(x)
    attention = layers.MultiHeadAttention(2, 8)(x, x, attention_mask=ops.cast(mask[:, None, :], "bool"))
    x = layers.LayerNormalization()(x + attention)
    h = layers.Dense(32, activation="gelu")(x)  # exact GELU: erfc in the graph
    h = layers.Dense(16)(h)
    h = ops.gelu(h, approximate=True)  # tanh GELU
    x = layers.LayerNormalization()(x + h)
    pooled = ops.sum(x * ops.cast(mask, "float32")[:, :, None], axis=1) / (
        ops.sum(ops.cast(mask, "float32"), axis=1, keepdims=True) + 1e-6)  # masked mean
    return keras.Model([ids, mask, types], layers.Dense(3, name="logits")(pooled), name="bert_tiny")


def lstm_text() -> Any:
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(12)
    tokens = keras.Input((12,), dtype="int32", name="tokens")
    x = layers.LSTM(16)(layers.Embedding(VOCAB, 8)(tokens))
    return keras.Model(tokens, [layers.Dense(3, name="label")(x), layers.Dense(1, name="score")(x)], name="lstm_text")


def bigru_text() -> Any:
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(13)
    tokens = keras.Input((12,), dtype="int32", name="tokens")
    x = layers.Bidirectional(layers.GRU(8))(layers.Embedding(VOCAB, 8)(tokens))
    return keras.Model(tokens, layers.Dense(3, name="logits")(x), name="bigru_text")


def se_swish() -> Any:
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(14)
    image = keras.Input((16, 16, 3), name="image")
    x = layers.Rescaling(0.5, offset=0.1)(image)  # constants ONNX Runtime quantizes and TensorRT refused
    x = layers.Conv2D(8, 3, padding="same", activation="swish")(x)
    s = layers.GlobalAveragePooling2D(keepdims=True)(x)
    s = layers.Dense(8, activation="sigmoid")(layers.Dense(2, activation="relu")(s))
    x = layers.Conv2D(8, 3, padding="same", activation="swish")(layers.Multiply()([x, s]))
    return keras.Model(image, layers.Dense(4, name="logits")(layers.Flatten()(x)), name="se_swish")


def _save_keras(model: Any, directory: Path) -> Path:
    path = directory / f"{model.name}.keras"
    model.save(path)
    return path


def _export_saved_model(model: Any, directory: Path) -> Path:
    path = directory / model.name
    model.export(path, verbose=False)  # TF2 SavedModel, serving_default signature
    return path


def _task_model(write: Callable[[Path], Path]) -> Callable[[Any, Path], Path]:
    """A writer for the task models of tests/models.py (tf.Module SavedModels, built as written)."""
    return lambda _model, directory: write(directory)


def _no_build() -> None:
    return None


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[[], Any]
    write: Callable[[Any, Path], Path]
    inputs: tuple[str, ...] = ()  # --input descriptions the model needs (dynamic dims' ranges)
    outputs: Mapping[str, Any] = field(default_factory=dict)  # its [tool.harness.model.NAME.output] table

    def save(self, directory: Path) -> Path:
        return self.write(self.build(), directory)

    def policy(self) -> TolerancePolicy:
        """The tolerance policy a user of this model writes in [tool.harness] (its task outputs)."""
        return TolerancePolicy.from_table({"model": {self.name: {"output": dict(self.outputs)}}} if self.outputs else {})


def _ssd(directory: Path) -> Path:
    from tests.models import write_ssd_saved_model

    return write_ssd_saved_model(directory)


def _ssd_per_image(directory: Path) -> Path:
    from tests.models import write_per_image_nms_saved_model

    return write_per_image_nms_saved_model(directory)


def _segmenter(directory: Path) -> Path:
    from tests.models import write_segmentation_saved_model

    return write_segmentation_saved_model(directory)


FAMILIES = {
    f.name: f
    for f in (
        Family("bert_tiny", bert_tiny, _export_saved_model,
               ("input_ids:?x1/16/32", "attention_mask:?x1/16/32", "token_type_ids:?x1/16/32")),
        Family("lstm_text", lstm_text, _save_keras),
        Family("bigru_text", bigru_text, _save_keras),
        Family("se_swish", se_swish, _save_keras),
        # Detectors and a segmenter, judged as what they are (harness.detections, harness.segmentation).
        Family("ssd", _no_build, _task_model(_ssd), outputs={"boxes": {
            "detections": {"scores": "scores", "classes": "classes", "valid": "valid"}}}),
        Family("ssd_per_image", _no_build, _task_model(_ssd_per_image), outputs={"boxes": {
            "detections": {"scores": "scores", "classes": "classes"}}}),
        Family("segmenter", _no_build, _task_model(_segmenter), outputs={"logits": {"segmentation": True}}),
    )
}


def write_detector(directory: Path, combined: bool = True) -> Path:
    """A detection head as a TF2 SavedModel: boxes and class scores from a tiny conv net, then
    NMS.  `combined`: TensorFlow's batched, padded CombinedNonMaxSuppression (fixed-size
    outputs, what TensorRT deployments use); else plain NonMaxSuppressionV3 on one image's boxes,
    whose output length depends on the data."""
    tf = import_tensorflow()
    import numpy as np

    rng = np.random.default_rng(15)

    class Detector(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = tf.Variable(rng.standard_normal((3, 3, 3, 8)).astype(np.float32) * 0.3)
            self.box = tf.Variable(rng.standard_normal((8, 4)).astype(np.float32))
            self.cls = tf.Variable(rng.standard_normal((8, 3)).astype(np.float32))

        def heads(self, image: Any) -> tuple[Any, Any]:
            h = tf.nn.relu(tf.nn.conv2d(image, self.conv, 2, "SAME"))  # (N, 4, 4, 8): 16 anchors
            h = tf.reshape(h, [-1, 16, 8])
            centers = tf.sigmoid(tf.matmul(h, self.box))
            boxes = tf.concat([centers[..., :2] - 0.2, centers[..., :2] + 0.2], axis=-1)
            return boxes, tf.sigmoid(tf.matmul(h, self.cls))

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32, name="image")])
        def combined(self, image: Any) -> dict[str, Any]:
            boxes, scores = self.heads(image)
            out = tf.image.combined_non_max_suppression(boxes[:, :, None, :], scores, 5, 5, 0.5, 0.3,
                                                        clip_boxes=False)
            return {"boxes": out.nmsed_boxes, "scores": out.nmsed_scores, "classes": out.nmsed_classes,
                    "detections": out.valid_detections}

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32, name="image")])
        def single(self, image: Any) -> dict[str, Any]:
            boxes, scores = self.heads(image)
            keep = tf.image.non_max_suppression(boxes[0], tf.reduce_max(scores[0], axis=-1), 10, 0.5, 0.3)
            return {"kept": tf.gather(boxes[0], keep)[None]}

    model = Detector()
    path = directory / ("detector" if combined else "detector_single")
    tf.saved_model.save(model, str(path), signatures={"serving_default": model.combined if combined else model.single})
    return path


def overflowing_mlp(scale: float = 1e5) -> Any:
    """A dense layer whose outputs reach ~3e5, past float16's 65504, scaled back by the next
    layer: fp32 is fine, fp16 overflows in `wide` (`scale=1`: the same model, healthy)."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(21)
    x = keras.Input((8,), name="x")
    h = layers.Dense(16, name="wide")(x)
    h = layers.Rescaling(1 / scale, name="shrink")(h)
    h = layers.Dense(16, activation="tanh", name="mid")(h)
    model = keras.Model(x, layers.Dense(3, name="logits")(h), name="overflowing_mlp" if scale > 1 else "healthy_mlp")
    wide = model.get_layer("wide")
    kernel, bias = wide.get_weights()
    wide.set_weights([kernel * scale, bias])
    return model


def branchy_mlp() -> Any:
    """Feature 0 feeds its own branch (`branch`), which dominates the logits; calibrated on data
    whose feature 0 is 100 times smaller than what it later sees, that branch's int8 ranges are
    wrong and everything else's right."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(22)
    x = keras.Input((8,), name="x")
    branch = layers.Dense(8, activation="relu", name="branch")(layers.Cropping1D((0, 7))(layers.Reshape((8, 1))(x)))
    main = layers.Dense(8, activation="relu", name="main")(x)
    h = layers.Concatenate()([layers.Flatten()(branch), main])
    model = keras.Model(x, layers.Dense(3, name="logits")(h), name="branchy_mlp")
    layer = model.get_layer("branch")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * 5, bias])
    return model
