"""`harness serve` against clients that are slow, greedy or hostile, and an engine that will not
start: deadlines on heads, bodies and idle connections, a cap on connections, nothing allocated
for a body before it arrives, a stalled upload not taken for engine work, a worker restarted
with backoff while the health routes tell the truth, no shared memory left by a killed server,
and thousands of generated malformed requests answered with a status line and no crash."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.serving import server as server_module
from harness.serving.server import InferenceServer, ServerProcess
from harness.serving.worker import SHM_DIR, RunnerRecipe, clean_stale, create
from tests.serving_runners import SPEC

pytest.importorskip("hypothesis", reason="hypothesis not importable")
ROOT = Path(__file__).resolve().parents[1]
DOUBLE = RunnerRecipe("tests.serving_runners:slow_double", {"delay": 0.0})
BODY = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}).encode()
INFER = (b"POST /v2/models/s/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
         b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY))


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _exchange(url: str, data: bytes, timeout: float = 10.0) -> bytes:
    """Send `data`, say no more (half-close), read until the server closes."""
    with socket.create_connection(_address(url), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def _infer(url: str) -> int:
    return int(_exchange(url, INFER.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n"))[9:12])


@pytest.fixture
def quick() -> Iterator[InferenceServer]:
    """Deadlines of a second, so the tests wait for them."""
    with InferenceServer(DOUBLE, SPEC, "s", "t", header_timeout=1.0, idle_timeout=1.0, body_timeout=1.0) as s:
        yield s


def test_a_drip_fed_head_and_a_stalled_body_get_408_and_are_closed(quick: InferenceServer) -> None:
    with socket.create_connection(_address(quick.url), timeout=10) as sock:
        start = time.monotonic()
        sock.sendall(b"POST /v2/models/s/infer HTTP/1.1\r\nHost: x\r\n")
        for _ in range(3):  # a byte every 0.4 s: each read is quick, the head never ends
            time.sleep(0.4)
            try:
                sock.sendall(b"X")
            except OSError:  # closed already
                break
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408 ") and b"headers did not arrive in time" in answer, answer
        assert sock.recv(65536) == b"" and time.monotonic() - start < 3.0
    with socket.create_connection(_address(quick.url), timeout=10) as sock:
        sock.sendall(INFER[:-10])  # the body stops 10 bytes short
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408 ") and b"body did not arrive in time" in answer, answer
    assert _infer(quick.url) == 200 and quick._http.reaped >= 2


def test_two_hundred_slowloris_connections_neither_starve_others_nor_stay(quick: InferenceServer) -> None:
    socks = []
    try:
        for _ in range(200):
            sock = socket.create_connection(_address(quick.url), timeout=10)
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
            socks.append(sock)
        assert [_infer(quick.url) for _ in range(20)] == [200] * 20  # others are served meanwhile
        time.sleep(1.0 + 2 * server_module.REAP_EVERY + 0.5)
        for sock in socks:  # each answered 408 and closed
            got = b""
            while chunk := sock.recv(65536):
                got += chunk
            assert got.startswith(b"HTTP/1.1 408 "), got[:100]
    finally:
        for sock in socks:
            sock.close()
    deadline = time.monotonic() + 5
    while quick._http.connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert quick._http.connections == 0 and quick._http.reaped >= 200


def test_connections_over_the_cap_wait_in_the_backlog_then_get_503() -> None:
    with InferenceServer(DOUBLE, SPEC, "s", "t", max_connections=4, header_timeout=1.0, idle_timeout=30.0) as s:
        kept = []
        try:
            for _ in range(4):  # four kept-alive connections, idle after one request each
                sock = socket.create_connection(_address(s.url), timeout=10)
                sock.sendall(INFER)
                assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
                kept.append(sock)
            start = time.monotonic()
            answer = _exchange(s.url, INFER)
            assert answer.startswith(b"HTTP/1.1 503 ") and b"over 4 connections" in answer, answer[:200]
            assert 0.8 <= time.monotonic() - start < 5  # it waited its turn (the header timeout) first
            assert s._http.connections == 4 and s._http.refused == 1
            kept.pop().close()  # a place frees: the next one is served
            deadline = time.monotonic() + 10
            while s._http.connections > 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _infer(s.url) == 200
        finally:
            for sock in kept:
                sock.close()


def test_a_stalled_upload_is_not_engine_work() -> None:
    """A lone request runs at once instead of waiting for company (--max-delay-ms); an upload
    that stalls must not count as that company."""
    with (InferenceServer(DOUBLE, SPEC, "s", "t", max_batch=8, max_delay_ms=3000.0) as s,
          socket.create_connection(_address(s.url), timeout=10) as stalled):
        stalled.sendall(INFER[:-10])
        time.sleep(0.2)
        start = time.monotonic()
        assert _infer(s.url) == 200
        assert time.monotonic() - start < 1.5  # not the 3 s batching delay


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="no /proc to read a process's memory from")
def test_fifty_announced_60_mb_bodies_that_never_come_cost_no_memory() -> None:
    head_json = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                        "parameters": {"binary_data_size": 16}}]}).encode()
    import shutil

    server = ServerProcess(DOUBLE, SPEC, model_name="s", platform="t", max_body=64 << 20)
    with server as url:
        pid = server._process.pid
        before, shm_before = _rss(pid), shutil.disk_usage(SHM_DIR).used
        socks = []
        try:
            for i in range(50):
                sock = socket.create_connection(_address(url), timeout=10)
                # half of them JSON bodies, half binary ones whose JSON header arrives (a slot is leased)
                extra = f"Inference-Header-Content-Length: {len(head_json)}\r\n".encode() if i % 2 else b""
                sock.sendall(b"POST /v2/models/s/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 60000000\r\n" + extra
                             + b"\r\n" + (head_json if i % 2 else b"{"))
                socks.append(sock)
            time.sleep(1.0)
            grown, shm_grown = _rss(pid) - before, shutil.disk_usage(SHM_DIR).used - shm_before
            assert grown < 100 << 20, f"RSS grew by {grown / 2**20:.0f} MiB"
            # nor shared memory: a slot is leased (and its space reserved) only once tensor bytes come
            assert shm_grown < 100 << 20, f"/dev/shm grew by {shm_grown / 2**20:.0f} MiB"
        finally:
            for sock in socks:
                sock.close()


def test_the_worker_is_restarted_with_backoff_and_health_tells_the_truth(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "RESTART_BACKOFF", (0.1, 0.3))
    monkeypatch.setattr(server_module, "LIVE_FAILURES", 3)
    flag = tmp_path / "broken"
    flag.touch()
    recipe = RunnerRecipe("tests.serving_runners:flaky_double", {"flag": str(flag)})
    s = InferenceServer(recipe, SPEC, "s", "t", request_timeout=30.0)
    s.start(wait_ready=False)
    try:
        deadline = time.monotonic() + 60
        while s.failed_starts < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert s.failed_starts >= 3, s.worker.last_error
        live = _exchange(s.url, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        ready = _exchange(s.url, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        assert live.startswith(b"HTTP/1.1 503 ") and b"cannot load while" in live, live
        assert ready.startswith(b"HTTP/1.1 503 ") and b"failed start(s) in a row" in ready, ready
        # Answered when the attempt under way fails (or at once between attempts), never after the
        # request timeout (30 s here).
        start = time.monotonic()
        assert _infer(s.url) == 503 and time.monotonic() - start < 15
        flag.unlink()  # fixed: the next attempt comes up
        while not s.worker.ready.is_set() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _infer(s.url) == 200 and s.failed_starts == 0 and s.metrics.restarts >= 2
        assert _exchange(s.url, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    finally:
        s.stop()


def test_shared_memory_of_a_killed_process_is_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    mine = create(4096)  # this process's: alive, kept
    script = "from harness.serving.worker import create\nimport time\ns = create(4096)\nprint(s.name, flush=True)\ntime.sleep(600)\n"
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    try:
        assert proc.stdout is not None
        name = proc.stdout.readline().strip()
        # The whole group, its resource tracker too: nothing unlinks the segment on the way out.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        time.sleep(0.5)
        assert (SHM_DIR / name).exists(), "the killed process's segment is already gone: nothing to test"
        assert name in clean_stale() and not (SHM_DIR / name).exists()
        assert (SHM_DIR / mine.name).exists() and mine.name not in clean_stale()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        mine.close()
        mine.unlink()


def test_a_killed_server_group_leaves_no_segment_after_the_next_start(tmp_path: Path) -> None:
    """kill -9 of a server and its worker (a binary request made them lease shared memory): the
    segments stay until the next server starts, which removes them."""
    from tests.serving_runners import serve_in_a_process

    proc, url, worker = serve_in_a_process(tmp_path, own_session=True)
    try:
        head = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                       "parameters": {"binary_data_size": 16}}]}).encode()
        raw = (b"POST /v2/models/s/infer HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: %d\r\n"
               b"Content-Length: %d\r\n\r\n%s%s" % (len(head), len(head) + 16, head, b"\0" * 16))
        assert _exchange(url, raw).startswith(b"HTTP/1.1 200 ")
        owned = sorted(p.name for p in SHM_DIR.glob(f"harness_{proc.pid}_*"))
        assert owned, "the server leased no shared memory"
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: server and worker
        proc.wait(10)
        with InferenceServer(DOUBLE, SPEC, "s", "t"):
            left = [n for n in owned if (SHM_DIR / n).exists()]
            assert not left and not list(SHM_DIR.glob(f"harness_{worker}_*")), left
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


FUZZ_EXAMPLES = int(os.environ.get("HARNESS_FUZZ_EXAMPLES", "4000"))  # 10000 for the figures in the notes


def test_generated_malformed_requests_get_a_status_line_and_never_a_crash() -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    bases = [INFER, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /v2/models/s HTTP/1.1\r\n\r\n",
             b"POST /v2/models/s/infer HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}"]

    @st.composite
    def mutated(draw: Any) -> bytes:
        data = bytearray(draw(st.sampled_from(bases)))
        for _ in range(draw(st.integers(1, 6))):
            if not data:
                break
            at = draw(st.integers(0, len(data) - 1))
            kind = draw(st.sampled_from(["flip", "insert", "delete", "cut", "dup"]))
            if kind == "flip":
                data[at] = draw(st.integers(0, 255))
            elif kind == "insert":
                data[at:at] = draw(st.sampled_from([b"\r\n", b":", b" ", b"\0", b"\xff", b"Content-Length: 9\r\n",
                                                     b"Transfer-Encoding: x\r\n", b"\r\n\r\n", b"9" * 30]))
            elif kind == "delete":
                del data[at]
            elif kind == "cut":
                del data[at:]
            else:
                data[at:at] = data[at:at + draw(st.integers(1, 64))]
        return bytes(data)

    errors: list[BaseException] = []

    class Recording(server_module._HTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            if not isinstance(sys.exception(), ConnectionError | TimeoutError):
                errors.append(sys.exception())  # type: ignore[arg-type]
            super().handle_error(request, client_address)

    statuses: dict[bytes, int] = {}
    with InferenceServer(DOUBLE, SPEC, "s", "t", header_timeout=2.0, body_timeout=2.0) as s:
        s._http.__class__ = Recording

        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(st.one_of(mutated(), st.binary(max_size=300)))
        def one(raw: bytes) -> None:
            answer = _exchange(s.url, raw, timeout=10.0)  # a hang is a socket timeout here: a failure
            if answer:  # nothing at all only where no request line came (the client said nothing usable)
                assert answer.startswith(b"HTTP/1.1 "), (raw[:200], answer[:200])
                status = answer[9:12]
                statuses[status] = statuses.get(status, 0) + 1
                # 5xx only where HTTP gives one: an unknown method (501), an unsupported version (505)
                assert not status.startswith(b"5") or status in (b"501", b"505"), (raw[:300], answer[:300])
                assert b"\r\nContent-Type: application/json\r\n" in answer, answer[:300]

        one()
        assert _infer(s.url) == 200  # still serving
    assert not errors, errors[:3]
    print(f"\n{FUZZ_EXAMPLES} generated requests: statuses {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) > FUZZ_EXAMPLES // 4  # most reached the parser and were answered


def _h11_verdict(raw: bytes) -> str:
    """h11's reading (a well-kept HTTP/1.1 parser, uvicorn's) of `raw`'s first request, sent as a
    client's whole side of a connection: "malformed", "incomplete" (the bytes end before the
    request does) or "accepted"."""
    import h11

    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)  # syntax, not size limits
    conn.receive_data(raw)  # no end of input yet: what is wrong so far is the bytes' own fault
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.EndOfMessage):
                return "accepted"
            if event is h11.NEED_DATA:
                return "incomplete"
    except h11.RemoteProtocolError:
        return "malformed"


def test_what_h11_refuses_this_server_refuses_too() -> None:
    """Differential fuzzing against h11: every generated request whose first message h11 refuses
    is refused by this server too (a status that refuses the request itself, not a route's 404,
    or no answer where the request never completed),
    so the hand-written head parser is at least as strict as a well-kept one. The reverse (this
    server stricter: any Transfer-Encoding, duplicate Content-Length, obsolete folding) is allowed
    and counted."""
    pytest.importorskip("h11", reason="h11 not importable (pip install h11)")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    pieces = [b"GET", b"POST", b"G ET", b" ", b"  ", b"\t", b"/v2/health/live", b"/v2/models/s/infer", b"/a\x00b",
              b"/\xff", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.1 ", b"HTTP/11", b"\r\n", b"\n", b"\r", b"Host: x",
              b"Host:", b"Host: a\x01b", b"X-A: \x7f", b"X A: 1", b"X-A : 1", b" X-A: 1", b"X-A:\t1\t", b"(x): 1",
              b"Content-Length: 2", b"Content-Length: 0", b"Content-Length: +2", b"Content-Length: 2, 2",
              b"Transfer-Encoding: chunked", b"Connection: close", b"{}", b"0\r\n\r\n", b"\x00", b"\xc3\xa9"]
    heads = st.lists(st.sampled_from(pieces), min_size=1, max_size=14).map(b"".join)
    well_formed = st.builds(
        lambda method, path, version, headers, body: b"%s %s %s\r\n%s\r\n%s" % (method, path, version, headers, body),
        st.sampled_from([b"GET", b"POST"]), st.sampled_from([b"/v2/health/live", b"/v2/models/s", b"/x?y=1"]),
        st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]),
        st.lists(st.sampled_from(pieces[17:33]).map(lambda h: h + b"\r\n"), max_size=3).map(lambda hs: b"Host: x\r\n" + b"".join(hs)),
        st.sampled_from([b"", b"{}", b"0\r\n\r\n"]))
    refused = 0  # malformed to h11, and refused by this server
    accepted: dict[bytes, int] = {}  # by h11: this server's statuses (a refusal there is stricter, or the route's)
    with InferenceServer(DOUBLE, SPEC, "s", "t", header_timeout=2.0, body_timeout=2.0) as s:
        @settings(max_examples=max(FUZZ_EXAMPLES // 2, 200), deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(st.one_of(heads, well_formed, well_formed))
        def one(raw: bytes) -> None:
            nonlocal refused
            answer = _exchange(s.url, raw, timeout=10.0)
            verdict = _h11_verdict(raw)
            if verdict == "malformed":  # refused here too: a status that refuses the request itself, not a
                # route's 404 or 405 (that would mean it was parsed and routed), or no answer
                assert not answer or answer[9:12] in (b"400", b"408", b"411", b"413", b"414", b"431", b"501",
                                                      b"505"), f"h11 refuses it, this server answered {answer[:12]!r}: {raw!r}"
                refused += 1
            elif verdict == "incomplete":  # cut short: never a success (a route may say 404 without its body)
                assert answer[9:10] not in (b"1", b"2", b"3"), f"incomplete, answered {answer[:12]!r}: {raw!r}"
            else:
                accepted[answer[9:12]] = accepted.get(answer[9:12], 0) + 1

        one()
    print(f"\ngenerated requests: {refused} malformed to h11 and refused here; accepted by h11, this server's "
          f"statuses: {dict(sorted(accepted.items()))}")
    assert refused > 20 and accepted.get(b"200", 0) > 20  # the generator reached both sides
