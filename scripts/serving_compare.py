"""What the HTTP server costs, with the engine taken out: InceptionV3-shaped requests (1.07 MB
of binary data, batch 1) answered by a null engine (zeros, no model), through

  harness     the harness's server (threading HTTP server -> batcher -> engine worker process)
  uvicorn     uvicorn + a minimal ASGI app in front of the same batcher and worker
  uvicorn-bare  uvicorn + a minimal ASGI app answering in-process (no worker: the floor)
  kserve      (--kserve URL) KServe's Python model server running scripts/kserve_null.py

each measured with the harness's own closed-loop load test at several concurrencies.  Prints
p50 latency at concurrency 1 (the per-request overhead) and requests/s at each concurrency.

    python scripts/serving_compare.py --seconds 3 --concurrency 1,4,16,64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.serving.loadtest import format_table, run_load
from harness.serving.protocol import HEADER_LENGTH, decode_request, encode_response
from harness.serving.server import InferenceServer
from harness.serving.worker import RunnerRecipe
from tests.serving_runners import IMAGE_SPEC

RECIPE = RunnerRecipe("tests.serving_runners:null_logits")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def asgi_app(app: InferenceServer | None) -> Any:
    """OIP metadata and infer routes; `app`: the batcher and worker to hand requests to (None:
    answer zeros in-process)."""
    meta = json.dumps(app.metadata if app else {"name": "null", "versions": ["1"], "platform": "null", "inputs": [
        {"name": "image", "datatype": "FP32", "shape": [-1, 299, 299, 3]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}]}).encode()

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        if scope["method"] == "GET":
            body, headers = meta, [(b"content-type", b"application/json")]
        else:
            raw = b"".join(chunks)
            length = dict(scope["headers"]).get(HEADER_LENGTH.lower().encode())
            request = decode_request(raw, length.decode() if length else None, IMAGE_SPEC)
            if app is None:
                outputs = {"logits": np.zeros((request.batch, 1000), np.float32)}
            else:
                status, outputs, error = await asyncio.to_thread(app.answer, request)
                if outputs is None:
                    await send({"type": "http.response.start", "status": status, "headers": []})
                    await send({"type": "http.response.body", "body": error.encode()})
                    return
            body, extra = encode_response(request, outputs, "null")
            headers = [(k.lower().encode(), str(v).encode()) for k, v in extra.items()]
            headers.append((b"content-type", b"application/octet-stream"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return application


def serve_uvicorn(application: Any) -> tuple[str, Any, threading.Thread]:
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port, log_level="error",
                                           backlog=1024))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--kserve", default=None, metavar="URL",
                        help="also measure KServe's model server running scripts/kserve_null.py at URL")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    tables, summary = [], []

    null_meta = {"name": "null", "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 299, 299, 3]}],
                 "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}]}

    def measure(name: str, url: str) -> None:
        results = [run_load(url, "null", c, args.seconds, 1_000_000, metadata=null_meta) for c in levels]
        tables.append(format_table(results, f"{name}:"))
        summary.append(f"{name:<13} p50 at concurrency 1: {results[0].p50_ms:.2f} ms; req/s "
                       + ", ".join(f"{r.concurrency}: {r.requests_per_s:.0f}" for r in results))

    with InferenceServer(RECIPE, IMAGE_SPEC, "null", "null") as harness_server:
        measure("harness", harness_server.url)
    backend = InferenceServer(RECIPE, IMAGE_SPEC, "null", "null")
    backend.start()  # its batcher and worker; its own HTTP port is simply not used
    try:
        url, server, thread = serve_uvicorn(asgi_app(backend))
        measure("uvicorn", url)
        server.should_exit = True
        thread.join(10)
    finally:
        backend.stop()
    url, server, thread = serve_uvicorn(asgi_app(None))
    measure("uvicorn-bare", url)
    server.should_exit = True
    thread.join(10)
    if args.kserve:
        measure("kserve", args.kserve)
    print("\n\n".join(tables))
    print("\n" + "\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
