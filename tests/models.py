"""Small models in every saved form the harness accepts, written into a directory.

They stand in for a user's models: a TF1 checkpoint with classic node names, a frozen .pb,
a SavedModel with a non-default two-output signature, .keras and .h5 files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from harness.tfimport import import_tensorflow


def write_tf1_checkpoint(directory: Path) -> Path:
    """TF1 graph with a fixed batch of 1 (as classic graphs have), input `input`,
    output `Logits/SpatialSqueeze`; returns the checkpoint prefix."""
    tf = import_tensorflow()
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 8, 8, 3], name="input")
        init = tf.compat.v1.random_normal_initializer(seed=1)
        w = tf.compat.v1.get_variable("Conv/weights", [3, 3, 3, 4], initializer=init)
        b = tf.compat.v1.get_variable("Conv/biases", [4], initializer=init)
        h = tf.nn.relu(tf.nn.conv2d(x, w, 1, "SAME") + b)
        pooled = tf.reduce_mean(h, axis=[1, 2], keepdims=True)
        fc = tf.compat.v1.get_variable("Logits/weights", [1, 1, 4, 5], initializer=init)
        logits = tf.nn.conv2d(pooled, fc, 1, "VALID")
        tf.squeeze(logits, [1, 2], name="Logits/SpatialSqueeze")
        tf.compat.v1.train.GradientDescentOptimizer(0.1)  # training leftovers a frozen graph must drop
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            prefix = directory / "model.ckpt"
            saver.save(sess, str(prefix))
    return prefix


def write_frozen_pb(directory: Path) -> Path:
    tf = import_tensorflow()
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 5], name="x")
        w = tf.constant(np.linspace(-1, 1, 15, dtype=np.float32).reshape(5, 3))
        tf.nn.tanh(tf.matmul(x, w), name="y")
    path = directory / "frozen.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return path


def write_saved_model(directory: Path) -> Path:
    """serving_default -> {scores}; two_heads -> {probabilities, embedding}."""
    tf = import_tensorflow()
    rng = np.random.default_rng(3)

    class Model(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(rng.standard_normal((6, 4)).astype(np.float32))
            self.v = tf.Variable(rng.standard_normal((6, 3)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="features")])
        def serve(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"scores": tf.matmul(features, self.w)}

        @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="features")])
        def two_heads(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
            return {
                "probabilities": tf.nn.softmax(tf.matmul(features, self.w)),
                "embedding": tf.tanh(tf.matmul(features, self.v)),
            }

    model = Model()
    path = directory / "saved_model"
    tf.saved_model.save(model, str(path), signatures={"serving_default": model.serve, "two_heads": model.two_heads})
    return path


def _keras_model(seed: int):  # type: ignore[no-untyped-def]
    import_tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((6, 6, 2), name="pixels"),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )


def write_keras(directory: Path, seed: int = 0, name: str = "model.keras") -> Path:
    path = directory / name
    _keras_model(seed).save(path)
    return path


def with_changed_weight(src: Path, dst: Path, pick: Callable[[Any], Any], change: Callable[[Any], Any]) -> Path:
    """Copy of an ONNX model with one initializer (`pick(model)`) replaced by `change(array)`:
    the broken variants the negative controls need."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    tensor = pick(model)
    array = numpy_helper.to_array(tensor)
    tensor.CopyFrom(numpy_helper.from_array(change(array).astype(array.dtype), tensor.name))
    onnx.save(model, str(dst))
    return dst


def write_cancelling_softmax_pb(directory: Path, common: float = 1e8) -> Path:
    """An ill-conditioned model, as an untrained network with huge logits is: every logit
    carries the same huge term (`common` times x.u) that the softmax cancels, so what decides
    the output is smaller than the rounding of that term.  Input x: ?x16, output `probs`: a
    softmax saturated by logits ~1e8 whose differences are ~10-40."""
    tf = import_tensorflow()
    rng = np.random.default_rng(7)
    u = rng.standard_normal((16, 1)) / 4
    w = (common * u @ np.ones((1, 10)) + 10 * rng.standard_normal((16, 10))).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 16], name="x")
        tf.nn.softmax(tf.matmul(x, tf.constant(w)), name="probs")
    path = directory / "cancelling.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return path


def _ssd_module(seed: int) -> Any:
    """The SSD-style detector's body: a strided conv backbone and per-anchor box offsets and class
    scores, as a tf.Module subclass whose `heads(image)` gives boxes (N, 16, 4) and scores
    (N, 16, 3); the detectors below differ in their NMS."""
    tf = import_tensorflow()
    rng = np.random.default_rng(seed)

    class Body(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = tf.Variable(rng.standard_normal((3, 3, 3, 16)).astype(np.float32) * 0.3)
            self.box = tf.Variable(rng.standard_normal((16, 4)).astype(np.float32) * 0.3)
            self.cls = tf.Variable(rng.standard_normal((16, 3)).astype(np.float32) * 0.3)

        def heads(self, image: Any) -> tuple[Any, Any]:
            n = tf.shape(image)[0]
            feats = tf.nn.relu(tf.reshape(tf.nn.conv2d(image, self.conv, 4, "VALID"), [n, -1, 16]))
            raw = feats @ self.box
            # boxes of 0.2-0.6 of the image around each anchor; scores spread over (0, 1), as a
            # trained head's are (saturated, near-tied scores would make NMS's choice a coin toss)
            centers, sizes = tf.sigmoid(raw[..., :2]), 0.2 + 0.4 * tf.sigmoid(raw[..., 2:])
            return tf.concat([centers - sizes / 2, centers + sizes / 2], -1), tf.sigmoid(feats @ self.cls - 2.0)

    return Body


def write_ssd_saved_model(directory: Path, seed: int = 0) -> Path:
    """A small SSD-style detector as a TF2 SavedModel (a tf.Module) with
    tf.image.combined_non_max_suppression as the head (padded to 20 detections, with an int32
    count of valid rows).  Input image: ?x32x32x3; outputs boxes (?, 20, 4), scores (?, 20),
    classes (?, 20), valid (?)."""
    tf = import_tensorflow()

    class Detector(_ssd_module(seed)):  # type: ignore[misc]
        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="image")])
        def __call__(self, image: Any) -> dict[str, Any]:
            boxes, scores = self.heads(image)
            b, s, c, v = tf.image.combined_non_max_suppression(boxes[:, :, None, :], scores, 10, 20, 0.5, 0.3)
            return {"boxes": b, "scores": s, "classes": c, "valid": v}

    path = directory / "ssd"
    tf.saved_model.save(Detector(), str(path))
    return path


def write_per_image_nms_saved_model(directory: Path, seed: int = 0) -> Path:
    """The SSD-style detector with the head TF Object Detection API exports of batch 1 use
    instead: plain per-image NMS (tf.image.non_max_suppression), so the number of boxes depends
    on the image.  Input image: 1x32x32x3; outputs boxes (K, 4), scores (K,), classes (K,) int32,
    K up to 20."""
    tf = import_tensorflow()

    class Detector(_ssd_module(seed)):  # type: ignore[misc]
        @tf.function(input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.float32, name="image")])
        def __call__(self, image: Any) -> dict[str, Any]:
            boxes, scores = self.heads(image)
            boxes, scores = boxes[0], scores[0]
            best, label = tf.reduce_max(scores, -1), tf.argmax(scores, -1, output_type=tf.int32)
            keep = tf.image.non_max_suppression(boxes, best, 20, 0.5, 0.3)
            return {"boxes": tf.gather(boxes, keep), "scores": tf.gather(best, keep), "classes": tf.gather(label, keep)}

    path = directory / "ssd_per_image"
    tf.saved_model.save(Detector(), str(path))
    return path


def write_segmentation_saved_model(directory: Path, seed: int = 0, classes: int = 4) -> Path:
    """A small fully-convolutional segmenter as a TF2 SavedModel: two 3x3 convolutions and a 1x1
    head to per-pixel class scores.  Input image: ?x32x32x3; output logits (?, 32, 32, classes).
    Its classes follow the image's colour and local texture, so the class map has regions, not
    noise, and near-ties only on their borders, as a trained segmenter's."""
    tf = import_tensorflow()
    rng = np.random.default_rng(seed)

    class Segmenter(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = tf.Variable(rng.standard_normal((3, 3, 3, 16)).astype(np.float32) * 0.4)
            self.c2 = tf.Variable(rng.standard_normal((3, 3, 16, 16)).astype(np.float32) * 0.2)
            self.head = tf.Variable(rng.standard_normal((1, 1, 16, classes)).astype(np.float32) * 0.6)

        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="image")])
        def __call__(self, image: Any) -> dict[str, Any]:
            x = tf.nn.relu(tf.nn.conv2d(image, self.c1, 1, "SAME"))
            x = tf.nn.relu(tf.nn.conv2d(x, self.c2, 1, "SAME"))
            return {"logits": tf.nn.conv2d(x, self.head, 1, "SAME")}

    path = directory / "segmenter"
    tf.saved_model.save(Segmenter(), str(path))
    return path
