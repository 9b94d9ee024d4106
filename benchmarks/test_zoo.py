"""A short benchmark of each model-zoo family (tests/zoo.py: BERT-style transformer, LSTM,
bidirectional GRU, squeeze-excite CNN, two SSD-style detectors and a segmenter): ONNX Runtime fp32
and int8 against TensorFlow at batch 8 (the per-image NMS detector, which takes one image, at 1),
interleaved as in test_inference.py, about a second per row.  A detector's NMS is part of its
graph on both sides, so its latency includes post-processing wherever each engine runs it.  The speedups, with their
intervals, are printed at the end of the run.  Not gated: the zoo's models are tiny, their
figures say the families run, not how fast a real one does."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from benchmarks.conftest import ZOO
from tests.zoo import FAMILIES

pytestmark = pytest.mark.harness_suite("zoo")  # --harness-suites zoo

BATCH = 8
TARGET_SECONDS = 1.0


@pytest.fixture(scope="module")
def zoo_models(harness_workspace: Any) -> dict[str, Any]:
    pytest.importorskip("tensorflow", reason="tensorflow not importable")
    from harness.sources import ModelRequest

    root = Path(harness_workspace.store.root) / "zoo-models"
    root.mkdir(parents=True, exist_ok=True)
    requests = {}
    for name, family in FAMILIES.items():
        written = [p for p in root.iterdir() if p.stem == name]  # once per artifact dir: a Keras file's
        if written:                                              # bytes differ on every save
            path = written[0]
        else:  # written aside and moved in whole, so an interrupted save is never taken for a model
            tmp = root / f".{name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            saved = family.save(tmp)
            path = saved.rename(root / saved.name)
            shutil.rmtree(tmp)
        requests[name] = ModelRequest.of(str(path), family.inputs)
    return requests


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_zoo(benchmark: Any, name: str, precision: str, zoo_models: dict[str, Any], harness_workspace: Any) -> None:
    from harness.measure import time_beside

    request = zoo_models[name]
    engine = harness_workspace.engine(request, "onnxruntime", precision)
    reference = harness_workspace.tf_runner(request)
    with engine.runner as runner, reference:
        # A model that takes one image (the per-image NMS detector, as exported for batch 1) runs at 1.
        batch = 1 if any(t.shape and t.shape[0] == 1 for t in runner.spec.inputs) else BATCH
        feed = runner.spec.check_feed(runner.spec.random_feed(batch, seed=BATCH))
        benchmark.group = f"model zoo, batch {batch}"
        beside = time_beside(benchmark, lambda: runner.infer_checked(feed), lambda: reference.infer_checked(feed),
                             2 * TARGET_SECONDS)
    ZOO.append((name if batch == BATCH else f"{name} (b{batch})", runner.name, beside.speedup))
    nms = "inside the graph, timed on each side" if "detections" in str(FAMILIES[name].outputs) else None
    benchmark.extra_info.update(model=name, engine=runner.name, batch=batch, speedup_vs_tensorflow=beside.speedup.point,
                                speedup_interval=list(beside.speedup.interval), **({"nms": nms} if nms else {}))
