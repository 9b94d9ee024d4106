"""Serving load test: the model under test behind the HTTP endpoint, the server in a process
of its own as `harness serve` runs it (its engine in the server's worker process), closed-loop
clients on loopback at each concurrency (--harness-serve-concurrency), dynamic batching off
and on, then a burst of 512 clients connecting at once.

Two figures for what serving costs:
- the engine's own latency timed beside one request at a time over HTTP (alternating blocks,
  one stretch), and their difference;
- the same requests answered by a null engine (the model's outputs as zeros, no model): what
  serving costs with the engine taken out, free of the engine's own noise.

The pytest-benchmark rows time one request at a time (concurrency 1); the sweep's table is
printed at the end of the run and kept in the row's extra_info."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from benchmarks.conftest import SERVING
from harness.errors import BackendUnavailable, HarnessError
from harness.serving.engines import NullRunner, recipe_for
from harness.serving.loadtest import format_table, infer_body, run_load, sweep
from harness.serving.server import ServerProcess

pytestmark = pytest.mark.harness_suite("serving")  # --harness-suites serving

BATCHING = {"off": (1, 0.0), "on": (8, 5.0)}  # (max batch, max delay ms)
BURST = 512
TARGET_SECONDS = 4.0
OVERHEAD_TARGET_MS = 1.0  # issue 18: serving costs at most 1 ms over the engine, batch 1, 1 MB binary request


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _one_request(url: str, model: str) -> tuple[Callable[[], None], int, Callable[[], None]]:
    """A call sending one binary-data request of a batch of 1 and reading the answer, the
    request's size, and what closes its connection."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("GET", f"/v2/models/{model}")
    body, headers = infer_body(json.loads(conn.getresponse().read()), 1)

    def one() -> None:
        conn.request("POST", f"/v2/models/{model}/infer", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        assert response.status == 200

    return one, len(body), conn.close


@pytest.mark.parametrize("batching", list(BATCHING))
def test_serving(benchmark: Any, batching: str, pytestconfig: pytest.Config, harness_workspace: Any,
                 harness_request: Any) -> None:
    from harness.measure import time_beside

    backend, _, precision = pytestconfig.getoption("harness_serve_engine").partition("-")
    try:
        engine = harness_workspace.engine(harness_request, backend, precision)
    except BackendUnavailable as e:  # an engine this host cannot build or run: a skip, with why
        pytest.skip(f"{backend}-{precision}: {e.reason}")
    except HarnessError as e:  # anything else is a failure of the run, not a reason to skip
        pytest.fail(f"{backend}-{precision}: {type(e).__name__}: {e}", pytrace=False)
    max_batch, delay = BATCHING[batching]
    spec = engine.spec
    with ServerProcess(recipe_for(engine.runner), spec, model_name=spec.name, platform=f"harness-{engine.id}",
                       max_batch=max_batch, max_delay_ms=delay) as url, engine.runner as runner:
        feed = runner.spec.check_feed(runner.spec.random_feed(1, seed=0))
        one, size, close = _one_request(url, spec.name)
        benchmark.group = f"{spec.name} serving (HTTP, one request at a time)"
        # The engine's own call in this process, timed beside the requests (the server's worker
        # is idle while it runs): both sides of the difference come from one stretch.
        beside = time_beside(benchmark, one, lambda: runner.infer_checked(feed), TARGET_SECONDS)
        close()
        results = sweep(url, spec.name, pytestconfig.getoption("harness_serve_concurrency"),
                        pytestconfig.getoption("harness_serve_seconds"), max_requests=2000)
        # A burst: BURST clients connecting at the same moment (the backlog of 5 once refused them).
        results.append(run_load(url, spec.name, BURST, pytestconfig.getoption("harness_serve_seconds"),
                                max_requests=100_000))
    serving_p50 = float(np.median(beside.seconds)) * 1e3
    engine_p50 = float(np.median(beside.reference_seconds)) * 1e3
    ratio = beside.speedup  # engine time / served time
    title = (f"{spec.name} {engine.id} served, dynamic batching {batching}"
             + (f" (up to {max_batch}, {delay:g} ms)" if batching == "on" else "")
             + f"; engine alone p50 {engine_p50:.2f} ms, one request over HTTP ({_size(size)}) p50 "
             f"{serving_p50:.2f} ms, timed beside each other (serving overhead {serving_p50 - engine_p50:.2f} ms, "
             f"x{serving_p50 / engine_p50:.3f})")
    SERVING.append(format_table(results, title))
    benchmark.extra_info.update(
        model=spec.name, served_engine=engine.id, batching=batching, engine_p50_ms=engine_p50,
        serving_p50_ms=serving_p50, serving_overhead_ms=serving_p50 - engine_p50, request_bytes=size,
        # the round-robin estimate (with its interval), beside the medians' ratio
        serving_ratio=serving_p50 / engine_p50, serving_ratio_paired=1 / ratio.point,
        serving_ratio_paired_interval=[1 / ratio.high, 1 / ratio.low],
        sweep=[{"concurrency": r.concurrency, "p50_ms": r.p50_ms, "p90_ms": r.p90_ms, "p99_ms": r.p99_ms,
                "requests_per_s": r.requests_per_s, "errors": r.errors, "resets": r.resets, "capped": r.capped}
               for r in results],
    )
    assert all(r.errors == 0 for r in results), [r for r in results if r.errors]


def test_serving_without_the_engine(benchmark: Any, harness_workspace: Any, harness_request: Any) -> None:
    """The same requests answered by a null engine: every cost of serving (client, HTTP, the
    hand-off to the worker process and back) and no model."""
    spec = harness_workspace.frozen(harness_request).spec
    with ServerProcess(NullRunner(spec).recipe(), spec, model_name=spec.name, platform="harness-null") as url:
        one, size, close = _one_request(url, spec.name)
        benchmark.group = f"{spec.name} serving, null engine (HTTP, one request at a time)"
        benchmark.pedantic(one, rounds=500, iterations=1, warmup_rounds=20)
        close()
    from harness.thirdparty import round_seconds

    data = np.asarray(round_seconds(benchmark)) * 1e3
    p50, p90 = float(np.median(data)), float(np.percentile(data, 90))
    SERVING.append(f"{spec.name} served by a null engine (engine taken out; batch 1, {_size(size)} binary "
                   f"request, client included): p50 {p50:.2f} ms, p90 {p90:.2f} ms; target <= {OVERHEAD_TARGET_MS:g} "
                   f"ms: {'met' if p50 <= OVERHEAD_TARGET_MS else 'not met'} on this machine")
    benchmark.extra_info.update(model=spec.name, served_engine="null", serving_p50_ms=p50, serving_p90_ms=p90,
                                request_bytes=size)


SLOWLORIS = 200  # connections that send half a request head and then nothing


def test_serving_beside_slowloris(benchmark: Any, harness_workspace: Any, harness_request: Any) -> None:
    """One client's requests (null engine) while SLOWLORIS connections hold half-sent heads open,
    against the same requests without them, in alternating blocks (this machine's speed drifts
    by more than the effect between one stretch and the next): what a slowloris attack costs the
    others (issue 27: p50 within 20%). The rows are the requests made beside the attack."""
    import socket
    import time

    spec = harness_workspace.frozen(harness_request).spec
    blocks, per_block = 8, 40
    with ServerProcess(NullRunner(spec).recipe(), spec, model_name=spec.name, platform="harness-null") as url:
        one, size, close = _one_request(url, spec.name)
        host, port = url.removeprefix("http://").split(":")

        def timed() -> list[float]:
            times = []
            for _ in range(per_block):
                start = time.perf_counter()
                one()
                times.append(time.perf_counter() - start)
            return times

        for _ in range(20):
            one()
        alone: list[float] = []
        beside: list[float] = []
        for _ in range(blocks):
            alone += timed()
            held = [socket.create_connection((host, int(port)), timeout=10) for _ in range(SLOWLORIS)]
            try:
                for sock in held:  # each well inside the header timeout while the block runs
                    sock.sendall(b"POST /v2/models/x/infer HTTP/1.1\r\nHost: x\r\n")
                time.sleep(0.05)  # every one of them read by its thread and waiting
                beside += timed()
            finally:
                for sock in held:
                    sock.close()
        close()
    from harness.thirdparty import record_rounds

    benchmark.group = f"{spec.name} serving, null engine, beside {SLOWLORIS} slowloris connections"
    record_rounds(benchmark, beside)
    during, before = float(np.median(beside)) * 1e3, float(np.median(alone)) * 1e3
    change = during / before - 1
    SERVING.append(f"{spec.name} null engine beside {SLOWLORIS} slowloris connections (half a head each, held "
                   f"open; {blocks} alternating blocks of {per_block} requests): one client's p50 {during:.2f} ms "
                   f"beside them, {before:.2f} ms without ({change:+.0%}; issue 27's bound: within 20%)")
    benchmark.extra_info.update(model=spec.name, served_engine="null", serving_p50_ms=during,
                                serving_p50_alone_ms=before, slowloris=SLOWLORIS, slowloris_change=change,
                                request_bytes=size)
