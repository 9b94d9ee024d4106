"""Compute the built-in InceptionV3's batch-norm statistics and write
harness/sources/data/inception_v3_bn.npz.

    python scripts/inception_bn_stats.py

A freshly initialised InceptionV3 is degenerate (its logits hardly depend on the input, so
any engine "agrees" with it).  Setting each batch-norm layer's moving mean and variance to
those of real photos, layer after layer (one training-mode pass with momentum 0 over 16
crops of scikit-learn's sample photos, on the seeded weights), makes the logits vary with
the input, so golden comparisons mean something.

Those statistics are float reductions whose last bits depend on the CPU's kernels (an AMD
and an Intel machine differ), which is why they are computed once, here, and committed:
the harness never recomputes them, so the frozen graph is the same on every machine.  Run
this only to change the recipe, then regenerate the golden (`harness golden inception_v3`)."""

from __future__ import annotations

import io
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from harness.artifacts import atomic_write_bytes
from harness.sources.zoo import (
    INCEPTION_BN_IMAGES,
    INCEPTION_BN_STATS,
    INCEPTION_SEED,
    build_inception_keras,
    sample_image_crops,
)


def main() -> int:
    import keras
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    model = build_inception_keras(bn_stats=None)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in bns:
        layer.momentum = 0.0
    model(sample_image_crops(INCEPTION_BN_IMAGES, seed=INCEPTION_SEED), training=True)
    stats = {}
    for i, layer in enumerate(bns):
        stats[f"mean{i}"] = np.asarray(layer.moving_mean, np.float32)
        stats[f"var{i}"] = np.asarray(layer.moving_variance, np.float32)
    buf = io.BytesIO()
    np.savez_compressed(buf, **stats)
    atomic_write_bytes(INCEPTION_BN_STATS, buf.getvalue())
    print(f"wrote {INCEPTION_BN_STATS} ({INCEPTION_BN_STATS.stat().st_size} bytes, {len(bns)} batch-norm layers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
