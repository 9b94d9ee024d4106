"""Instructions per inference call, counted under Valgrind's callgrind: a measurement that does
not move with what else the machine is doing, so a gate on it can catch a 2% slowdown on a
noisy 2-core runner where wall time cannot (its spread between processes is tens of percent).

- **One process per engine, under Valgrind** (`count_instructions`): `valgrind --tool=callgrind
  --instr-atstart=no python -m harness.counting JOB OUT`.  The child makes the runner from its
  recipe (`Runner.recipe()`), single-threaded (one intra-op thread, no spinning thread pool: a
  thread pool's spin loop counts instructions while it waits), runs `WARMUP` uncounted calls
  per batch size (first-call tracing, arena growth), then counts `CALLS` calls one by one: the
  counters zeroed before each call and dumped after it (callgrind's client requests, from a
  four-function C library compiled once against valgrind's own `callgrind.h`), with the
  kernel's address randomization off for the child (`setarch -R`; the child reports whether it
  took: a container whose seccomp profile refuses it counts with a little more spread).
- **The same count on Intel and AMD**: under Valgrind the program does not see the host's
  CPU.  Valgrind 3.19's amd64 guest answers CPUID with a canned CPU (on an AVX2 host:
  "GenuineIntel, Intel(R) Core(TM) i7-4910MQ", AVX2, no AVX-512, Intel cache descriptors;
  seen on an AMD EPYC host and on an Intel Xeon with AVX-512, VNNI and AMX), so ONNX Runtime's
  MLAS, oneDNN and OpenVINO pick the same kernels on any AVX2 machine, and the count depends on
  the binaries and the inputs, not the vendor: the same user space carried to both
  (scripts/counts_elsewhere.sh) counted digits' rows within 0.03% of each other, inside the
  spread between processes on either.
  The baseline is therefore keyed by the counting class (`counting_class`: architecture,
  Valgrind version, library versions), not by the machine class wall-time speedups need.
- **The mean of the middle 3 of `CALLS` = 9 calls, each counted alone** (`trimmed_mean`): a
  sum over the calls took in whatever one-off work fell inside them.  ONNX Runtime fp32 at batch
  1 read 175,272 or 176,580 per call (0.75% apart) in about a third of processes: one call in
  those ran ~6,500 more instructions of one-time work in ONNX Runtime (string parsing among it)
  at a moment that varies between processes.  Counted one by one, the calls of a process follow
  a fixed pattern (ONNX Runtime int8 at batch 1: ~242.5k, 241.6k, 246k, 238.8k, 238.2k), and
  each call moves by a few hundred instructions between processes with the heap's layout
  (malloc and Python's allocator): the median of 5 single calls still spread 0.29% between
  processes on a loaded machine; with address randomization off and the mean of the middle
  calls, the 0.1% the gate's margin needs is kept.  On a cold CI machine three of the first
  counted calls after 5 warm-up calls carried one-off work (up to +6%), so the middle 5 took one
  of them in, a different one with and without an event elsewhere (0.29% apart): now 8 warm-up
  calls and the middle 3, which stays put with up to 3 such calls at either end.  (Figures include
  the zero/dump requests around each call; a baseline counted another way is refused, not
  compared: `METHOD`.)
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import BackendUnavailable, HarnessError

CALLS = 9
WARMUP = 8
TRIM = 3  # calls dropped at each end before averaging (one-off events; see the module's docstring)
# What a count means; a baseline counted another way is not compared (harness.timing.check_counts).
METHOD = (f"mean of the middle {CALLS - 2 * TRIM} of {CALLS} single calls after {WARMUP} uncounted, one thread, "
          "address randomization off, callgrind Ir")
VALGRIND_ENV = "HARNESS_VALGRIND"  # another valgrind binary than the one on PATH
KEPT_ENV = ("PATH", "HOME", "LANG", "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "VALGRIND_LIB", "TMPDIR",
            "TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "HARNESS_VERBOSE")
HEADER = Path("/usr/include/valgrind/callgrind.h")
_CLIENT_C = r"""
#include <valgrind/callgrind.h>
void harness_count_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void harness_count_zero(void) { CALLGRIND_ZERO_STATS; }
void harness_count_dump(const char *name) { CALLGRIND_DUMP_STATS_AT(name); }
void harness_count_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
"""
# The child's environment: one thread everywhere, spinning off, Python's hashing fixed.  OpenBLAS
# (numpy's) keeps a thread per core spinning after its calls: on a loaded machine those threads
# added up to 1.8% to a count (the same 5 calls read 918,335 and 935,591 per call); with one
# thread, ONNX Runtime's counts repeat to 0.02% between processes.
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
                     "OMP_WAIT_POLICY": "PASSIVE", "PYTHONHASHSEED": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}


def valgrind() -> str | None:
    return os.environ.get(VALGRIND_ENV) or shutil.which("valgrind")


def unavailable() -> str | None:
    """Why instructions cannot be counted here, or None."""
    if valgrind() is None:
        return "valgrind not found (Debian/Ubuntu: apt install valgrind)"
    if not HEADER.is_file():
        return f"{HEADER} not found (valgrind's client-request header; Debian/Ubuntu ship it with valgrind)"
    if shutil.which(os.environ.get("CC", "cc")) is None:
        return "no C compiler (cc) to build the client-request library (apt install gcc)"
    if platform.machine() not in ("x86_64", "AMD64", "aarch64"):
        return f"valgrind does not run on {platform.machine()}"
    return None


def client_library(root: Path) -> Path:
    """The client-request library, compiled once into `root` (written aside and renamed in)."""
    lib = Path(root) / "valgrind" / "libharness_count2.so"  # 2: per-call dumps
    if lib.is_file():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
        src = Path(tmp) / "count.c"
        src.write_text(_CLIENT_C)
        out = Path(tmp) / lib.name
        done = subprocess.run([os.environ.get("CC", "cc"), "-O2", "-shared", "-fPIC", "-o", str(out), str(src)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BackendUnavailable("valgrind", f"cannot compile the client-request library: {done.stderr.strip()[:300]}")
        os.replace(out, lib)
    return lib


def counting_class() -> dict[str, Any]:
    """What a count depends on: the architecture, Valgrind's version (its guest CPU model) and
    the libraries; not the host CPU's vendor or model (see the module's docstring)."""
    from harness.machine import versions

    version = subprocess.run([valgrind() or "valgrind", "--version"], capture_output=True, text=True,
                             check=False).stdout.strip()
    libs = {k: v for k, v in versions().items() if k in ("tensorflow", "onnxruntime", "openvino", "numpy") and v}
    # The C library counts too (malloc, memcpy inside the counted calls): the same wheels over
    # another distribution's glibc are another user space.
    libc = " ".join(platform.libc_ver()).strip()
    return {"arch": platform.machine(), "valgrind": version, "python": platform.python_version(), "libc": libc,
            "versions": libs, "method": METHOD}


def class_key(cls: Mapping[str, Any]) -> str:
    libs = ", ".join(f"{k} {v}" for k, v in sorted(cls.get("versions", {}).items()))
    return f"{cls.get('arch')} under {cls.get('valgrind')}, Python {cls.get('python')}; {libs}"


@dataclass(frozen=True)
class Count:
    """Instructions per call of one engine at one batch size: the trimmed mean of CALLS calls, each
    counted on its own, after WARMUP uncounted ones; `calls` holds every call's count."""

    engine: str
    batch: int
    per_call: float
    calls: tuple[int, ...]
    aslr_off: bool | None = None  # the child ran without address randomization (None: not known)


def single_threaded(recipe_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A runner's constructor arguments with one intra-op thread where the runner takes one."""
    kwargs = dict(recipe_kwargs)
    if "threads" in kwargs:
        kwargs["threads"] = 1
    return kwargs


def count_instructions(recipe: Any, batches: Sequence[int], root: Path, calls: int = CALLS,
                       warmup: int = WARMUP, timeout: float = 1800,
                       progress: Callable[[str], None] | None = None, name: str = "") -> dict[int, Count]:
    """Instructions per call of the runner `recipe` makes, at each batch size, counted in one
    Valgrind process.  Raises BackendUnavailable where counting cannot run, HarnessError (naming
    the engine and the log) where the child failed."""
    why = unavailable()
    if why:
        raise BackendUnavailable("valgrind", why)
    lib = client_library(root)
    work = Path(tempfile.mkdtemp(prefix="count-", dir=Path(root) / "valgrind"))
    try:
        job = work / "job.json"
        job.write_text(json.dumps({"factory": recipe.factory, "kwargs": single_threaded(recipe.kwargs),
                                   "batches": list(batches), "calls": calls, "warmup": warmup, "library": str(lib)}))
        out = work / "out.json"
        cmd = [valgrind() or "valgrind", "--tool=callgrind", "--instr-atstart=no", "--smc-check=all-non-file",
               "--separate-threads=yes",
               f"--callgrind-out-file={work / 'callgrind.out'}", sys.executable, "-m", "harness.counting",
               str(job), str(out)]
        # A fixed environment, not the caller's: its size moves the stack the child starts on, and
        # with it the alignment paths libc's copies take (pytest's PYTEST_CURRENT_TEST, the test's
        # name, moved ONNX Runtime fp32's count at batch 1 by 0.8% between runs).
        env = {k: os.environ[k] for k in KEPT_ENV if k in os.environ} | SINGLE_THREAD_ENV
        if progress is not None:
            progress(f"counting instructions of {name or recipe.factory} under valgrind (batches "
                     f"{','.join(map(str, batches))}; slow: Valgrind runs code about 50x slower) ...")
        try:
            done = subprocess.run(_without_address_randomization(cmd), capture_output=True, text=True, timeout=timeout,
                                  env=env, check=False)
        except subprocess.TimeoutExpired as e:
            raise HarnessError(f"{name or recipe.factory}: counting under valgrind took over {timeout:.0f} s; "
                               "count fewer batch sizes or a smaller model") from e
        if done.returncode != 0 or not out.is_file():
            log = work.parent / f"{work.name}.log"
            log.write_text(done.stdout + "\n" + done.stderr)
            raise HarnessError(f"{name or recipe.factory}: counting under valgrind failed (exit {done.returncode}); "
                               f"its output is in {log}: {_last_line(done.stderr)}")
        counted = json.loads(out.read_text())
        # ONNX Runtime and OpenVINO, one intra-op thread, run in the calling thread: only its count
        # is theirs (another library's helper thread waking in the counted stretch moved a count by
        # 0.75% on a loaded machine).  TensorFlow runs its kernels on its own pool: every thread.
        totals = _dump_totals(work, main_thread_only=counted.get("backend") != "tensorflow")
        result = {}
        for batch in batches:
            each = tuple(totals.get(f"batch{batch}.call{i}", -1) for i in range(calls))
            if min(each) < 0:
                raise HarnessError(f"{name}: callgrind wrote no dump for some calls at batch {batch} "
                                   f"(dumps: {sorted(totals)})")
            result[batch] = Count(counted["engine"], batch, trimmed_mean(each), each, counted.get("aslr_off"))
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def trimmed_mean(counts: Sequence[int], trim: int = TRIM) -> float:
    """The mean of `counts` without its `trim` lowest and highest (all of them when too few)."""
    ordered = sorted(counts)
    kept = ordered[trim:len(ordered) - trim] if len(ordered) > 2 * trim else ordered
    return float(statistics.fmean(kept))


def _without_address_randomization(cmd: list[str]) -> list[str]:
    """`cmd` under `setarch ARCH -R` (util-linux), which sets the kernel's ADDR_NO_RANDOMIZE
    personality before exec, so the heap and libraries sit at the same addresses in every
    process; `cmd` itself where there is no setarch (the counts then vary a little more, and the
    child says so: `aslr_off` in its answer)."""
    setarch = shutil.which("setarch")
    return [setarch, platform.machine(), "-R", *cmd] if setarch else cmd


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("==")]
    return lines[-1][:300] if lines else "no output"


def _dump_totals(work: Path, main_thread_only: bool = False) -> dict[str, int]:
    """Callgrind's dumps by trigger name ("batch8") -> instructions (the `totals:` line; a dump
    triggered by a client request has `summary: 0` and its counts under `totals:`)."""
    totals: dict[str, int] = {}
    for path in work.glob("callgrind.out*"):
        text = path.read_text(errors="replace")
        trigger = re.search(r"^desc: Trigger: Client Request: (\S+)", text, re.MULTILINE)
        total = re.search(r"^totals:\s+(\d+)", text, re.MULTILINE)
        thread = re.search(r"^thread: (\d+)", text, re.MULTILINE)
        if main_thread_only and thread is not None and thread.group(1) != "1":
            continue
        if trigger and total:  # one file per thread and dump: a dump's threads are summed
            totals[trigger.group(1)] = totals.get(trigger.group(1), 0) + int(total.group(1))
    return totals


def _child(job_path: str, out_path: str) -> None:
    """In the Valgrind process: make the runner, warm it, count CALLS calls per batch size."""
    import ctypes
    import gc

    from harness.backends.base import RunnerRecipe

    job = json.loads(Path(job_path).read_text())
    lib = ctypes.CDLL(job["library"])
    lib.harness_count_dump.argtypes = [ctypes.c_char_p]
    runner = RunnerRecipe(job["factory"], job["kwargs"]).build()
    with runner:
        for batch in job["batches"]:
            feed = runner.spec.check_feed(runner.spec.random_feed(batch, seed=batch))
            infer = runner.infer_checked
            for _ in range(job["warmup"]):
                infer(feed)
            # Python's cycle collector ran inside the counted calls in some processes and not in
            # others (+0.7% to one count of 20): collected before, off during.
            gc.collect()
            gc.disable()
            lib.harness_count_start()
            for i in range(job["calls"]):
                lib.harness_count_zero()
                infer(feed)
                lib.harness_count_dump(f"batch{batch}.call{i}".encode())
            lib.harness_count_stop()
            gc.enable()
    Path(out_path).write_text(json.dumps({"engine": runner.name, "backend": runner.backend,
                                          "aslr_off": _aslr_off()}))


def _aslr_off() -> bool | None:
    """Whether this process runs with ADDR_NO_RANDOMIZE (None where Linux does not say)."""
    try:
        return bool(int(Path("/proc/self/personality").read_text(), 16) & 0x0040000)
    except (OSError, ValueError):
        return None


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
