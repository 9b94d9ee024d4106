"""Train the built-in `digits` classifier and write harness/sources/data/digits_cnn.npz.

    python scripts/train_digits.py

Deterministic for a given TensorFlow/Keras version (fixed seeds, one thread).  The
weights are committed so the model (and its goldens) do not change when this is not run."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from harness.artifacts import atomic_write_bytes
from harness.sources.zoo import DIGITS_WEIGHTS, build_digits_model, digits_data


def main() -> int:
    import io

    import keras
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    x_train, y_train, x_test, y_test = digits_data()
    keras.utils.set_random_seed(0)
    model = build_digits_model()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, epochs=40, batch_size=32, verbose=0, shuffle=True)
    _, train_acc = model.evaluate(x_train, y_train, verbose=0)
    _, test_acc = model.evaluate(x_test, y_test, verbose=0)
    print(f"train accuracy {train_acc:.4f}, held-out accuracy {test_acc:.4f} on {len(x_test)} digits")
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"w{i}": w for i, w in enumerate(model.get_weights())})
    atomic_write_bytes(DIGITS_WEIGHTS, buf.getvalue())
    print(f"wrote {DIGITS_WEIGHTS} ({DIGITS_WEIGHTS.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
