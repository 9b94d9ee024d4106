"""--harness-devices: each xdist worker sees one GPU, its own.  Run on a host with two GPUs as
`pytest -p harness.pytest_plugin --noconftest tests/gpu -n 2 --harness-devices 0,1`: each
worker's device line (printed with -s, recorded in $HARNESS_DEVICE_LOG when set) names a
different GPU, and the contract tests run on both at once."""

from __future__ import annotations

import json
import os

import pytest

from harness.backends.trt.cuda import device_count, import_cudart


@pytest.mark.skipif(device_count() == 0, reason="no CUDA device (or no cuda-python)")
@pytest.mark.parametrize("copy", range(4))  # several, so that every xdist worker runs one
def test_this_process_sees_the_gpu_its_worker_was_given(pytestconfig: pytest.Config, copy: int) -> None:
    devices = pytestconfig.getoption("harness_devices", None)
    if not devices:
        pytest.skip("no --harness-devices given: nothing pins this process to a GPU")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    expected = devices[int(worker[2:]) % len(devices)] if worker.startswith("gw") else None
    if expected is not None:
        assert visible == str(expected) and device_count() == 1  # one GPU, the worker's own
    cudart = import_cudart()
    err, props = cudart.cudaGetDeviceProperties(0)
    assert int(err) == 0
    pci = f"{props.pciDomainID:04x}:{props.pciBusID:02x}:{props.pciDeviceID:02x}"
    line = {"worker": worker or "main", "CUDA_VISIBLE_DEVICES": visible, "name": props.name.decode(errors="replace"),
            "pci": pci, "compute_capability": f"{props.major}.{props.minor}"}
    print(json.dumps(line))
    log = os.environ.get("HARNESS_DEVICE_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps(line) + "\n")
