"""The cuda-python layer under the TensorRT runner, on a real GPU: pinned and device buffers,
async copies on a stream, event timing, a captured graph replayed with new data.

Runs wherever a CUDA device is present (any compute capability: nothing here is TensorRT);
skips elsewhere, CI included. Needs only numpy and cuda-bindings, so it also runs on a GPU
machine without the rest of the harness's dependencies:
    python -m pytest --noconftest -p no:cacheprovider tests/gpu -v
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.backends.trt.cuda import (
    CudaError,
    DeviceBuffer,
    Event,
    Graph,
    PinnedBuffer,
    Stream,
    device_count,
    device_properties,
)

pytestmark = pytest.mark.skipif(device_count() == 0, reason="no CUDA device (or no cuda-python)")

N = 1 << 22  # 16 MiB of float32: big enough that a copy takes measurable GPU time


@pytest.fixture
def gpu() -> object:
    name, capability = device_properties(0)
    print(f"\nGPU 0: {name}, compute capability {capability[0]}.{capability[1]}")
    return name


def test_round_trip_through_the_device(gpu: object) -> None:
    stream = Stream()
    src, dst = PinnedBuffer(N * 4), PinnedBuffer(N * 4)
    device = DeviceBuffer(N * 4)
    data = np.random.default_rng(0).standard_normal(N).astype(np.float32)
    src.array(np.float32, (N,))[...] = data
    dst.array(np.float32, (N,))[...] = 0
    start, middle, end = Event(), Event(), Event()
    start.record(stream)
    stream.copy_to_device(device, src, N * 4)
    middle.record(stream)
    stream.copy_to_host(dst, device, N * 4)
    end.record(stream)
    stream.synchronize()
    np.testing.assert_array_equal(dst.array(np.float32, (N,)), data)
    up, down = middle.seconds_since(start), end.seconds_since(middle)
    print(f"16 MiB host->device {up * 1e3:.3f} ms ({N * 4 / up / 1e9:.1f} GB/s), "
          f"device->host {down * 1e3:.3f} ms ({N * 4 / down / 1e9:.1f} GB/s)")
    assert 0 < up < 1 and 0 < down < 1
    for thing in (src, dst, device, stream, start, middle, end):
        thing.free() if hasattr(thing, "free") else thing.destroy()  # type: ignore[attr-defined]


def test_captured_graph_replays_copies_with_new_data(gpu: object) -> None:
    stream = Stream()
    src, dst, device = PinnedBuffer(N * 4), PinnedBuffer(N * 4), DeviceBuffer(N * 4)
    with Graph.capture(stream) as graph:
        stream.copy_to_device(device, src, N * 4)
        stream.copy_to_host(dst, device, N * 4)
    # Capture records work without running it: dst is untouched until a launch.
    dst.array(np.float32, (N,))[...] = -1
    for value in (1.0, 2.0, 3.0):
        src.array(np.float32, (N,))[...] = value
        graph.launch(stream)
        stream.synchronize()
        assert np.all(dst.array(np.float32, (N,)) == value), value
    graph.destroy()
    for b in (src, dst, device):
        b.free()
    stream.destroy()


def test_a_failing_call_names_itself(gpu: object) -> None:
    stream = Stream()
    gone, host = DeviceBuffer(16), PinnedBuffer(16)
    gone.free()  # its pointer is now 0: a copy to it is refused before anything moves
    with pytest.raises(CudaError, match=r"cudaMemcpyAsync\(host->device\) failed: cudaErrorInvalidValue"):
        stream.copy_to_device(gone, host, 16)
    host.free()
    stream.destroy()


def test_pinned_buffer_refuses_an_oversized_view(gpu: object) -> None:
    buffer = PinnedBuffer(64)
    with pytest.raises(CudaError, match="cannot hold"):
        buffer.array(np.float32, (32,))
    buffer.free()
