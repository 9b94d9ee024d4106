"""The engine's own process: it builds the runner, activates it once (on a GPU backend this
creates the CUDA context, in this process, for its whole life) and then serves jobs from a
queue. Request threads of the web server never touch the engine or CUDA: the classic
"invalid device context" of a TensorRT engine called from Flask threads cannot happen, and
nothing re-initialises CUDA per request.

Arrays travel through shared memory, not pickles: a job is the name of a segment and where
each tensor lies in it. The worker is started with the "spawn" method, so it inherits no
CUDA state (a forked CUDA context is unusable)."""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import queue
import threading
import time
import traceback
from collections.abc import Mapping
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from harness.backends.base import RunnerRecipe
from harness.errors import HarnessError, InputError

Layout = list[tuple[str, str, tuple[int, ...], int]]  # (name, dtype, shape, byte offset)


class WorkerDied(HarnessError):
    pass


class WorkerNotReady(HarnessError):
    pass


def write_arrays(arrays: Mapping[str, np.ndarray]) -> tuple[shared_memory.SharedMemory, Layout]:
    layout: Layout = []
    offset = 0
    for name, a in arrays.items():
        layout.append((name, a.dtype.str, tuple(a.shape), offset))
        offset += (a.nbytes + 63) // 64 * 64  # aligned, so every view is aligned
    shm = shared_memory.SharedMemory(create=True, size=max(offset, 1))
    for (name, _, _, start), a in zip(layout, arrays.values(), strict=True):
        np.ndarray(a.shape, a.dtype, buffer=shm.buf, offset=start)[...] = a
    return shm, layout


def read_arrays(name: str, layout: Layout, unlink: bool = False) -> dict[str, np.ndarray]:
    shm = shared_memory.SharedMemory(name=name)
    try:
        return {n: np.ndarray(shape, np.dtype(dt), buffer=shm.buf, offset=off).copy() for n, dt, shape, off in layout}
    finally:
        shm.close()
        if unlink:
            shm.unlink()


def worker_main(recipe: RunnerRecipe, jobs: Any, results: Any) -> None:
    try:
        runner = recipe.build()
        runner.activate()  # the CUDA context (GPU backends) is created here, once
        runner.infer(runner.spec.random_feed(1, seed=0))  # warm-up: first-call setup is not a request's cost
    except BaseException as e:  # noqa: BLE001 - whatever it is, report why, exit; the parent decides
        results.put(("failed", None, f"{type(e).__name__}: {e}"))
        return
    results.put(("ready", os.getpid(), None))
    try:
        while True:
            job = jobs.get()
            if job is None:
                break
            job_id, segment, layout = job
            try:
                feed = read_arrays(segment, layout)
                out = runner.infer_batched(feed)  # a request over the plan's max batch runs in chunks
                shm, out_layout = write_arrays(out)
                shm.close()  # the parent reads and unlinks it
                results.put(("ok", job_id, (shm.name, out_layout)))
            except InputError as e:  # the request's fault: the server answers 400
                results.put(("bad", job_id, str(e)))
            except HarnessError as e:
                results.put(("error", job_id, str(e)))
            except Exception as e:  # noqa: BLE001 - an engine bug: answered as an error, the worker keeps serving
                results.put(("error", job_id, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"))
    finally:
        runner.deactivate()


class Worker:
    """The parent's handle on the worker process: start (and wait until ready), run a job,
    notice death, restart, stop."""

    def __init__(self, recipe: RunnerRecipe, start_timeout: float = 300.0) -> None:
        self.recipe = recipe
        self.start_timeout = start_timeout
        self._ctx = mp.get_context("spawn")
        self._ids = itertools.count()
        self._lock = threading.Lock()  # one job at a time: the engine is serial anyway
        self.process: Any = None
        self.ready = threading.Event()
        self.restarts = 0
        self.last_error = ""

    def start(self) -> None:
        self.ready.clear()
        # Fresh queues per incarnation: nothing a dead worker left behind is read as an answer.
        self._jobs, self._results = self._ctx.Queue(), self._ctx.Queue()
        self.process = self._ctx.Process(target=worker_main, args=(self.recipe, self._jobs, self._results),
                                         name="harness-engine-worker", daemon=True)
        self.process.start()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            try:
                kind, _, message = self._results.get(timeout=0.2)
            except queue.Empty:
                if not self.process.is_alive():
                    self.last_error = f"worker exited with code {self.process.exitcode} while starting"
                    raise WorkerNotReady(self.last_error) from None
                continue
            if kind == "ready":
                self.ready.set()
                return
            self.last_error = f"the engine did not load: {message}"
            self.process.join(5)
            raise WorkerNotReady(self.last_error)
        self.process.kill()
        self.last_error = f"worker not ready after {self.start_timeout:.0f} s"
        raise WorkerNotReady(self.last_error)

    def restart(self) -> None:
        self.restarts += 1
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.start()

    def run(self, feed: Mapping[str, np.ndarray], timeout: float) -> dict[str, np.ndarray]:
        if not self.ready.is_set():
            raise WorkerNotReady(f"engine worker not ready ({self.last_error or 'starting'})")
        with self._lock:
            job_id = next(self._ids)
            shm, layout = write_arrays(feed)
            try:
                self._jobs.put((job_id, shm.name, layout))
                deadline = time.monotonic() + timeout
                while True:
                    try:
                        kind, got_id, payload = self._results.get(timeout=0.05)
                    except queue.Empty:
                        if not self.process.is_alive():
                            self.ready.clear()
                            self.last_error = f"worker died (exit code {self.process.exitcode}) during a request"
                            raise WorkerDied(self.last_error) from None
                        if time.monotonic() > deadline:
                            raise WorkerDied(f"no answer from the engine worker in {timeout:.0f} s") from None
                        continue
                    if got_id != job_id:
                        continue  # an answer to a request that already timed out
                    if kind == "bad":
                        raise InputError(str(payload))
                    if kind == "error":
                        raise HarnessError(str(payload))
                    segment, out_layout = payload
                    return read_arrays(segment, out_layout, unlink=True)
            finally:
                shm.close()
                shm.unlink()

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.is_alive():
            self._jobs.put(None)
            self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.ready.clear()
