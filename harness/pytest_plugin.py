"""pytest plugin (entry point `pytest11: harness`): options, fixtures and the report header.

Thin on purpose: the work is done by harness.workspace; this file only wires pytest to it.
Every option starts with --harness-, is validated when parsed and states its default."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.artifacts import DEFAULT_ROOT
from harness.backends.onnxrt import PROVIDERS
from harness.compare import DEFAULT_TOLERANCES, Tolerance
from harness.errors import BackendUnavailable
from harness.export import DEFAULT_OPSET
from harness.golden import DEFAULT_GOLDEN_DIR
from harness.options import batch_sizes, choices, input_arg, opset
from harness.sources import ModelRequest

DEFAULT_MODEL = "inception_v3"
DEFAULT_BATCH_SIZES = "1,8,32"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "TensorFlow/TensorRT harness")
    group.addoption("--harness-model", default=DEFAULT_MODEL, metavar="NAME|PATH",
                    help=f"model under test: built-in name or path (default: {DEFAULT_MODEL})")
    group.addoption("--harness-input", action="append", type=input_arg, default=[], metavar="NAME[:SHAPE]",
                    help="input node of a checkpoint or .pb; repeatable (default: none)")
    group.addoption("--harness-output", action="append", default=[], metavar="NAME",
                    help="output node of a checkpoint or .pb; repeatable (default: none)")
    group.addoption("--harness-signature", default=None, metavar="NAME",
                    help="SavedModel signature (default: serving_default)")
    group.addoption("--harness-artifacts", type=Path, default=DEFAULT_ROOT, metavar="DIR",
                    help=f"artifact cache (default: {DEFAULT_ROOT})")
    group.addoption("--harness-golden-dir", type=Path, default=DEFAULT_GOLDEN_DIR, metavar="DIR",
                    help=f"golden store (default: {DEFAULT_GOLDEN_DIR})")
    group.addoption("--harness-opset", type=opset, default=DEFAULT_OPSET, metavar="N",
                    help=f"ONNX opset of the export (default: {DEFAULT_OPSET})")
    group.addoption("--harness-providers", type=choices(list(PROVIDERS)), default=["cpu"], metavar="P,P,...",
                    help=f"ONNX Runtime execution providers in priority order, from {','.join(PROVIDERS)} (default: cpu)")
    group.addoption("--harness-batch-sizes", type=batch_sizes, default=batch_sizes(DEFAULT_BATCH_SIZES),
                    metavar="N,N,...", help=f"batch sizes the benchmarks run (default: {DEFAULT_BATCH_SIZES})")


def pytest_report_header(config: pytest.Config) -> str:
    return (f"harness: model {config.getoption('harness_model')}, artifacts {config.getoption('harness_artifacts')}, "
            f"golden {config.getoption('harness_golden_dir')}")


def _unavailable_to_skip(fn: Any, *args: Any) -> Any:
    # A missing optional backend is a skip with its reason, never an ImportError.
    try:
        return fn(*args)
    except BackendUnavailable as e:
        pytest.skip(e.reason)


def _active(make: Any, request: ModelRequest) -> Iterator[Any]:
    runner = _unavailable_to_skip(make, request)
    _unavailable_to_skip(runner.activate)
    try:
        yield runner
    finally:
        runner.deactivate()


class _TerminalStream:
    """Progress lines straight to the terminal: a minute of building InceptionV3 inside a
    fixture must not look like a hang because pytest captures the fixture's stderr."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def write(self, text: str) -> int:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if reporter is None or capture is None:
            return sys.stderr.write(text)
        with capture.global_and_fixture_disabled():  # what capsys.disabled() does
            reporter.ensure_newline()
            reporter.write(text, flush=True)
        return len(text)

    def flush(self) -> None:
        pass


@pytest.fixture(scope="session")
def harness_workspace(pytestconfig: pytest.Config) -> Any:
    from harness.workspace import Workspace

    return Workspace(
        progress=_TerminalStream(pytestconfig),
        artifacts=pytestconfig.getoption("harness_artifacts"),
        golden_dir=pytestconfig.getoption("harness_golden_dir"),
        opset=pytestconfig.getoption("harness_opset"),
        providers=pytestconfig.getoption("harness_providers"),
    )


@pytest.fixture(scope="session")
def harness_request(pytestconfig: pytest.Config) -> ModelRequest:
    """The model under test, as the --harness-* options give it."""
    return ModelRequest(
        pytestconfig.getoption("harness_model"),
        tuple(pytestconfig.getoption("harness_input")),
        tuple(pytestconfig.getoption("harness_output")),
        pytestconfig.getoption("harness_signature"),
    )


@pytest.fixture(scope="session")
def harness_tolerances() -> dict[str, Tolerance]:
    """Tolerance per precision; override this fixture in a conftest.py to change the policy."""
    return dict(DEFAULT_TOLERANCES)


@pytest.fixture(scope="session")
def frozen_model(harness_workspace: Any, harness_request: ModelRequest) -> Any:
    return _unavailable_to_skip(harness_workspace.frozen, harness_request)


@pytest.fixture(scope="session")
def model_spec(frozen_model: Any) -> Any:
    return frozen_model.spec


@pytest.fixture(scope="session")
def onnx_model(harness_workspace: Any, harness_request: ModelRequest) -> Any:
    return _unavailable_to_skip(harness_workspace.onnx, harness_request)


@pytest.fixture(scope="session")
def tf_runner(harness_workspace: Any, harness_request: ModelRequest) -> Iterator[Any]:
    """Active TensorFlow runner of the frozen graph (the reference)."""
    yield from _active(harness_workspace.tf_runner, harness_request)


@pytest.fixture(scope="session")
def ort_runner(harness_workspace: Any, harness_request: ModelRequest) -> Iterator[Any]:
    """Active ONNX Runtime runner (CPU) of the FP32 ONNX export."""
    yield from _active(harness_workspace.ort_runner, harness_request)


@pytest.fixture(scope="session")
def golden(harness_workspace: Any, harness_request: ModelRequest) -> Any:
    """Golden inputs and reference outputs; a missing or stale golden fails with the command
    that writes it."""
    return harness_workspace.golden(harness_request)
