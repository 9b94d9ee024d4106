"""HTTP inference endpoint (Open Inference Protocol) in front of one engine worker process.

    request threads --(validated arrays)--> batcher thread --(shared memory)--> engine worker
         ^                                        |                              (owns the engine
         +------------ outputs, split per request-+                               and its CUDA context)

The HTTP layer is the standard library's threading server: four routes and a body limit
need no framework, nothing has to be installed on a GPU machine for it, and its cost is
measured (the load test prints serving latency next to the engine's own). Request threads
only parse, validate and wait; the batcher gathers requests into one engine batch (up to
--dynamic-batch samples or --max-delay-ms), the worker runs it, the batcher splits the outputs.

If the worker dies, the requests it held get 503 with the reason, none hang (every wait has
a timeout), and a new worker is started, again and again with a growing pause (backoff) until
one comes up; meanwhile /v2/health/ready is 503 with the reason, requests get 503 at once
instead of waiting, and after LIVE_FAILURES failed starts in a row /v2/health/live is 503 too
(a supervisor should restart the whole server).  Stopping is graceful: no new connections,
queued and in-flight requests finish, then the worker.

Bounded: a connection must send its request head within --header-timeout and its body within
--body-timeout, an idle kept-alive one is closed after --idle-timeout (a reaper thread shuts
the socket: a drip-fed header cannot hold a thread for ever), at most --max-connections are
served at once (the next waits in the listen backlog for up to the header timeout, then gets
503 and is closed; no thread is started for it), a body is read as it arrives
(nothing of its announced size is allocated first), a binary request's shared memory is leased
once its tensors start to arrive, and a request counts as in flight only once its body is in."""

from __future__ import annotations

import collections
import contextlib
import email.utils
import json
import math
import queue
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.client import HTTPMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import numpy as np

from harness import __version__
from harness.errors import HarnessError, InputError
from harness.serving.metrics import Metrics
from harness.serving.protocol import (
    HEADER_LENGTH,
    ProtocolError,
    Request,
    decode_request,
    decode_split,
    encode_response,
    model_metadata,
)
from harness.serving.worker import RunnerRecipe, Worker, WorkerDied, WorkerNotReady, buffer, clean_stale
from harness.spec import ModelSpec

DEFAULT_MAX_BODY = 64 << 20
DEFAULT_TIMEOUT = 60.0
MAX_HEADERS, MAX_HEADER_LINE = 100, 65536  # the standard library's limits
DRAIN_LIMIT_FACTOR = 16  # an unwanted body up to 16x the limit is read and dropped, not left unread
KEEP_BUFFER = 1 << 20  # a connection keeps a body buffer up to this size for its next requests
HEADER_TIMEOUT = 10.0  # seconds for a request's line and headers to arrive
IDLE_TIMEOUT = 15.0  # seconds a kept-alive connection may wait for its next request
BODY_TIMEOUT = 60.0  # seconds for a body to arrive once its headers have
MAX_CONNECTIONS = 1024  # served at once (each is a thread); more wait in the backlog, then get 503
REAP_EVERY = 0.25  # how often the reaper looks for connections past their deadline
RESTART_BACKOFF = (0.5, 30.0)  # the first pause between failed worker starts, and the longest
LIVE_FAILURES = 5  # failed worker starts in a row after which /v2/health/live says 503


@dataclass
class _Pending:
    request: Request
    done: threading.Event = field(default_factory=threading.Event)
    outputs: dict[str, np.ndarray] | None = None
    status: int = 200
    error: str = ""
    abandoned: bool = False  # its caller stopped waiting: not worth the engine's time


class InferenceServer:
    def __init__(
        self,
        recipe: RunnerRecipe,
        spec: ModelSpec,
        model_name: str,
        platform: str,
        host: str = "127.0.0.1",
        port: int = 0,
        max_batch: int = 1,
        max_delay_ms: float = 0.0,
        max_body: int = DEFAULT_MAX_BODY,
        request_timeout: float = DEFAULT_TIMEOUT,
        start_timeout: float = 300.0,
        hold_lone_requests: bool = False,
        grpc_port: int | None = None,
        header_timeout: float = HEADER_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        body_timeout: float = BODY_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        pad_mask: str | None = None,
    ) -> None:
        if max_batch < 1 or max_delay_ms < 0:
            raise HarnessError(f"max batch {max_batch} must be >= 1 and max delay {max_delay_ms} ms >= 0")
        timeouts = (header_timeout, idle_timeout, body_timeout)
        if not all(math.isfinite(t) and t > 0 for t in timeouts) or max_connections < 1:
            raise HarnessError(f"timeouts (header {header_timeout}, idle {idle_timeout}, body {body_timeout} s) must be "
                               f"> 0 and max connections ({max_connections}) >= 1")
        self.header_timeout, self.idle_timeout, self.body_timeout = header_timeout, idle_timeout, body_timeout
        self.max_connections = max_connections
        self.spec = spec
        self.padding = Padding.of(spec, pad_mask) if pad_mask else None
        self.model_name = model_name
        self.metadata = model_metadata(spec, model_name, platform)
        self.max_batch = max_batch
        self.max_delay = max_delay_ms / 1e3
        # False (the default): a request that finds nothing else queued, with the engine idle,
        # runs at once instead of waiting --max-delay-ms for company; requests that arrive while
        # the engine is busy queue up and are batched.  True: always wait (the old behaviour).
        self.hold_lone_requests = hold_lone_requests
        self.max_body = max_body
        self.request_timeout = request_timeout
        self.metrics = Metrics()
        self.worker = Worker(recipe, start_timeout)
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        # Requests taken off the queue that could not join the batch being formed (another shape):
        # the next batches start from them, oldest first.
        self._held: collections.deque[_Pending] = collections.deque()
        self._engine = threading.Lock()  # held while a batch runs, by the batcher or a lone request's thread
        self._accepting = True
        self._inflight = 0
        self._idle = threading.Condition()
        self._restarting = threading.Lock()  # one restart loop at a time
        self._stopped = threading.Event()  # ends a restart loop's pause
        self.failed_starts = 0  # failed worker starts in a row
        self.starting = False  # a worker start is under way
        self._attempted = threading.Condition()  # notified at the end of every start attempt
        self._http = _HTTPServer((host, port), _Handler, self)
        self._threads: list[threading.Thread] = []
        self._grpc_address = (host, grpc_port) if grpc_port is not None else None
        self._grpc: Any = None
        self.grpc_port: int | None = None  # bound once started

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}" if isinstance(host, str) else f"http://{host.decode()}:{port}"

    # --- life cycle ------------------------------------------------------------------------

    def start(self, wait_ready: bool = True) -> None:
        """Serve at once (live), load the engine in the worker (ready when it is warmed up)."""
        clean_stale()  # shared memory a killed server left behind
        # Told to wait, a worker that cannot start is an error for the caller; not told to, it is
        # restarted with backoff, as after a crash.
        loader = threading.Thread(target=self._load if wait_ready else self._keep_up, name="harness-loader",
                                  daemon=True)
        self._threads = [
            threading.Thread(target=self._http.serve_forever, name="harness-http", daemon=True),
            threading.Thread(target=self._batch_loop, name="harness-batcher", daemon=True),
            threading.Thread(target=self._http.reap, name="harness-reaper", daemon=True),
        ]
        if self._grpc_address is not None:
            from harness.serving.grpc_service import start_grpc

            try:
                self._grpc, self.grpc_port = start_grpc(self, *self._grpc_address)
            except BaseException:
                self._http.server_close()  # nothing half-started is left listening
                raise
        for t in [*self._threads, loader]:
            t.start()
        if wait_ready:
            loader.join()
            if not self.worker.ready.is_set():
                self.stop()
                raise WorkerNotReady(f"engine worker could not start: {self.worker.last_error}")

    def _load(self, restart: bool = False) -> None:
        with self._attempted:
            self.starting = True
        try:
            self.worker.restart() if restart else self.worker.start()
        except WorkerNotReady:
            pass  # last_error says why; /v2/health/ready stays 503
        except Exception as e:  # noqa: BLE001 - the process could not even start: say why, not ""
            self.worker.last_error = f"{type(e).__name__}: {e}"
        finally:
            with self._attempted:  # both at once: a request never sees "not starting" with the old count
                self.failed_starts = 0 if self.worker.ready.is_set() else self.failed_starts + 1
                self.starting = False
                self._attempted.notify_all()

    def _keep_up(self, restart: bool = False) -> None:
        """Start the worker, and again after each failure, pausing twice as long each time (up to
        RESTART_BACKOFF's longest), until one comes up or the server stops."""
        while self._accepting:
            if not self._restarting.acquire(blocking=False):
                return  # a loop is already at it (and checks again once it is done)
            try:
                pause = RESTART_BACKOFF[0]
                while self._accepting:
                    if restart:
                        self.metrics.restarts += 1
                    self._load(restart=restart)
                    if self.worker.ready.is_set() or self._stopped.wait(pause):
                        break
                    pause, restart = min(2 * pause, RESTART_BACKOFF[1]), True
            finally:
                self._restarting.release()
            # A death between this loop's last look and its release found the lock taken: look again.
            if self.worker.ready.is_set() or not self._accepting:
                return
            restart = True

    def _restart(self) -> None:
        self._keep_up(restart=True)

    def health(self) -> tuple[bool, bool, str]:
        """(live, ready, why not ready): live unless LIVE_FAILURES worker starts failed in a row."""
        ready = self.worker.ready.is_set() and self._accepting
        why = "" if ready else ("server is shutting down" if not self._accepting else
                                f"engine worker {'starting' if self.starting else 'down'}"
                                + (f" ({self.failed_starts} failed start(s) in a row): {self.worker.last_error}"
                                   if self.failed_starts else ""))
        return self.failed_starts < LIVE_FAILURES, ready, why

    def stop(self) -> None:
        """Graceful: stop accepting, let queued and in-flight requests finish, stop the worker."""
        self._accepting = False
        self._stopped.set()
        if self._grpc is not None:
            self._grpc.stop(grace=self.request_timeout).wait()  # no new calls; calls in flight finish
        self._http.close_gate()
        self._http.shutdown()  # no new connections
        with self._idle:  # requests in flight get their answers
            self._idle.wait_for(lambda: self._inflight == 0, timeout=self.request_timeout + 5)
        self._http.server_close()
        self._queue.put(None)
        for t in self._threads:
            if t.name == "harness-batcher":
                t.join(self.request_timeout)
        self.worker.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- batching --------------------------------------------------------------------------

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[list[int]]:
        """One request, whatever its protocol: counted in flight (a graceful stop waits for it)
        and, at the end, in the metrics with the status the caller put in the yielded list."""
        with self._idle:
            self._inflight += 1
        start = time.perf_counter()
        outcome = [500]
        try:
            yield outcome
        finally:
            with self._idle:
                self._inflight -= 1
                self._idle.notify_all()
            self.metrics.request(outcome[0], time.perf_counter() - start if outcome[0] == 200 else None)

    @contextlib.contextmanager
    def counted(self) -> Iterator[None]:
        """In flight (a graceful stop waits for it, a lone request sees it), without the metrics:
        an HTTP request enters once its body is in, so a stalled upload is not engine work."""
        with self._idle:
            self._inflight += 1
        try:
            yield
        finally:
            with self._idle:
                self._inflight -= 1
                self._idle.notify_all()

    def answer(self, request: Request) -> tuple[int, dict[str, np.ndarray] | None, str]:
        """Queue a decoded request and wait for it: (status, outputs or None, error)."""
        if not self._accepting:
            return 503, None, "server is shutting down"
        pending = _Pending(request)
        # A request alone in the server with the engine idle runs from its own thread: the
        # hand-off to the batcher thread and back cost ~0.3 ms a request on a 2-core machine.
        # "Alone" is no other request in flight, not an empty queue: requests the batcher holds
        # while it waits for company are off the queue, and overtaking them broke up batches.
        if ((self.max_batch == 1 or not self.hold_lone_requests) and self._alone()
                and self._engine.acquire(blocking=False)):
            try:
                self._run([pending])
            finally:
                self._engine.release()
        else:
            self._queue.put(pending)
            if not pending.done.wait(self.request_timeout + 5):
                pending.abandoned = True
                return 503, None, f"no answer within {self.request_timeout:.0f} s"
        return pending.status, pending.outputs, pending.error

    def _alone(self) -> bool:
        """No request in flight but the caller's, none queued, none held for a batch."""
        return self._inflight <= 1 and not self._held and self._queue.empty()

    def _next(self, timeout: float | None) -> _Pending | None:
        while True:
            item: _Pending | None
            if self._held:
                item = self._held.popleft()
            else:
                item = self._queue.get(timeout=timeout) if timeout is None or timeout > 0 else self._queue.get_nowait()
            if item is None or not item.abandoned:
                return item

    def _batch_loop(self) -> None:
        while self._batch_once():
            pass  # one batch per call: its requests (and their tensors) are let go between batches

    def _batch_once(self) -> bool:
        """Gather one batch and run it; False once stopped (after draining the queue).

        A batch is the oldest waiting request and every request that can join it (the same
        non-batch shapes), in arrival order, up to max_batch samples: first from those held back
        by earlier batches, then from the queue until the delay is over.  A request that cannot
        join is held for a later batch instead of ending this one, so traffic whose sequence
        lengths alternate (3, 5, 3, 5, ...) is served in batches of each length, not of one."""
        first = self._next(None)
        if first is None:
            return False
        batch, samples = [first], first.request.batch
        kept: collections.deque[_Pending] = collections.deque()
        while self._held:  # the held requests of this shape join, oldest first; the rest stay held
            item = self._held.popleft()
            if (not item.abandoned and samples + item.request.batch <= self.max_batch
                    and _joinable(first.request, item.request, self.padding)):
                batch.append(item)
                samples += item.request.batch
            elif not item.abandoned:
                kept.append(item)
        self._held = kept
        # Alone with the engine idle, waiting would only add the delay to a lone request's latency.
        alone = self._alone() and not self._engine.locked() and not self.hold_lone_requests
        deadline = time.monotonic() + (0.0 if alone else self.max_delay)
        stopping = False
        while samples < self.max_batch:
            left = deadline - time.monotonic()
            try:
                got = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if got is None:
                stopping = True
                break
            item = got
            if item.abandoned:
                continue
            if (samples + item.request.batch > self.max_batch
                    or not _joinable(first.request, item.request, self.padding)):
                self._held.append(item)  # a later batch's
                continue
            batch.append(item)
            samples += item.request.batch
        with self._engine:
            self._run(batch)
        if not stopping:
            return True
        while self._held or not self._queue.empty():  # drain: graceful stop
            try:
                last = self._next(0.0)
            except queue.Empty:
                break
            if last is not None:
                with self._engine:
                    self._run([last])
        return False

    def _wait_ready(self) -> str:
        """"" once the worker is ready; else why not, as soon as that is known: at once when it is
        down between restart attempts, at the end of an attempt that failed, or at the timeout."""
        deadline = time.monotonic() + self.request_timeout
        with self._attempted:
            while not self.worker.ready.is_set():
                if not self.starting and self.failed_starts:
                    return self.health()[2] + "; retry later"
                left = deadline - time.monotonic()
                if left <= 0:
                    return f"engine worker not ready: {self.worker.last_error or 'starting'}"
                self._attempted.wait(min(left, 0.2))  # ready is set inside an attempt: looked at often
        return ""

    def _run(self, batch: list[_Pending]) -> None:
        why = self._wait_ready()
        if why:
            self._fail(batch, 503, why)
            return
        if not self.worker.ready.wait(self.request_timeout):
            self._fail(batch, 503, f"engine worker not ready: {self.worker.last_error or 'starting'}")
            return
        feeds = [p.request.feed for p in batch]
        padded = self.padding.pad(feeds) if self.padding is not None else None
        try:
            # joined along the batch axis straight into the worker's shared memory: no concatenation copy
            outputs = self.worker.run(padded or feeds, self.request_timeout)
        except WorkerDied as e:
            if not self._accepting:  # stopping: no new worker
                self._fail(batch, 503, f"{e}; the server is shutting down")
                return
            self._fail(batch, 503, f"{e}; the worker is being restarted, retry")
            threading.Thread(target=self._restart, name="harness-restart", daemon=True).start()
            return
        except WorkerNotReady as e:
            self._fail(batch, 503, str(e))
            return
        except InputError as e:
            self._fail(batch, 400, str(e))
            return
        except HarnessError as e:
            self._fail(batch, 500, f"engine error: {e}")
            return
        except Exception as e:  # noqa: BLE001 - a bug of ours: answered, and the batcher lives on
            self._fail(batch, 500, f"internal error: {type(e).__name__}: {e}")
            return
        total = sum(p.request.batch for p in batch)
        self.metrics.batch(total)
        ragged = [k for k, v in outputs.items() if v.shape[:1] != (total,)]
        if ragged and len(batch) > 1:
            # an output whose rows are not per sample (NMS's selected boxes) cannot be split among
            # the requests that shared the batch: never guessed at
            self._fail(batch, 500, f"output(s) {ragged} have no row per sample (data-dependent shapes), so requests "
                                   "cannot share an engine batch; serve this model with --dynamic-batch 1")
            return
        if ragged:
            batch[0].outputs = outputs
            batch[0].done.set()
            return
        start = 0
        for p in batch:
            n = p.request.batch
            p.outputs = {k: v[start : start + n] for k, v in outputs.items()}
            if padded is not None and self.padding is not None:  # per-token outputs back to the request's length
                p.outputs = self.padding.cut(p.outputs, p.request.feed, padded[0][self.padding.mask].shape[1])
            start += n
            p.done.set()

    @staticmethod
    def _fail(batch: list[_Pending], status: int, message: str) -> None:
        for p in batch:
            p.status, p.error = status, message
            p.done.set()


# RFC 9110 5.6.2, 5.5 and RFC 9112 2.3, 3.2: a method or header name, a header value (visible
# characters and obs-text, spaces and tabs between), the request target, the version.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_VALUE = re.compile(r"([\x21-\x7e\x80-\xff]([ \t]*[\x21-\x7e\x80-\xff])*)?")
_TARGET = re.compile(r"[\x21-\x7e]+")
_VERSION = re.compile(r"HTTP/[0-9]\.[0-9]")


def _count(value: str | None) -> int | None:
    """A header's non-negative integer (ASCII digits only: "²".isdigit() is True), else None."""
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


def _framing_error(headers: HTTPMessage, method: str) -> str:
    """Why a request's body cannot be delimited without guessing (RFC 9112 6.1-6.3, 11.2), or "".
    The server reads bodies by Content-Length only: Transfer-Encoding (alone or beside a
    Content-Length: the smuggling form), a Content-Length that is not one ASCII number, or
    duplicates, are refused on every route, and a body on a method that takes none."""
    if headers.get("Transfer-Encoding") is not None:
        return "Transfer-Encoding is not accepted; send the body with a Content-Length"
    lengths = headers.get_all("Content-Length") or []
    if len(lengths) > 1:
        return "more than one Content-Length"
    if lengths and _count(lengths[0]) is None:
        return f"Content-Length {lengths[0][:40]!r} is not a number"
    if method in ("GET", "HEAD", "DELETE", "OPTIONS") and lengths and _count(lengths[0]) != 0:
        return f"{method} takes no body"
    return ""


def _head_size(value: str | None, size: int) -> int:
    """The JSON header's length of a binary-data request of `size` bytes with tensors after it;
    0 when there is none, or when it is invalid (decode_request then says what is wrong)."""
    count = _count(value)
    return count if count is not None and 0 < count < size else 0


_DATE: list[Any] = [0, ""]  # the second and its HTTP date: formatted once a second, not per answer


def _http_date() -> str:
    now = int(time.time())
    if now != _DATE[0]:
        _DATE[:] = [now, email.utils.formatdate(now, usegmt=True)]
    return str(_DATE[1])


def _joinable(a: Request, b: Request, padding: Padding | None = None) -> bool:
    """Whether two requests can share an engine batch: every input alike but for the batch size
    (a model with a dynamic sequence length gets requests of different lengths), or, padding on,
    but for the padded inputs' sequence length too."""
    if padding is None:
        return all(x.shape[1:] == b.feed[n].shape[1:] for n, x in a.feed.items())
    return all(x.shape[2:] == b.feed[n].shape[2:] if n in padding.inputs else x.shape[1:] == b.feed[n].shape[1:]
               for n, x in a.feed.items())


@dataclass(frozen=True)
class Padding:
    """Requests of different sequence lengths batched together (`harness serve --pad-with-mask
    MASK`): every input with a dynamic second axis (ids, token types, the mask) is zero-padded to
    the batch's longest, so the model's attention mask hides the padding; outputs with a dynamic
    second axis as long as the padded batch (per-token outputs) are cut back to each request's own
    length.  Right only for a model that reads its mask everywhere: a pooled output that ignores
    the mask changes with padding."""

    mask: str
    inputs: frozenset[str]  # padded along axis 1
    outputs: frozenset[str]  # cut along axis 1

    @classmethod
    def of(cls, spec: ModelSpec, mask: str) -> Padding:
        padded = frozenset(t.name for t in spec.inputs if len(t.shape) >= 2 and t.shape[1] is None)
        if mask not in spec.input_names:
            raise HarnessError(f"--pad-with-mask {mask}: the model has no input {mask!r} (its inputs: "
                               f"{spec.input_names})")
        if mask not in padded:
            raise HarnessError(f"--pad-with-mask {mask}: input {mask!r} has no dynamic sequence axis (shape "
                               f"{next(t.shape for t in spec.inputs if t.name == mask)}); padding needs a mask as long as the sequence")
        return cls(mask, padded, frozenset(t.name for t in spec.outputs if len(t.shape) >= 2 and t.shape[1] is None))

    def pad(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]] | None:
        """The feeds with their padded inputs zero-padded to the longest; None when all are as long."""
        longest = max(f[self.mask].shape[1] for f in feeds)
        if all(f[self.mask].shape[1] == longest for f in feeds):
            return None
        return [{n: (np.pad(a, [(0, 0), (0, longest - a.shape[1])] + [(0, 0)] * (a.ndim - 2)) if n in self.inputs
                     else a) for n, a in f.items()} for f in feeds]

    def cut(self, outputs: Mapping[str, np.ndarray], feed: Mapping[str, np.ndarray],
            padded_length: int) -> dict[str, np.ndarray]:
        own = feed[self.mask].shape[1]
        return {k: v[:, :own] if k in self.outputs and v.ndim >= 2 and v.shape[1] == padded_length else v
                for k, v in outputs.items()}


class _HTTPServer(ThreadingHTTPServer):
    # Idle keep-alive connections must not hold up stop(); requests in flight are counted
    # and waited for there instead.
    daemon_threads = True
    block_on_close = False
    # socketserver listens with a backlog of 5: a burst of clients connecting together was
    # refused (connection resets on an H100 host, 2 of 4 runs of 32 threads). The kernel caps
    # this at net.core.somaxconn.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], handler: Any, app: InferenceServer) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)
        self.closing = False  # stop() under way: nothing waits for a free place any more
        self._full_since: float | None = None  # when every place was last taken with nobody leaving
        self._reaping = threading.Event()  # set: the reaper ends
        self.connections = 0  # served now, each by a thread
        self.refused = 0  # turned away with 503: over --max-connections
        self.reaped = 0  # closed by the reaper: past a header, body or idle deadline
        self._deadlines: dict[_Handler, tuple[float, bytes]] = {}  # handler -> (when, what to send then)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            # Full: this (accepting) thread waits, so further clients queue in the kernel's backlog, for
            # up to the header timeout since the server became full (not each: a queue of N would
            # wait N timeouts); past it, each is refused at once until a place frees.
            def free() -> bool:
                return self.connections < self.app.max_connections or self.closing

            if not free():
                self._full_since = self._full_since or time.monotonic()
                # (at least a reaper's tick: a place a closing client is about to free)
                left = max(self._full_since + self.app.header_timeout - time.monotonic(), REAP_EVERY)
                full = left <= 0 or not self._freed.wait_for(free, timeout=left)
            else:
                full = False
            full = full or self.closing
            if not full:
                self.connections += 1
        if full:  # no thread for it: a short answer, without waiting on the client, and closed
            self.refused += 1
            body = json.dumps({"error": f"over {self.app.max_connections} connections; retry"}).encode()
            with contextlib.suppress(OSError):
                request.setblocking(False)
                request.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                             b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def close_gate(self) -> None:
        """Stopping: a connection waiting for a free place is refused now."""
        with self._freed:
            self.closing = True
            self._freed.notify_all()
        self._reaping.set()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self.connections -= 1
                self._full_since = None
                self._freed.notify()

    def expire(self, handler: _Handler, seconds: float | None, say: bytes = b"") -> bool:
        """Close `handler`'s connection `seconds` from now unless called again first (None: no
        deadline); `say`: what to send it then (a 408 mid-request; nothing to an idle one).
        False if the reaper has closed it already: nothing more may be written to it."""
        with self._lock:
            if handler.expired:
                return False
            if seconds is None:
                self._deadlines.pop(handler, None)
            else:
                self._deadlines[handler] = (time.monotonic() + seconds, say)
            return True

    def reap(self) -> None:
        """The reaper thread: shut the sockets of connections past their deadline (the thread
        blocked reading one then sees the end of its input and finishes)."""
        while not self._reaping.wait(REAP_EVERY):
            now = time.monotonic()
            with self._lock:  # marked under the lock: a handler's expire() then says it is closed
                late = [(h, say) for h, (when, say) in self._deadlines.items() if when <= now]
                for h, _ in late:
                    del self._deadlines[h]
                    h.expired = True
            for handler, say in late:
                self.reaped += 1
                with contextlib.suppress(OSError):
                    if say:
                        handler.connection.setblocking(False)
                        handler.connection.send(say)
                    handler.connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exception(), ConnectionError | TimeoutError):  # a client that left is not news
            super().handle_error(request, client_address)


def _timeout_answer(what: str) -> bytes:
    body = json.dumps({"error": f"{what} did not arrive in time"}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    # A large body goes out in a second write (and the standard library's error pages always do);
    # with Nagle's algorithm that write waits for the client's delayed ACK, ~40 ms an answer.
    disable_nagle_algorithm = True
    server: _HTTPServer
    raw_requestline: bytes  # read by the standard library's handle_one_request
    server_version = f"harness/{__version__}"

    def setup(self) -> None:
        super().setup()
        self._buffer = bytearray()
        self._gone = False  # the client left mid-body: nobody to answer
        self.expired = False  # the reaper closed the connection: past a deadline
        self._served = 0

    def handle_one_request(self) -> None:
        app = self.server.app
        # A new connection has the header timeout to send its request's head; a kept-alive one the
        # idle timeout to start the next (then the header timeout for the rest of its head).
        if self._served:
            self.server.expire(self, app.idle_timeout)
        else:
            self.server.expire(self, app.header_timeout, _timeout_answer("the request's headers"))
        try:
            super().handle_one_request()
        finally:
            self._served += 1
            if self.expired:
                self.close_connection = True

    def finish(self) -> None:
        self.server.expire(self, None)
        with contextlib.suppress(OSError, ValueError):  # the reaper may have shut it already
            super().finish()

    def parse_request(self) -> bool:
        """The request line and headers of HTTP/1.0 and 1.1, as the standard library's
        parse_request reads them but without the email package's parser, which took ~0.1 ms of
        every request (a tenth of the serving budget). On failure the error is already sent."""
        self.command = None  # type: ignore[assignment]  # until the request line is read
        self.request_version = "HTTP/1.1"  # errors go out with a status line (HTTP/0.9 had none; not spoken here)
        self.close_connection = True
        app = self.server.app
        if self._served:  # the request line of a kept-alive connection's next request: its head's deadline
            self.server.expire(self, app.header_timeout, _timeout_answer("the request's headers"))
        self.requestline = str(self.raw_requestline, "iso-8859-1").removesuffix("\n").removesuffix("\r")
        if not self.requestline.strip():
            return False
        # RFC 9112 3: method SP request-target SP HTTP-version, one space each (a parser that splits
        # on any whitespace reads "GET /a\t/b HTTP/1.1" as another target than a proxy in front does).
        words = self.requestline.split(" ")
        if len(words) != 3 or not _VERSION.fullmatch(words[2]):
            self.send_error(HTTPStatus.BAD_REQUEST, f"bad request line {self.requestline[:100]!r}")
            return False
        if words[2] not in ("HTTP/1.0", "HTTP/1.1"):
            self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, f"{words[2]} is not supported, use HTTP/1.1")
            return False
        if not _TOKEN.fullmatch(words[0]):
            self.send_error(HTTPStatus.BAD_REQUEST, f"bad method {words[0][:40]!r}")
            return False
        if not _TARGET.fullmatch(words[1]):
            self.send_error(HTTPStatus.BAD_REQUEST, f"bad request target {words[1][:100]!r}")
            return False
        self.command, self.path, self.request_version = words
        headers = HTTPMessage()
        for _ in range(MAX_HEADERS + 1):
            line = self.rfile.readline(MAX_HEADER_LINE + 1)
            if len(line) > MAX_HEADER_LINE:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "header line too long")
                return False
            if line == b"":  # the client left, or the reaper closed it, mid-headers: no request to answer
                self._gone = True
                return False
            if line in (b"\r\n", b"\n"):
                break
            name, colon, value = line.decode("iso-8859-1").removesuffix("\n").removesuffix("\r").partition(":")
            value = value.strip(" \t")
            # A name that is not a token (obsolete line folding, whitespace before the colon: RFC
            # 9112 5.1, a proxy may read "Content-Length : 5" as another header than this server
            # does) or a value with control characters (a lone CR among them) is refused.
            if not colon or not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
                self.send_error(HTTPStatus.BAD_REQUEST, f"bad header line {line[:100]!r}")
                return False
            headers[name] = value
        else:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"more than {MAX_HEADERS} headers")
            return False
        self.headers = headers
        if not self._disarm():  # the head is in; unless the reaper closed it just now
            return False
        hosts = headers.get_all("Host") or []
        if len(hosts) > 1 or (not hosts and self.request_version == "HTTP/1.1"):
            # RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request without exactly one Host.
            self.send_error(HTTPStatus.BAD_REQUEST, "an HTTP/1.1 request needs exactly one Host header")
            return False
        framing = _framing_error(headers, self.command)
        if framing:  # one rule for every method and path: an ambiguous body is never guessed at
            self.send_error(HTTPStatus.BAD_REQUEST, framing)
            return False
        connection = headers.get("Connection", "").lower()
        self.close_connection = connection == "close" or (self.request_version == "HTTP/1.0"
                                                          and connection != "keep-alive")
        if headers.get("Expect", "").lower() == "100-continue" and self.request_version == "HTTP/1.1":
            return self.handle_expect_100()  # curl asks before sending a body over 1 MB
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Every error as JSON, as the routes answer them (the standard library sends HTML: an
        unknown method's 501, a request line over 64 KiB's 414), and the connection closed."""
        self.close_connection = True
        if self._disarm():  # not if the reaper answered 408 already
            self._error(code, message or HTTPStatus(code).phrase)

    def _disarm(self) -> bool:
        """This connection's deadline off; False if the reaper closed it already."""
        if self.server.expire(self, None):
            return True
        self.expired = self.close_connection = True
        return False

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request on stderr would cost more than serving it

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        if self._gone or not self._disarm():
            return  # closed under us: nobody to answer
        # A client that does not read its answer must not hold the thread: the reaper closes it.
        self.server.expire(self, self.server.app.body_timeout)
        lines = [f"{self.protocol_version} {status} {HTTPStatus(status).phrase}", f"Server: {self.server_version}",
                 f"Date: {_http_date()}", f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
        if self.close_connection:  # say so: a client reusing the connection would meet a closed socket
            lines.append("Connection: close")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # Head and a small body in one write: two cost a system call each, and the client reading
        # the head then waits for the body's own segment.
        if len(body) <= 1 << 16:
            self.wfile.write(head + body)
        else:
            self.wfile.write(head)
            self.wfile.write(body)
        self.wfile.flush()
        self._disarm()

    def _json(self, status: int, doc: Any) -> None:
        self._send(status, json.dumps(doc).encode())

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _model_path(self, path: str) -> tuple[str, str] | None:
        """'/v2/models/NAME[/versions/V][/TAIL]' -> (NAME, TAIL)."""
        if not path.startswith("/v2/models/"):
            return None
        parts = path[len("/v2/models/"):].split("/")
        name, rest = parts[0], parts[1:]
        if len(rest) >= 2 and rest[0] == "versions":
            rest = rest[2:]
        return name, "/".join(rest)

    def do_GET(self) -> None:
        app = self.server.app
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/v2/health/live":
            live, _, why = app.health()
            self._json(200 if live else 503, {"live": True} if live else {"live": False, "reason": why})
        elif path == "/v2/health/ready":
            _, ready, why = app.health()
            self._json(200 if ready else 503, {"ready": True} if ready else {"ready": False, "reason": why})
        elif path == "/v2":
            self._json(200, {"name": "harness", "version": __version__, "extensions": ["binary_tensor_data"]})
        elif path == "/metrics":
            self._send(200, app.metrics.text().encode(), "text/plain; version=0.0.4")
        elif (target := self._model_path(path)) is not None:
            name, tail = target
            if name != app.model_name:
                self._error(404, f"unknown model {name!r}; this server serves {app.model_name!r}")
            elif tail == "":
                self._json(200, app.metadata)
            elif tail == "ready":
                _, ready, why = app.health()
                self._json(200 if ready else 503, {"name": name, "ready": ready, **({"reason": why} if why else {})})
            else:
                self._error(404, f"no route GET {path}")
        else:
            self._error(404, f"no route GET {path}")

    def do_POST(self) -> None:
        app = self.server.app
        start = time.perf_counter()
        try:
            status, message = self._infer(app)
        except (ConnectionError, TimeoutError):
            raise  # the client is gone: nobody to answer
        except Exception as e:  # noqa: BLE001 - a bug of ours still gets an answer, never silence
            self.close_connection = True
            status, message = 500, f"internal error: {type(e).__name__}: {e}"
        if self.expired:
            return  # the reaper answered 408 and closed it: a client too slow, not a request served
        app.metrics.request(status, time.perf_counter() - start if status == 200 else None)
        if status != 200 and not self._gone:
            self._error(status, message)

    def _infer(self, app: InferenceServer) -> tuple[int, str]:
        # Every body, read or drained, has the body timeout to arrive: a client announcing one and
        # sending nothing holds its thread no longer.
        self.server.expire(self, app.body_timeout, _timeout_answer("the request's body"))
        try:
            status, message = self._infer_body(app)
        finally:
            self._disarm()
        return status, message

    def _infer_body(self, app: InferenceServer) -> tuple[int, str]:
        path = self.path.split("?", 1)[0].rstrip("/")
        target = self._model_path(path)
        if target is None or target[1] != "infer":
            self._discard_body()
            return 404, f"no route POST {path}"
        if target[0] != app.model_name:
            self._discard_body()
            return 404, f"unknown model {target[0]!r}; this server serves {app.model_name!r}"
        size = _count(self.headers.get("Content-Length"))  # parse_request checked the framing
        if size is None:
            self.close_connection = True
            return 411, "a Content-Length is required"
        if size > app.max_body:  # said before a buffer is allocated; the body is drained in small reads
            self._discard_body()
            return 413, f"request body of {size} bytes is over the limit of {app.max_body} bytes"
        head = _head_size(self.headers.get(HEADER_LENGTH), size)
        slot = None
        try:
            try:
                request = None
                if head:
                    # The JSON header, then the first bytes of the tensors, as they arrive; only then
                    # (the body is coming) a shared-memory slot the engine reads them from.
                    first = self._read_growing(head + min(size - head, 1 << 16), size)
                    slot = app.worker.slots.lease(size - head) if first is not None else None
                    if first is not None and slot is not None:
                        binary = buffer(slot)[: size - head]
                        binary[: len(first) - head] = first[head:]
                        if self._read_into(binary[len(first) - head:]):
                            request = decode_split(bytes(first[:head]), binary, app.spec)
                    elif first is not None:  # no slot free: ordinary memory, grown as the rest arrives
                        body = self._read_growing(size, size, first)
                        if body is not None:
                            request = decode_request(memoryview(body), self.headers.get(HEADER_LENGTH), app.spec)
                elif size > KEEP_BUFFER:  # a big body grows as it arrives, and its buffer is not kept
                    body = self._read_growing(size, size)
                    if body is not None:
                        request = decode_request(memoryview(body), self.headers.get(HEADER_LENGTH), app.spec)
                else:
                    if len(self._buffer) < size:  # kept for the connection's next requests
                        self._buffer = bytearray(size)
                    view = memoryview(self._buffer)[:size]
                    if self._read_into(view):
                        request = decode_request(view, self.headers.get(HEADER_LENGTH), app.spec)
            except ProtocolError as e:
                return 400, str(e)
            if not self._disarm():
                return 408, "the request's body did not arrive in time"  # answered by the reaper already
            if request is None:
                self.close_connection = self._gone = True
                return 400, f"the body ended before its Content-Length of {size} bytes"
            if request.batch > app.max_batch and app.max_batch > 1:
                return 400, f"batch of {request.batch} is over the server's --dynamic-batch {app.max_batch}"
            with app.counted():  # in flight from here: the body is in
                status, outputs, error = app.answer(request)
                if outputs is None:
                    return status, error
                answer, headers = encode_response(request, outputs, app.model_name)
                self._send(200, answer, "application/octet-stream" if headers else "application/json", headers)
            return 200, ""
        finally:
            if slot is not None:
                app.worker.slots.give_back(slot)

    def _read_growing(self, want: int, size: int, start: bytes | bytearray = b"") -> bytearray | None:
        """The body's first `want` bytes (beyond `start`, already read), in a buffer that grows as
        they arrive, at most twice what has come (an announced `size` costs nothing until it is
        sent); None if the body ends first."""
        data = bytearray(start)
        got = len(data)
        while got < want:
            if got == len(data):  # full: double it, never past the body's size
                data.extend(bytes(min(max(len(data), 1 << 16), size - len(data))))
            n = self.rfile.readinto(memoryview(data)[got:min(len(data), want)])
            if not n:
                return None
            got += n
        del data[got:]
        return data

    def _read_into(self, view: memoryview) -> bool:
        """Fill `view` from the request body; False if the body ends first."""
        got = 0
        while got < len(view):
            n = self.rfile.readinto(view[got:])
            if not n:
                return False
            got += n
        return True

    def _discard_body(self) -> None:
        """Read and drop a body this server will not use. Closing with it unread makes the
        kernel reset the connection, and a client still sending loses the error answer; a
        body too large to be worth reading is not read, and the connection is closed."""
        count = _count(self.headers.get("Content-Length", "0"))
        remaining = -1 if count is None else count
        if not 0 <= remaining <= DRAIN_LIMIT_FACTOR * self.server.app.max_body:
            self.close_connection = True
            return
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                self.close_connection = True
                return
            remaining -= len(chunk)


def _serve_here(conn: Any, recipe: RunnerRecipe, spec: dict[str, Any], options: dict[str, Any]) -> None:
    """ServerProcess's child: serve until the parent says stop (or is gone)."""
    try:
        server = InferenceServer(recipe, ModelSpec.from_dict(spec), **options)
        server.start()
    except BaseException as e:  # noqa: BLE001 - said to the parent, which raises it
        conn.send(("failed", f"{type(e).__name__}: {e}"))
        return
    conn.send(("serving", server.url))
    try:
        conn.recv()
    except EOFError:
        pass
    finally:
        server.stop()


class ServerProcess:
    """An InferenceServer in a process of its own, as `harness serve` runs it: a client here
    (a load test, a benchmark) then shares no interpreter lock with the server it measures.

        with ServerProcess(recipe, spec, model_name="m", platform="p") as url: ...
    """

    def __init__(self, recipe: RunnerRecipe, spec: ModelSpec, start_timeout: float = 300.0, **options: Any) -> None:
        self.recipe, self.spec, self.start_timeout = recipe, spec, start_timeout
        self.options = {"start_timeout": start_timeout, **options}  # InferenceServer's, in the child
        self.url = ""

    def __enter__(self) -> str:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve_here, args=(child, self.recipe, self.spec.to_dict(), self.options),
                                    name="harness-server")
        self._process.start()
        child.close()
        try:
            if not self._conn.poll(self.start_timeout + 30):
                raise WorkerNotReady(f"server process not serving after {self.start_timeout:.0f} s")
            state, said = self._conn.recv()
            if state != "serving":
                raise WorkerNotReady(said)
            self.url = said
        except EOFError:
            self._process.join(10)
            self._abandon()
            raise WorkerNotReady(f"server process exited with code {self._process.exitcode} while starting") from None
        except BaseException:
            self._abandon()
            raise
        return self.url

    def _abandon(self) -> None:
        """A start that failed: nothing of it is left running or open."""
        if self._process.is_alive():
            self._process.kill()
        self._process.join(10)
        self._conn.close()

    def __exit__(self, *exc: object) -> None:
        try:
            self._conn.send(None)
        except OSError:
            pass
        self._process.join(self.options.get("request_timeout", DEFAULT_TIMEOUT) + 30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._conn.close()
