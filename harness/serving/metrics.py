"""Server metrics in the Prometheus text format: request counts by status, latency
quantiles over the most recent requests, executed batch sizes, worker restarts.  Bounded
memory for a server's whole life: latencies in a ring of the last WINDOW, batch sizes as a
histogram (bucket counts) plus the last RECENT sizes, for tests to read."""

from __future__ import annotations

import threading
from collections import Counter, deque

import numpy as np

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
WINDOW = 10_000  # latencies kept for the quantiles
RECENT = 1_000  # batch sizes kept as they came


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[int] = Counter()
        self.latencies: deque[float] = deque(maxlen=WINDOW)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.batches: deque[int] = deque(maxlen=RECENT)  # the most recent batch sizes
        self.batch_buckets = [0] * len(BATCH_BUCKETS)  # batches of at most each bound (cumulative on output)
        self.batch_count = 0
        self.batch_samples = 0
        self.restarts = 0

    def request(self, status: int, seconds: float | None = None) -> None:
        with self._lock:
            self.requests[status] += 1
            if seconds is not None:
                self.latencies.append(seconds)
                self.latency_sum += seconds
                self.latency_count += 1

    def batch(self, size: int) -> None:
        with self._lock:
            self.batches.append(size)
            self.batch_count += 1
            self.batch_samples += size
            for i, bound in enumerate(BATCH_BUCKETS):
                if size <= bound:
                    self.batch_buckets[i] += 1
                    break

    def text(self) -> str:
        with self._lock:
            lines = ["# HELP harness_requests_total Inference requests by HTTP status.",
                     "# TYPE harness_requests_total counter"]
            lines += [f'harness_requests_total{{code="{code}"}} {n}' for code, n in sorted(self.requests.items())]
            errors = sum(n for code, n in self.requests.items() if code >= 400)
            lines += ["# HELP harness_request_errors_total Inference requests answered with an error.",
                      "# TYPE harness_request_errors_total counter", f"harness_request_errors_total {errors}",
                      "# HELP harness_request_latency_seconds Latency of successful inference requests.",
                      "# TYPE harness_request_latency_seconds summary"]
            if self.latencies:
                values = np.asarray(self.latencies)
                for q in (0.5, 0.9, 0.99):
                    lines.append(f'harness_request_latency_seconds{{quantile="{q}"}} {np.quantile(values, q):.6f}')
            lines += [f"harness_request_latency_seconds_sum {self.latency_sum:.6f}",
                      f"harness_request_latency_seconds_count {self.latency_count}",
                      "# HELP harness_batch_size Samples per batch the engine ran.",
                      "# TYPE harness_batch_size histogram"]
            below = 0
            for bound, n in zip(BATCH_BUCKETS, self.batch_buckets, strict=True):
                below += n
                lines.append(f'harness_batch_size_bucket{{le="{bound}"}} {below}')
            lines += [f'harness_batch_size_bucket{{le="+Inf"}} {self.batch_count}',
                      f"harness_batch_size_sum {self.batch_samples}", f"harness_batch_size_count {self.batch_count}",
                      "# HELP harness_worker_restarts_total Times the engine worker was restarted.",
                      "# TYPE harness_worker_restarts_total counter", f"harness_worker_restarts_total {self.restarts}"]
            return "\n".join(lines) + "\n"
