"""Serving load test: the model under test behind the HTTP endpoint (its engine in a worker
process), closed-loop clients on loopback at each concurrency (--harness-serve-concurrency),
dynamic batching off and on, and the serving overhead over the engine's own latency.

The pytest-benchmark row times one request at a time (concurrency 1); the sweep's table is
printed at the end of the run and kept in the row's extra_info."""

from __future__ import annotations

import http.client
import time
from typing import Any

import numpy as np
import pytest

from benchmarks.conftest import SERVING
from harness.errors import BackendUnavailable, HarnessError
from harness.serving.engines import recipe_for
from harness.serving.loadtest import format_table, infer_body, run_load, sweep
from harness.serving.server import InferenceServer

BATCHING = {"off": (1, 0.0), "on": (8, 5.0)}  # (max batch, max delay ms)
BURST = 512


@pytest.mark.parametrize("batching", list(BATCHING))
def test_serving(benchmark: Any, batching: str, pytestconfig: pytest.Config, harness_workspace: Any,
                 harness_request: Any) -> None:
    backend, _, precision = pytestconfig.getoption("harness_serve_engine").partition("-")
    try:
        engine = harness_workspace.engine(harness_request, backend, precision)
    except BackendUnavailable as e:  # an engine this host cannot build or run: a skip, with why
        pytest.skip(f"{backend}-{precision}: {e.reason}")
    except HarnessError as e:  # anything else is a failure of the run, not a reason to skip
        pytest.fail(f"{backend}-{precision}: {type(e).__name__}: {e}", pytrace=False)
    max_batch, delay = BATCHING[batching]
    with engine.runner as runner:  # the engine's own latency, batch 1, in this process
        feed = runner.spec.check_feed(runner.spec.random_feed(1, seed=0))
        runner.infer_checked(feed)
        times = []
        for _ in range(30):
            start = time.perf_counter()
            runner.infer_checked(feed)
            times.append(time.perf_counter() - start)
    engine_p50 = float(np.median(times)) * 1e3

    spec = engine.spec
    with InferenceServer(recipe_for(engine.runner), spec, spec.name, f"harness-{engine.id}", max_batch=max_batch,
                         max_delay_ms=delay) as server:
        host, port = server.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        meta_conn = http.client.HTTPConnection(host, int(port), timeout=60)
        meta_conn.request("GET", f"/v2/models/{spec.name}")
        import json

        body, headers = infer_body(json.loads(meta_conn.getresponse().read()), 1)
        meta_conn.close()

        def one() -> None:
            conn.request("POST", f"/v2/models/{spec.name}/infer", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            assert response.status == 200

        benchmark.group = f"{spec.name} serving (HTTP, one request at a time)"
        benchmark.pedantic(one, rounds=30, iterations=1, warmup_rounds=3)
        conn.close()
        results = sweep(server.url, spec.name, pytestconfig.getoption("harness_serve_concurrency"),
                        pytestconfig.getoption("harness_serve_seconds"), max_requests=2000)
        # A burst: BURST clients connecting at the same moment (the backlog of 5 once refused them).
        results.append(run_load(server.url, spec.name, BURST, pytestconfig.getoption("harness_serve_seconds"),
                                max_requests=100_000))
    serving_p50 = float(np.median(benchmark.stats.stats.data)) * 1e3
    title = (f"{spec.name} {engine.id} served, dynamic batching {batching}"
             + (f" (up to {max_batch}, {delay:g} ms)" if batching == "on" else "")
             + f"; engine alone p50 {engine_p50:.2f} ms, one request over HTTP p50 {serving_p50:.2f} ms "
             f"(serving overhead {serving_p50 - engine_p50:.2f} ms, x{serving_p50 / engine_p50:.2f})")
    SERVING.append(format_table(results, title))
    benchmark.extra_info.update(
        model=spec.name, served_engine=engine.id, batching=batching, engine_p50_ms=engine_p50,
        serving_p50_ms=serving_p50, serving_overhead_ms=serving_p50 - engine_p50,
        sweep=[{"concurrency": r.concurrency, "p50_ms": r.p50_ms, "p90_ms": r.p90_ms, "p99_ms": r.p99_ms,
                "requests_per_s": r.requests_per_s, "errors": r.errors, "resets": r.resets, "capped": r.capped}
               for r in results],
    )
    assert all(r.errors == 0 for r in results), [r for r in results if r.errors]
