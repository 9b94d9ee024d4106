"""Progress lines for long steps (freezing, tf2onnx export, golden generation) on stderr,
with a heartbeat so a 25-second export does not look like a hang."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import Protocol

HEARTBEAT_S = 10.0


class Stream(Protocol):
    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


@contextlib.contextmanager
def step(what: str, stream: Stream | None = None, heartbeat_s: float = HEARTBEAT_S) -> Iterator[None]:
    out = stream or sys.stderr
    print(f"[harness] {what} ...", file=out, flush=True)
    start = time.perf_counter()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(heartbeat_s):
            print(f"[harness] {what}: {time.perf_counter() - start:.0f} s so far", file=out, flush=True)

    ticker = threading.Thread(target=beat, daemon=True)
    ticker.start()
    try:
        yield
    except BaseException:
        print(f"[harness] {what}: failed after {time.perf_counter() - start:.1f} s", file=out, flush=True)
        raise
    finally:
        done.set()
        ticker.join()
    print(f"[harness] {what}: done in {time.perf_counter() - start:.1f} s", file=out, flush=True)
