"""The engine's own process: it builds the runner, activates it once (on a GPU backend this
creates the CUDA context, in this process, for its whole life) and then serves jobs sent
over a pipe. Request threads of the web server never touch the engine or CUDA: the classic
"invalid device context" of a TensorRT engine called from Flask threads cannot happen, and
nothing re-initialises CUDA per request.

Arrays travel through shared memory, not pickles, and through the same two segments every
time (one for inputs, one for outputs, owned by the parent and grown when a job needs more):
a fresh segment per request cost ~1 ms for a 1 MB input (creating it, faulting its pages in on
both sides, unlinking it), the whole serving budget. The engine reads its inputs in place; a
job is its id, where each tensor lies, and nothing else. The worker is started with the "spawn"
method, so it inherits no CUDA state (a forked CUDA context is unusable)."""

from __future__ import annotations

import itertools
import math
import multiprocessing as mp
import os
import secrets
import signal
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from multiprocessing import shared_memory
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from harness.backends.base import RunnerRecipe
from harness.errors import HarnessError, InputError

Layout = list[tuple[str, str, tuple[int, ...], int]]  # (name, dtype, shape, byte offset)
ALIGN = 64  # every tensor starts on a 64-byte boundary, so every view is aligned


class WorkerDied(HarnessError):
    pass


class WorkerNotReady(HarnessError):
    pass


def plan(arrays: Mapping[str, tuple[np.dtype[Any], tuple[int, ...]]]) -> tuple[Layout, int]:
    """Where each tensor (dtype, shape) lies in a segment, and the bytes the segment needs."""
    layout: Layout = []
    offset = 0
    for name, (dtype, shape) in arrays.items():
        layout.append((name, dtype.str, shape, offset))
        offset += (math.prod(shape) * dtype.itemsize + ALIGN - 1) // ALIGN * ALIGN
    return layout, max(offset, 1)


def views(buf: Any, layout: Layout) -> dict[str, np.ndarray]:
    return {n: np.ndarray(shape, np.dtype(dt), buffer=buf, offset=off) for n, dt, shape, off in layout}


def write_into(buf: Any, layout: Layout, parts: Sequence[Mapping[str, np.ndarray]]) -> None:
    """Copy each tensor's parts, one after the other along the batch axis, into its place."""
    for (name, *_), view in zip(layout, views(buf, layout).values(), strict=True):
        start = 0
        for part in parts:
            a = part[name]
            view[start : start + len(a)] = a
            start += len(a)


# Every segment is named for the process that made it: harness_<pid>_<n>_<random>.  One whose
# process is gone (the server group killed with SIGKILL: no resource tracker unlinked it) is
# removed by the next server's start (`clean_stale`): /dev/shm is memory, and it is not freed
# until the name is unlinked.  Liveness is judged by pid in this pid namespace: containers that
# share /dev/shm (`--ipc=host`) but not pids would take each other's segments for stale; give each
# server container its own /dev/shm (Docker's default).
SHM_PREFIX = "harness_"
SHM_DIR = Path("/dev/shm")
_segments = itertools.count()


def create(size: int) -> shared_memory.SharedMemory:
    """A new segment with its space reserved. Creating one only sets its size, whatever room
    /dev/shm has (a container's default is 64 MB); the first write past the room is SIGBUS, the
    whole process gone. Reserving it here turns that into an error that says what to do."""
    name = f"{SHM_PREFIX}{os.getpid()}_{next(_segments)}_{secrets.token_hex(3)}"
    shm = shared_memory.SharedMemory(name=name, create=True, size=max(size, 1))
    path = SHM_DIR / name
    if hasattr(os, "posix_fallocate") and path.exists():  # Linux: the segment is this file
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, shm.size)
        except OSError as e:
            _close(shm, unlink=True)
            raise HarnessError(f"no room in /dev/shm for {size} bytes of tensors ({e.strerror}); give it more "
                               f"(docker run --shm-size=1g) or send smaller batches") from None
        finally:
            os.close(fd)
    return shm


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        return True
    return True


def clean_stale(directory: Path = SHM_DIR) -> list[str]:
    """Unlink the segments of harness processes that no longer exist; their names."""
    removed = []
    for path in sorted(directory.glob(f"{SHM_PREFIX}*")) if directory.is_dir() else []:
        owner = path.name[len(SHM_PREFIX):].split("_", 1)[0]
        if not owner.isdigit() or _alive(int(owner)):
            continue
        try:
            path.unlink()
            removed.append(path.name)
        except OSError:  # another server removed it first, or not ours to remove
            pass
    return removed


def buffer(shm: shared_memory.SharedMemory) -> memoryview:
    """The segment's bytes (typeshed has .buf optional: it is None only once closed)."""
    if shm.buf is None:
        raise HarnessError(f"shared memory {shm.name} is closed")
    return shm.buf


def _close(shm: shared_memory.SharedMemory | None, unlink: bool = False) -> bool:
    """Close (and unlink) a segment; False if arrays still point into it (its mapping stays)."""
    if shm is None:
        return True
    if unlink:
        try:
            shm.unlink()
        except FileNotFoundError:
            pass
    try:
        shm.close()
    except BufferError:  # a view is still alive somewhere (a runner kept its input)
        return False
    return True


class _Mapped:
    """The worker's mappings of the parent's segments, by name (its input and output segments,
    the request slots); beyond `keep`, the least recently used is closed (one a grown segment
    replaced is never used again)."""

    def __init__(self, keep: int = 16) -> None:
        self.keep = keep
        self.open: dict[str, shared_memory.SharedMemory] = {}

    def get(self, name: str) -> shared_memory.SharedMemory:
        shm = self.open.pop(name, None) or shared_memory.SharedMemory(name=name)
        self.open[name] = shm  # the most recent last
        while len(self.open) > self.keep:
            _close(self.open.pop(next(iter(self.open))))
        return shm

    def close(self) -> None:
        for shm in self.open.values():
            _close(shm)


class Slots:
    """Shared-memory segments request bodies are read into, so that the engine reads a lone
    request's tensors where they landed instead of from a copy in the input segment (a 1 MB
    copy was a tenth of the serving budget). At most `count`, each lent to one request at a
    time; a request that finds none free (or /dev/shm full) is read into ordinary memory."""

    def __init__(self, count: int = 4) -> None:
        self.count = count
        self._lock = threading.Lock()
        self._free: list[shared_memory.SharedMemory] = []
        self._bases: dict[str, tuple[int, int]] = {}  # name -> (address of its first byte here, size)
        self._closed = False
        self._lingering: list[shared_memory.SharedMemory] = []

    def lease(self, size: int) -> shared_memory.SharedMemory | None:
        with self._lock:
            if self._closed:
                return None
            fits = [shm for shm in self._free if shm.size >= size]
            if fits:
                self._free.remove(fits[0])
                return fits[0]
            if self._free:  # too small: replaced by one that fits
                self._drop(self._free.pop())
            elif len(self._bases) >= self.count:
                return None
            try:
                shm = create(size)
            except (OSError, HarnessError):  # /dev/shm full: this request is read into ordinary memory
                return None
            self._bases[shm.name] = (np.frombuffer(buffer(shm), np.uint8).__array_interface__["data"][0], shm.size)
            return shm

    def give_back(self, shm: shared_memory.SharedMemory) -> None:
        with self._lock:
            if self._closed:
                self._drop(shm)
            else:
                self._free.append(shm)

    def locate(self, a: np.ndarray) -> tuple[str, int] | None:
        """(slot name, byte offset) of an array lying whole in a slot, C-ordered and aligned."""
        if not a.flags.c_contiguous or not a.flags.aligned:
            return None
        address = a.__array_interface__["data"][0]
        with self._lock:
            for name, (base, size) in self._bases.items():
                if 0 <= address - base and address - base + a.nbytes <= size:
                    return name, address - base
        return None

    def _drop(self, shm: shared_memory.SharedMemory) -> None:
        self._bases.pop(shm.name, None)
        if not _close(shm, unlink=True):
            self._lingering.append(shm)  # a request's arrays still point into it: closed later
        self._lingering = [old for old in self._lingering if not _close(old)]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for shm in self._free:
                self._drop(shm)
            self._free.clear()


def worker_main(recipe: RunnerRecipe, conn: Connection) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the server stops gracefully and
    # stops this worker after the requests in flight, so the worker itself ignores it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        runner = recipe.build()
        runner.activate()  # the CUDA context (GPU backends) is created here, once
        runner.infer(runner.spec.random_feed(1, seed=0))  # warm-up: first-call setup is not a request's cost
    except BaseException as e:  # noqa: BLE001 - whatever it is, report why, exit; the parent decides
        conn.send(("failed", None, f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", os.getpid(), None))
    inputs, outputs = _Mapped(), _Mapped(keep=2)
    try:
        while True:
            try:
                job = conn.recv()
            except EOFError:  # the parent is gone
                break
            if job is None:
                break
            job_id, in_name, in_layout, out_name = job
            try:
                feed = views(inputs.get(in_name).buf, in_layout)
                for a in feed.values():
                    a.flags.writeable = False  # the request's data, read in place
                out = runner.infer_batched(feed, ragged=False)  # over the plan's max batch: in chunks; rows as they came
                del feed
                out_layout, size = plan({k: (v.dtype, v.shape) for k, v in out.items()})
                target = outputs.get(out_name)
                spill = None
                if size > target.size:  # bigger than the parent's segment: a one-off; the parent grows its own
                    spill = target = create(size)
                write_into(target.buf, out_layout, [out])
                if spill is not None:
                    spill.close()  # the parent reads and unlinks it
                conn.send(("ok", job_id, (spill.name if spill else None, out_layout)))
            except InputError as e:  # the request's fault: the server answers 400
                conn.send(("bad", job_id, str(e)))
            except HarnessError as e:
                conn.send(("error", job_id, str(e)))
            except Exception as e:  # noqa: BLE001 - an engine bug: answered as an error, the worker keeps serving
                conn.send(("error", job_id, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"))
    finally:
        inputs.close()
        outputs.close()
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
        self._conn: Connection | None = None
        self._in: shared_memory.SharedMemory | None = None
        self._out: shared_memory.SharedMemory | None = None
        self.ready = threading.Event()
        self.restarts = 0
        self.last_error = ""
        self.slots = Slots()  # the parent's: they outlive a worker's restart
        self._stopping = False

    def _release(self) -> None:
        """Drop the last incarnation's pipe and segments: nothing it left behind is read as an answer."""
        if self._conn is not None:
            self._conn.close()
        _close(self._in, unlink=True)
        _close(self._out, unlink=True)
        self._conn = self._in = self._out = None

    def start(self) -> None:
        self.ready.clear()
        with self._lock:
            if self._stopping:
                raise WorkerNotReady("the server is stopping")
            self._release()
            conn, child = self._ctx.Pipe()
            self._conn = conn
            self.process = process = self._ctx.Process(target=worker_main, args=(self.recipe, child),
                                                       name="harness-engine-worker", daemon=True)
            process.start()
            child.close()  # the worker's end lives in the worker: its death is EOF here
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:  # on this incarnation's pipe, whatever stop() does meanwhile
            if not wait([conn, process.sentinel], timeout=min(0.2, self.start_timeout)):
                continue
            try:
                kind, _, message = conn.recv()
            except (EOFError, OSError):
                process.join(5)
                self.last_error = f"worker exited with code {process.exitcode} while starting"
                raise WorkerNotReady(self.last_error) from None
            if kind == "ready":
                self.ready.set()
                return
            self.last_error = f"the engine did not load: {message}"
            process.join(5)
            raise WorkerNotReady(self.last_error)
        process.kill()
        self.last_error = f"worker not ready after {self.start_timeout:.0f} s"
        raise WorkerNotReady(self.last_error)

    def restart(self) -> None:
        if self._stopping:
            return  # a death noticed while stopping: no new worker
        self.restarts += 1
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.start()

    @staticmethod
    def _segment(shm: shared_memory.SharedMemory | None, size: int) -> shared_memory.SharedMemory:
        """`shm` if it holds `size` bytes, else a new one (twice the old, at least `size`)."""
        if shm is not None and shm.size >= size:
            return shm
        new = create(max(size, 2 * shm.size if shm else 0))
        _close(shm, unlink=True)  # the worker maps the new name at its next job
        return new

    def run(self, parts: Sequence[Mapping[str, np.ndarray]], timeout: float) -> dict[str, np.ndarray]:
        """Run the engine on `parts` (requests' feeds) joined along the batch axis."""
        if not self.ready.is_set():
            raise WorkerNotReady(f"engine worker not ready ({self.last_error or 'starting'})")
        with self._lock:
            conn = self._conn
            if conn is None or not self.ready.is_set():
                raise WorkerNotReady(f"engine worker not ready ({self.last_error or 'starting'})")
            in_place = self._in_place(parts[0]) if len(parts) == 1 else None
            if in_place is not None:  # a lone request read into a slot: the engine reads it there
                segment, layout = in_place
            else:
                first = parts[0]
                layout, size = plan({n: (a.dtype, (sum(len(p[n]) for p in parts), *a.shape[1:]))
                                     for n, a in first.items()})
                self._in = self._segment(self._in, size)
                write_into(self._in.buf, layout, parts)
                segment = self._in.name
            self._out = self._segment(self._out, 1 << 16)  # outputs are small; a bigger one grows it
            job_id = next(self._ids)
            try:
                conn.send((job_id, segment, layout, self._out.name))
            except OSError:  # its end is closed: it died since the last job
                return self._died()
            deadline = time.monotonic() + timeout
            while True:
                answered = wait([conn, self.process.sentinel], timeout=max(0.0, deadline - time.monotonic()))
                if not answered:
                    # The worker may still be reading this job's inputs: it gets no other until restarted.
                    self.ready.clear()
                    self.last_error = f"no answer from the engine worker in {timeout:.0f} s"
                    raise WorkerDied(self.last_error)
                message: tuple[str, int, Any] | None = None
                if conn in answered:
                    try:
                        message = conn.recv()
                    except (EOFError, OSError):
                        pass  # the worker's end closed: it died
                if message is None:
                    return self._died()
                kind, got_id, payload = message
                if got_id != job_id:
                    continue  # cannot happen with one job at a time; never taken for this job's answer
                if kind == "bad":
                    raise InputError(str(payload))
                if kind == "error":
                    raise HarnessError(str(payload))
                spill, out_layout = payload
                if spill is None:
                    return {k: v.copy() for k, v in views(self._out.buf, out_layout).items()}
                shm = shared_memory.SharedMemory(name=spill)
                try:
                    result = {k: v.copy() for k, v in views(shm.buf, out_layout).items()}
                finally:
                    _close(shm, unlink=True)
                self._out = self._segment(self._out, shm.size)  # the next answer of this size fits
                return result

    def _in_place(self, feed: Mapping[str, np.ndarray]) -> tuple[str, Layout] | None:
        """The slot holding every tensor of `feed` and where each lies, if one does."""
        found = [(name, self.slots.locate(a), a) for name, a in feed.items()]
        names = {where[0] for _, where, _ in found if where is not None}
        if len(names) != 1 or any(where is None for _, where, _ in found):
            return None
        return names.pop(), [(name, a.dtype.str, a.shape, where[1]) for name, where, a in found if where is not None]

    def _died(self) -> NoReturn:
        self.process.join(1)
        self.ready.clear()
        self.last_error = f"worker died (exit code {self.process.exitcode}) during a request"
        raise WorkerDied(self.last_error)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        self._stopping = True
        with self._lock:  # after the job in flight, never in the middle of one
            if self.process.is_alive() and self._conn is not None:
                try:
                    self._conn.send(None)
                except OSError:
                    pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.ready.clear()
        with self._lock:
            self._release()
        self.slots.close()
