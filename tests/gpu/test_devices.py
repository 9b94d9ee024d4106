"""--harness-devices: each xdist worker sees one GPU, its own.  Run on a host with two GPUs as
`pytest -p harness.pytest_plugin --noconftest tests/gpu -n 2 --harness-devices 0,1`: each
worker's device line (printed with -s, recorded in $HARNESS_DEVICE_LOG when set) names a
different GPU, and the contract tests run on both at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
    if worker.startswith("gw"):  # one GPU, one of those given (which one: the test below, across workers)
        assert device_count() == 1 and int(visible) in devices
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


def test_two_workers_see_two_different_gpus(tmp_path: Path) -> None:
    """What the option promises, checked from outside: the two workers' devices are two different
    physical GPUs (by PCI address), each worker always the same one."""
    if device_count() < 2:
        pytest.skip(f"needs two CUDA devices, this host has {device_count()}")
    pytest.importorskip("xdist", reason="pytest-xdist not importable")
    log = tmp_path / "devices.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST") and k != "CUDA_VISIBLE_DEVICES"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "harness.pytest_plugin", "--noconftest", __file__,
                           "-n", "2", "--harness-devices", "0,1", "-k", "sees_the_gpu", "-p", "no:cacheprovider", "-q"],
                          env={**env, "HARNESS_DEVICE_LOG": str(log)}, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    by_worker: dict[str, set[str]] = {}
    for line in lines:
        by_worker.setdefault(line["worker"], set()).add(line["pci"])
    assert len(by_worker) == 2 and all(len(pcis) == 1 for pcis in by_worker.values()), by_worker
    assert len(set.union(*by_worker.values())) == 2, by_worker  # two different GPUs
