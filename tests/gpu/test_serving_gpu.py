"""The serving design's CUDA claim on a real GPU: many concurrent HTTP requests, each doing
real device work in the engine worker, which owns the CUDA context; no context errors, every
answer right, all computed by one process, one thread, one context.

    python -m pytest --noconftest -p no:cacheprovider tests/gpu -v -s
"""

from __future__ import annotations

import http.client
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from harness.backends.trt.cuda import device_count

pytestmark = pytest.mark.skipif(device_count() == 0, reason="no CUDA device (or no cuda-python)")

THREADS, REQUESTS = 32, 2000


def test_concurrent_requests_served_by_the_worker_that_owns_the_context() -> None:
    from harness.serving.server import InferenceServer
    from harness.serving.worker import RunnerRecipe
    from tests.gpu.cuda_runner import SPEC

    server = InferenceServer(RunnerRecipe("tests.gpu.cuda_runner:make"), SPEC, "affine", "cuda-test",
                             max_batch=16, max_delay_ms=1.0)
    server.start()
    try:
        host, port = server.url.removeprefix("http://").split(":")

        def one(i: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
            x = np.random.default_rng(i).standard_normal((1 + i % 4, 4)).astype(np.float32)
            body = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                           "data": x.ravel().tolist()}]}).encode()
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            conn.request("POST", "/v2/models/affine/infer", body=body)
            response = conn.getresponse()
            doc = json.loads(response.read())
            conn.close()
            if response.status != 200:
                return response.status, x, np.empty(0), np.empty(0)
            out = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in doc["outputs"]}
            return 200, x, out["y"].astype(np.float32), out["owner"]

        start = time.perf_counter()
        with ThreadPoolExecutor(THREADS) as pool:
            answers = list(pool.map(one, range(REQUESTS)))
        seconds = time.perf_counter() - start
        statuses = [a[0] for a in answers]
        assert statuses.count(200) == REQUESTS, {s: statuses.count(s) for s in set(statuses)}
        for _, x, y, _ in answers:
            np.testing.assert_array_equal(y, 2 * x + 1)
        owners = {tuple(row) for *_, owner in answers for row in owner.tolist()}
        assert len(owners) == 1, owners
        pid, thread, context = owners.pop()
        assert pid == server.worker.process.pid and pid != os.getpid()
        batches = list(server.metrics.batches)
        print(f"\n{REQUESTS} requests from {THREADS} threads in {seconds:.2f} s ({REQUESTS / seconds:.0f} req/s), "
              f"all 200 and exact; computed by worker pid {pid} (server pid {os.getpid()}), one thread {thread}, "
              f"one CUDA context 0x{context:x}; {len(batches)} engine batches, largest {max(batches)} samples")
    finally:
        server.stop()
