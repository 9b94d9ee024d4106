"""What serving costs, with the engine taken out: InceptionV3-shaped requests (1.07 MB of
binary data, batch 1) answered by a null engine (zeros, no model), through

  harness       the harness's server (threading HTTP server -> engine worker process)
  harness-h11   the same, with h11 (a well-kept parser, uvicorn's) also parsing every request
                head after the hand parser: what a well-kept parser under this server would cost
  uvicorn       uvicorn (h11 parser, asyncio loop) + a minimal ASGI app in front of the same
                batcher and worker
  uvicorn-fast  the same with uvicorn[standard]'s httptools parser and uvloop loop
  uvicorn-bare  uvicorn + a minimal ASGI app answering in-process (no worker)
  socket        a bare socket loop that reads the request and writes a canned answer: the
                floor (the client, the kernel's loopback copies, nothing else)
  kserve        (--kserve URL) KServe's Python model server running scripts/kserve_null.py

each server in a process of its own (as `harness serve` runs; a server sharing the client's
process would share its GIL), measured with the harness's closed-loop load test at several
concurrencies.  Prints p50 latency at concurrency 1 (what one request costs) and requests/s.
uvicorn's rows need `pip install uvicorn` (uvicorn-fast: `pip install 'uvicorn[standard]'`; not harness
dependencies) and are left out without it.

    python scripts/serving_compare.py --seconds 3 --concurrency 1,4,16,64
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import multiprocessing
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.machine import cpu_info
from harness.serving.engines import NullRunner
from harness.serving.loadtest import format_table, run_load
from harness.serving.protocol import HEADER_LENGTH, decode_request, encode_response
from harness.serving.server import InferenceServer
from tests.serving_runners import IMAGE_SPEC

RECIPE = NullRunner(IMAGE_SPEC).recipe()


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


def _serve_uvicorn(application: Any, port: int, fast: bool = False) -> None:
    import uvicorn

    parser, loop = ("httptools", "uvloop") if fast else ("h11", "asyncio")
    uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port, log_level="error", backlog=1024,
                                  http=parser, loop=loop)).run()


def _parse_with_h11_too() -> None:
    """This (child) process's server also hands every request head to h11 after its own parse."""
    import h11

    from harness.serving import server as server_module

    own = server_module._Handler.parse_request

    def parse_request(self: Any) -> bool:
        if not own(self):
            return False
        head = self.raw_requestline + b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in self.headers.items())
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(head + b"\r\n")
        try:
            conn.next_event()
        except h11.RemoteProtocolError as e:
            self.send_error(400, f"h11: {e}")
            return False
        return True

    server_module._Handler.parse_request = parse_request  # type: ignore[method-assign]


def _serve_socket(port: int) -> None:
    """Reads each request (headers, then Content-Length bytes) and writes one canned OIP answer
    of the null engine's size: what any server costs at least."""
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)
    answer_head = json.dumps({"model_name": "null", "model_version": "1", "outputs": [
        {"name": "logits", "datatype": "FP32", "shape": [1, 1000], "parameters": {"binary_data_size": 4000}}]}).encode()
    body = answer_head + bytes(4000)
    answer = (f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n{HEADER_LENGTH}: {len(answer_head)}"
              f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body

    def connection(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream = conn.makefile("rb")
        with conn, stream:
            while True:
                length = 0
                while (line := stream.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if not line:
                    return
                stream.read(length)
                conn.sendall(answer)

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=connection, args=(conn,), daemon=True).start()


def serve(kind: str, port: int) -> None:
    """One server on `port`, in this (child) process, until it is terminated."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the finally blocks stop the engine worker
    if kind == "socket":
        _serve_socket(port)
    elif kind == "uvicorn-bare":
        _serve_uvicorn(asgi_app(None), port)
    else:
        if kind == "harness-h11":
            _parse_with_h11_too()
        uvicorn = kind.startswith("uvicorn")
        server = InferenceServer(RECIPE, IMAGE_SPEC, "null", "null", port=0 if uvicorn else port)
        server.start()  # its batcher and worker; for uvicorn its own HTTP port is simply not used
        try:
            if uvicorn:
                _serve_uvicorn(asgi_app(server), port, fast=kind == "uvicorn-fast")
            else:
                threading.Event().wait()
        finally:
            server.stop()


def started(kind: str) -> tuple[str, Any]:
    port = _free_port()
    process = multiprocessing.get_context("spawn").Process(target=serve, args=(kind, port), daemon=False)
    process.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:  # ready, not only listening: the first requests must not wait for the engine worker
            with urllib.request.urlopen(f"{url}/v2/health/ready" if kind.startswith("harness") else url, timeout=1):
                return url, process
        except urllib.error.HTTPError:
            if not kind.startswith("harness"):
                return url, process  # answering (a 404 for "/" is an answer)
            time.sleep(0.1)
        except OSError:
            if not process.is_alive():
                raise SystemExit(f"{kind}: the server process exited with code {process.exitcode}") from None
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"{kind}: no server listening after 120 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--servers", default="socket,harness,harness-h11,uvicorn,uvicorn-fast,uvicorn-bare")
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

    kinds = args.servers.split(",")
    needs = {"uvicorn": ["uvicorn"], "uvicorn-bare": ["uvicorn"], "uvicorn-fast": ["uvicorn", "httptools", "uvloop"],
             "harness-h11": ["h11"]}
    for kind in list(kinds):
        missing = [m for m in needs.get(kind, []) if importlib.util.find_spec(m) is None]
        if missing:
            kinds.remove(kind)
            print(f"{kind} left out: {', '.join(missing)} not installed", file=sys.stderr)
    for kind in kinds:
        url, process = started(kind)
        try:
            measure(kind, url)
        finally:
            process.terminate()
            process.join(30)
    if args.kserve:
        measure("kserve", args.kserve)
    print("\n\n".join(tables))
    cpu = cpu_info()
    print(f"\n{cpu['model']}, {cpu['usable_cores']} usable cores")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
