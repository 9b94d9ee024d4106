"""Closed-loop load test of an Open Inference Protocol endpoint: N clients, each sending its
next request as soon as the previous answer arrives (a client sees what a caller sees:
queueing, batching, HTTP and the engine), for a bounded time and request count per
concurrency. Inputs are random, shaped from the model's metadata, sent as binary data."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from harness.errors import HarnessError, UsageError
from harness.serving.protocol import DATATYPES, HEADER_LENGTH

BARRIER_TIMEOUT = 120.0  # seconds for every client to connect before the burst


@dataclass(frozen=True)
class LoadResult:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    batch: int  # samples per request
    capped: bool = False  # stopped at the request cap before its duration was up
    max_requests: int = 0
    duration: float = 0.0  # seconds asked for
    resets: int = 0  # requests that lost their connection (refused, reset): part of `errors`
    answers: int = 0  # distinct response bodies among the successes (one request body is sent: 1 expected)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def samples_per_s(self) -> float:
        return self.requests_per_s * self.batch


def _connection(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise UsageError(f"{url!r}: give the server's URL, e.g. http://127.0.0.1:8000")
    return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=120)


def _get_json(url: str, path: str) -> Any:
    conn = _connection(url)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
    except OSError as e:
        raise HarnessError(f"{url}{path}: cannot connect ({e})") from e
    finally:
        conn.close()
    if response.status != 200:
        raise HarnessError(f"{url}{path}: HTTP {response.status}: {body[:200]!r}")
    return json.loads(body)


def infer_body(metadata: dict[str, Any], batch: int, seed: int = 0) -> tuple[bytes, dict[str, str]]:
    """A binary-data request for `batch` samples of random inputs."""
    rng = np.random.default_rng(seed)
    inputs, blobs = [], []
    for t in metadata["inputs"]:
        shape = [batch if d == -1 else d for d in t["shape"]]
        dtype = DATATYPES[t["datatype"]]
        # Integers 0/1: valid ids of any lookup table, and any mask (the metadata has no value range).
        array = (rng.standard_normal(shape) if dtype.kind == "f" else rng.integers(0, 2, shape)).astype(dtype)
        raw = array.tobytes()
        inputs.append({"name": t["name"], "shape": shape, "datatype": t["datatype"],
                       "parameters": {"binary_data_size": len(raw)}})
        blobs.append(raw)
    head = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    return head + b"".join(blobs), {HEADER_LENGTH: str(len(head)), "Content-Type": "application/octet-stream"}


def run_load(url: str, model: str, concurrency: int, seconds: float, max_requests: int, batch: int = 1,
             metadata: dict[str, Any] | None = None) -> LoadResult:
    """`concurrency` clients that connect at the same moment (a burst: every connection opened
    together, then each sends as soon as its previous answer is in) for `seconds` or until
    `max_requests` requests in all, whichever comes first."""
    if concurrency < 1 or seconds <= 0 or max_requests < 1 or batch < 1:
        raise UsageError("concurrency, duration, request cap and batch must be positive")
    metadata = metadata or _get_json(url, f"/v2/models/{model}")  # given: a server whose metadata lacks shapes
    body, headers = infer_body(metadata, batch)
    path = f"/v2/models/{model}/infer"
    latencies: list[float] = []
    errors, resets = [0], [0]
    answers: set[int] = set()
    lock = threading.Lock()
    issued = [0]
    timing: dict[str, float] = {}

    def go() -> None:  # run once, when every client has connected, before any is let go
        timing["started"] = time.perf_counter()
        timing["stop_at"] = timing["started"] + seconds

    ready = threading.Barrier(concurrency + 1, action=go)

    def client() -> None:
        try:
            conn = _connection(url)
            try:
                conn.connect()
            except OSError:
                with lock:
                    errors[0] += 1
                    resets[0] += 1
        except BaseException:
            ready.abort()  # nobody waits for a client that will never arrive
            raise
        try:
            ready.wait(timeout=BARRIER_TIMEOUT)
        except threading.BrokenBarrierError:
            return
        try:
            while time.perf_counter() < timing["stop_at"]:
                with lock:
                    if issued[0] >= max_requests:
                        timing.setdefault("capped_at", time.perf_counter())
                        return
                    issued[0] += 1
                start = time.perf_counter()
                reset = False
                try:
                    conn.request("POST", path, body=body, headers=headers)
                    response = conn.getresponse()
                    answer = response.read()
                    ok = response.status == 200
                except (OSError, http.client.HTTPException) as e:
                    ok, answer = False, b""
                    reset = isinstance(e, (ConnectionError, http.client.RemoteDisconnected))
                    conn.close()
                    conn = _connection(url)
                elapsed = time.perf_counter() - start
                with lock:
                    if ok:
                        latencies.append(elapsed)
                        answers.add(hash(answer))
                    else:
                        errors[0] += 1
                        resets[0] += reset
        finally:
            conn.close()

    threads = [threading.Thread(target=client, name=f"loadtest-{i}", daemon=True) for i in range(concurrency)]
    try:
        for t in threads:
            t.start()
        ready.wait(timeout=BARRIER_TIMEOUT)  # every client connected: go, all at once
    except (threading.BrokenBarrierError, RuntimeError) as e:
        ready.abort()
        raise HarnessError(f"{url}: the {concurrency} load-test clients could not all start and connect "
                           f"({type(e).__name__}: {e})") from e
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - timing["started"]
    if not latencies:
        raise HarnessError(f"{url}: no request succeeded at concurrency {concurrency} ({errors[0]} errors)")
    ms = np.asarray(latencies) * 1e3
    return LoadResult(concurrency, len(latencies), errors[0], elapsed, float(np.percentile(ms, 50)),
                      float(np.percentile(ms, 90)), float(np.percentile(ms, 99)), batch,
                      capped="capped_at" in timing, max_requests=max_requests, duration=seconds, resets=resets[0],
                      answers=len(answers))


def sweep(url: str, model: str, concurrencies: Sequence[int], seconds: float, max_requests: int,
          batch: int = 1) -> list[LoadResult]:
    return [run_load(url, model, c, seconds, max_requests, batch) for c in concurrencies]


def format_table(results: Sequence[LoadResult], title: str = "") -> str:
    lines = [title] if title else []
    lines.append(f"{'concurrency':>11s} {'requests':>8s} {'errors':>6s} {'resets':>6s} {'p50 ms':>8s} {'p90 ms':>8s} "
                 f"{'p99 ms':>8s} {'req/s':>8s} {'samples/s':>9s}")
    for r in results:
        lines.append(f"{r.concurrency:11d} {r.requests:8d} {r.errors:6d} {r.resets:6d} {r.p50_ms:8.2f} {r.p90_ms:8.2f} "
                     f"{r.p99_ms:8.2f} {r.requests_per_s:8.1f} {r.samples_per_s:9.1f}")
    for r in results:
        if r.capped:
            lines.append(f"concurrency {r.concurrency} stopped at its request cap ({r.max_requests}) after "
                         f"{r.seconds:.1f} s of {r.duration:g} s: raise --max-requests to load it for the whole time")
    return "\n".join(lines)
