"""pytest plugin (entry point `pytest11: harness`): options, fixtures and the report header.

Thin on purpose: the work is done by harness.workspace; this file only wires pytest to it.
Every option starts with --harness-, is validated when parsed and states its default."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.backends.trt.build import BuildOptions
from harness.errors import BackendUnavailable, HarnessError
from harness.options import add_pytest_options, build_options, calibration_options
from harness.policy import TolerancePolicy
from harness.sources import ModelRequest
from harness.workspace import CalibrationOptions

if TYPE_CHECKING:  # the fixtures' types, without importing what they import at plugin load
    from harness.backends.onnxrt import OrtRunner
    from harness.backends.tf import TFRunner
    from harness.golden import Golden
    from harness.models import ModelEntry
    from harness.spec import ModelSpec
    from harness.workspace import Engine, FrozenModel, OnnxModel, Workspace

MODELS = pytest.StashKey[list["ModelEntry"]]()  # the run's models
ROWS = pytest.StashKey[list[Any]]()  # harness.timing.Row, appended by benchmarks
UNMEASURED = pytest.StashKey[list[Any]]()  # harness.timing.Unmeasured: benchmark rows skipped or errored
GATE = pytest.StashKey[Any]()  # harness.timing.GateReport
COUNT_GATE = pytest.StashKey[Any]()  # harness.timing.CountGateReport
BASELINE_WRITTEN = pytest.StashKey[bool]()
BENCH_JSON = pytest.StashKey[list[str]]()  # xdist: each worker's pytest-benchmark JSON
COMBOS = pytest.StashKey[dict[tuple[Any, int], list[tuple[str, str]]]]()  # (request, batch) -> engine rows collected
SECTIONS = pytest.StashKey[list[tuple[str, list[str]]]]()  # other suites' end-of-run tables, for the report
NOT_RUN = pytest.StashKey[list[str]]()  # benchmark suites deselected (not asked for with --harness-suites)


def pytest_addoption(parser: pytest.Parser) -> None:
    # Generated from the one option table the CLI's options come from too.
    add_pytest_options(parser.getgroup("harness", "TensorFlow/TensorRT harness"))


def pytest_report_header(config: pytest.Config) -> str:
    shard = config.getoption("harness_shard")
    return (f"harness: model {config.getoption('harness_model')}"
            + (f" (shard {shard}: {', '.join(e.name for e in _entries(config)) or 'none'})" if shard else "")
            + f", artifacts {config.getoption('harness_artifacts')}, "
            f"golden {config.getoption('harness_golden_dir') or 'default'}")


def _call(fn: Any, *args: Any) -> Any:
    """A missing optional backend is a skip with its reason, never an ImportError; any other
    HarnessError (a stale golden, a bad file) fails with its one-line message, which names
    the file and the fix, instead of a fixture traceback."""
    try:
        return fn(*args)
    except BackendUnavailable as e:
        pytest.skip(e.reason)
    except HarnessError as e:
        pytest.fail(f"{type(e).__name__}: {e}", pytrace=False)


def _active(make: Any, request: ModelRequest) -> Iterator[Any]:
    runner = _call(make, request)
    _call(runner.activate)
    try:
        yield runner
    finally:
        runner.deactivate()


class _TerminalStream:
    """Progress lines straight to the terminal: a minute of building InceptionV3 inside a
    fixture must not look like a hang because pytest captures the fixture's stderr."""

    def __init__(self, config: pytest.Config, err: bool = False) -> None:
        self.config = config
        self.err = err  # stderr (a benchmark's progress), not the terminal reporter's stdout

    def write(self, text: str) -> int:
        from harness.thirdparty import terminal_uncaptured

        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or self.config.pluginmanager.get_plugin("capturemanager") is None:
            return sys.stderr.write(text)
        with terminal_uncaptured(self.config):  # what capsys.disabled() does
            reporter.ensure_newline()
            if self.err:
                sys.stderr.write(text)
                sys.stderr.flush()
            else:
                reporter.write(text, flush=True)
        return len(text)

    def flush(self) -> None:
        pass


def _progress(config: pytest.Config) -> Callable[[str], None]:
    """A progress line of a long benchmark step, on stderr past pytest's capture."""
    stream = _TerminalStream(config, err=True)

    def say(line: str) -> None:
        stream.write(f"[harness] {line}\n")

    return say


def _one_core() -> None:
    """--harness-one-core: this process on one CPU (the highest it may use: the first takes more
    of the kernel's interrupts) and TensorFlow on one thread, before TensorFlow starts (it reads
    its thread counts once); the CPU engines get one thread from the workspace."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})  # threads made from here on inherit it
    if "tensorflow" in sys.modules:
        raise pytest.UsageError("--harness-one-core: TensorFlow was imported before the harness could set its "
                                "thread counts; pass the option on the command line, not from a plugin loaded later")
    os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = "1"


@pytest.fixture(scope="session")
def harness_workspace(pytestconfig: pytest.Config, harness_tolerances: TolerancePolicy) -> Workspace:
    """The artifact store and pipeline for this session (--harness-artifacts and friends): builds
    and caches frozen graphs, ONNX files, variants and plans; progress goes to the terminal."""
    from harness.workspace import Workspace

    return Workspace(
        progress=_TerminalStream(pytestconfig),
        artifacts=pytestconfig.getoption("harness_artifacts"),
        golden_dir=pytestconfig.getoption("harness_golden_dir"),
        opset=pytestconfig.getoption("harness_opset"),
        providers=pytestconfig.getoption("harness_providers"),
        engine_dir=pytestconfig.getoption("harness_engine_dir"),
        build_options=_build_options(pytestconfig),
        rebuild=pytestconfig.getoption("harness_rebuild"),
        cuda_graph=pytestconfig.getoption("harness_cuda_graph"),
        threads=1 if pytestconfig.getoption("harness_one_core") else 0,
        policy=harness_tolerances,  # the policy the tests judge by, for mixed-precision searches too
    )


def _get(config: pytest.Config) -> Callable[[str], Any]:
    return lambda dest: config.getoption(f"harness_{dest}")


def _build_options(config: pytest.Config) -> BuildOptions:
    # Tuned for the largest batch the benchmarks run, within the plan's range.
    opt = min(max(config.getoption("harness_batch_sizes")), config.getoption("harness_max_batch"))
    return build_options(_get(config), opt_batch=opt)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def harness_request(request: pytest.FixtureRequest, pytestconfig: pytest.Config) -> ModelRequest:
    """The model under test, as the --harness-* options give it; with several models
    (`--harness-model a,b,c`), one per parameter, the model's name in the test id."""
    if hasattr(request, "param"):
        return request.param.request  # type: ignore[no-any-return]
    return _request_of(pytestconfig)


def _entries(config: pytest.Config) -> list[ModelEntry]:
    """The run's models (after --harness-shard), worked out once."""
    if MODELS not in config.stash:
        from harness.models import model_entries, parse_shard

        shard = config.getoption("harness_shard")
        try:
            config.stash[MODELS] = model_entries(config.getoption("harness_model"), _get(config),
                                                 config.rootpath / "pyproject.toml", parse_shard(shard) if shard else None)
        except HarnessError as e:
            raise pytest.UsageError(str(e)) from e
    return config.stash[MODELS]


def _request_of(config: pytest.Config) -> ModelRequest:
    entries = _entries(config)
    if len(entries) == 1 and "," not in config.getoption("harness_model"):
        return entries[0].request
    if not entries:
        pytest.skip(f"--harness-shard {config.getoption('harness_shard')}: no model of "
                    f"{config.getoption('harness_model')} falls in this shard")
    raise pytest.UsageError(f"--harness-model {config.getoption('harness_model')}: several models, and this test "
                            "does not take the `harness_request` fixture that is parametrized by them")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    entries = _entries(metafunc.config)
    several = "," in metafunc.config.getoption("harness_model")  # asked for several (a shard may keep one)
    if ("harness_request" in metafunc.fixturenames and several and entries
            and not _parametrized_by_test(metafunc, "harness_request")):
        metafunc.parametrize("harness_request", entries, indirect=True, scope="session",
                             ids=[Path(e.name).name for e in entries])  # a path's file name: ids stay short
    # Every (backend, precision) asked for; one the host cannot build or run is skipped by
    # the fixture with the reason, so the report shows what was not covered.
    if "engine" in metafunc.fixturenames and not _parametrized_by_test(metafunc, "engine"):
        from harness.precision import BACKEND_PRECISIONS

        config = metafunc.config
        # Combinations that are no engine (bf16 on ONNX Runtime) are not generated at all.
        combos = [(b, p) for b in config.getoption("harness_backends") for p in config.getoption("harness_precisions")
                  if p in BACKEND_PRECISIONS[b]]
        metafunc.parametrize("engine", combos, indirect=True, ids=[f"{b}-{p}" for b, p in combos], scope="session")


def _parametrized_by_test(metafunc: pytest.Metafunc, name: str) -> bool:
    return any(name in str(m.args[0]) for m in metafunc.definition.iter_markers("parametrize"))


@pytest.fixture(scope="session")
def harness_tolerances(pytestconfig: pytest.Config) -> TolerancePolicy:
    """Tolerance policy: per-precision defaults, then `[tool.harness]` of the project's
    pyproject.toml. Override this fixture in a conftest.py to change it in code, e.g.
    `return TolerancePolicy.from_pyproject(...).override("int8", model="mine", min_top1=0.99)`."""
    policy: TolerancePolicy = _call(TolerancePolicy.from_pyproject, pytestconfig.rootpath / "pyproject.toml")
    from dataclasses import replace

    from harness.sources import resolve

    for entry in _entries(pytestconfig):  # a table's NAME for a model whose own name (file stem) differs
        own = _call(lambda e=entry: resolve(e.request).name)
        if own != entry.name and entry.name in policy.models and own not in policy.models:
            policy = replace(policy, models={**policy.models, own: policy.models[entry.name]},
                             class_outputs={**policy.class_outputs, own: policy.classes(entry.name)})
    return policy


@pytest.fixture(scope="session")
def harness_calibration(pytestconfig: pytest.Config, harness_request: ModelRequest) -> CalibrationOptions:
    """--harness-calibration's data, or the model's own from its pyproject table."""
    from dataclasses import replace

    options = calibration_options(_get(pytestconfig))
    own = next((e.calibration for e in _entries(pytestconfig) if e.request == harness_request), None)
    return replace(options, source=own) if own is not None and options.source is None else options  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def harness_engines(harness_workspace: Workspace) -> Iterator[dict[Any, Any]]:
    """Every engine built in this session, active, by (request, backend, precision, calibration),
    or the HarnessError that building or activating it raised: the `engine` fixture and the
    benchmark round-robin share one runner per engine.  Deactivated at the end of the session."""
    built: dict[Any, Any] = {}
    try:
        yield built
    finally:
        for item in built.values():
            if not isinstance(item, BaseException):
                item.runner.deactivate()


def _engine_of(workspace: Workspace, engines: dict[Any, Any], request: ModelRequest, backend: str, precision: str,
               calibration: CalibrationOptions) -> Engine:
    key = (request, backend, precision, calibration)
    if key not in engines:
        try:
            made = workspace.engine(request, backend, precision, calibration)
            made.runner.activate()
            engines[key] = made
        except HarnessError as e:
            engines[key] = e
    got = engines[key]
    if isinstance(got, BaseException):
        raise got
    return got  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def engine(
    request: pytest.FixtureRequest,
    harness_workspace: Workspace,
    harness_request: ModelRequest,
    harness_calibration: CalibrationOptions,
    harness_engines: dict[Any, Any],
) -> Engine:
    """A built, active engine of the model under test for one (backend, precision):
    `.plan` (the file the backend loads), `.backend`, `.precision`, `.runner`.
    Parametrized over --harness-backends x --harness-precisions."""
    if not hasattr(request, "param"):
        raise pytest.UsageError("the `engine` fixture is parametrized by the harness plugin; don't call it directly")
    backend, precision = request.param
    return _call(_engine_of, harness_workspace, harness_engines, harness_request, backend, precision,  # type: ignore[no-any-return]
                 harness_calibration)


@pytest.fixture(scope="session")
def harness_round_robin(pytestconfig: pytest.Config, harness_workspace: Workspace,
                        harness_engines: dict[Any, Any]) -> Any:
    """The benchmark suite's measurements (`harness.suite.RoundRobins`): at each batch size, one
    round-robin over TensorFlow and every engine row collected, run by the first row of that batch."""
    from harness.suite import RoundRobins

    combos: dict[tuple[Any, int], list[tuple[str, str]]] = pytestconfig.stash.get(COMBOS, {})
    return RoundRobins(
        build=lambda req, backend, precision, cal: _engine_of(harness_workspace, harness_engines, req, backend,
                                                              precision, cal),
        combos=lambda req, batch: combos.get((req, batch), []),
        target_halfwidth=pytestconfig.getoption("harness_halfwidth"),
        max_seconds=pytestconfig.getoption("harness_max_seconds"),
        progress=_progress(pytestconfig),
    )


@pytest.fixture(scope="session")
def harness_counter(pytestconfig: pytest.Config) -> Any:
    """Instructions per call under Valgrind (`harness.suite.Counter`) when --harness-count-instructions
    asks for them, else None."""
    if not pytestconfig.getoption("harness_count_instructions"):
        return None
    from harness.suite import Counter

    return Counter(pytestconfig.getoption("harness_artifacts"), pytestconfig.getoption("harness_batch_sizes"),
                   progress=_progress(pytestconfig))


@pytest.fixture(scope="session")
def frozen_model(harness_workspace: Workspace, harness_request: ModelRequest) -> FrozenModel:
    """The model under test frozen to a GraphDef: `.graph_path`, `.spec`."""
    return _call(harness_workspace.frozen, harness_request)


@pytest.fixture(scope="session")
def model_spec(frozen_model: FrozenModel) -> ModelSpec:
    """The model's inputs and outputs (names, dtypes, shapes with the batch dynamic)."""
    return frozen_model.spec


@pytest.fixture(scope="session")
def onnx_model(harness_workspace: Workspace, harness_request: ModelRequest) -> OnnxModel:
    """The fp32 ONNX export of the model under test: `.path`, `.spec`."""
    return _call(harness_workspace.onnx, harness_request)


@pytest.fixture(scope="session")
def tf_runner(harness_workspace: Workspace, harness_request: ModelRequest) -> Iterator[TFRunner]:
    """Active TensorFlow runner of the frozen graph (the reference)."""
    yield from _active(harness_workspace.tf_runner, harness_request)


@pytest.fixture(scope="session")
def ort_runner(harness_workspace: Workspace, harness_request: ModelRequest) -> Iterator[OrtRunner]:
    """Active ONNX Runtime runner (CPU) of the FP32 ONNX export."""
    yield from _active(harness_workspace.ort_runner, harness_request)


@pytest.fixture(scope="session")
def golden(harness_workspace: Workspace, harness_request: ModelRequest) -> Golden:
    """Golden inputs and reference outputs; a missing or stale golden fails with the command
    that writes it."""
    return _call(harness_workspace.golden, harness_request)


def _attach_debug(item: pytest.Item, report: pytest.TestReport) -> None:
    """--harness-debug-on-fail: a failed test of an fp16/int8 engine gets `harness debug`'s
    summary (tensor by tensor, where it overflows or saturates) as a section of its report."""
    funcargs = getattr(item, "funcargs", {})
    if not (report.when == "call" and report.failed and "engine" in funcargs
            and item.config.getoption("harness_debug_on_fail")):
        return
    from harness.debug import DEBUG_PRECISIONS

    engine = funcargs["engine"]
    if engine.precision not in DEBUG_PRECISIONS:
        return
    from harness.workspace import INT8_FORM

    try:  # the engine's own file: its calibration and its int8 placement (fixtures `engine` depends on)
        summary = funcargs["harness_workspace"].debug(
            funcargs["harness_request"], engine.precision, funcargs["harness_calibration"],
            INT8_FORM.get(engine.backend, "tensorrt")).summary()
    except Exception as e:  # noqa: BLE001 - a report hook must not crash the run; say why instead
        summary = f"harness debug could not run: {type(e).__name__}: {e}"
    report.sections.append((f"harness debug {engine.precision}", summary))


# --- benchmark results, speedup table and regression gate --------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    devices = config.getoption("harness_devices", None)
    if devices:  # before anything in this process starts CUDA
        from harness.thirdparty import xdist_worker_index

        index = xdist_worker_index(config)  # xdist's public workerinput, not the environment
        mine = [devices[index % len(devices)]] if index is not None else devices
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, mine))
    xdist = config.getoption("dist", "no") != "no" or _is_worker(config)
    if config.getoption("harness_one_core", False):
        if xdist:
            raise pytest.UsageError("--harness-one-core pins the process to one CPU: every xdist worker would share "
                                    "it; run it without -n")
        _one_core()
    report = config.getoption("harness_report", None)
    if (report is not None and not _is_worker(config) and config.getoption("benchmark_only", False)
            and not config.getoption("benchmark_json", None)):
        # The main job leaves its pytest-benchmark JSON beside its report without being asked.
        Path(report).mkdir(parents=True, exist_ok=True)
        config.option.benchmark_json = Path(report) / "benchmark.json"
    if xdist and config.getoption("benchmark_only", False):
        # pytest-benchmark refuses --benchmark-only under xdist (it turns itself off there);
        # the workers get it as the harness's own flag and time one benchmark at a time per
        # device (harness.parallel).
        from harness.parallel import ONLY
        from harness.thirdparty import hand_benchmark_only_to_workers

        hand_benchmark_only_to_workers(config, ONLY)
    config.stash[ROWS] = []
    config.stash[UNMEASURED] = []
    config.addinivalue_line("markers", f"{SUITE_MARK}(name): a benchmark suite besides the main one, run only "
                            "when --harness-suites names it")
    if config.getoption("harness_verbose", False):
        from harness.tfimport import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"
    # A missing or broken baseline is a usage error now, not after the run.
    from harness.timing import is_legacy_baseline, load_baseline

    gate = config.getoption("harness_gate", None)
    target = config.getoption("harness_update_baseline", None)
    try:
        if gate is not None:
            load_baseline(gate)
        if target is not None and Path(target).is_file() and not is_legacy_baseline(target):
            load_baseline(target)  # an old-format one is replaced; a broken one is not overwritten
    except HarnessError as e:
        raise pytest.UsageError(str(e)) from e


def pytest_sessionstart(session: pytest.Session) -> None:
    if _is_worker(session.config) and _only_benchmarks(session.config):
        from harness.thirdparty import reenable_in_worker

        reenable_in_worker(session.config)  # harness.parallel serialises the timing


def _is_worker(config: pytest.Config) -> bool:
    """An xdist worker (xdist gave it `workerinput`), not just a process that inherited
    PYTEST_XDIST_WORKER from one (a pytest started by a test that runs in a worker)."""
    return hasattr(config, "workerinput")


def _only_benchmarks(config: pytest.Config) -> bool:
    from harness.parallel import ONLY

    return bool(getattr(config.option, ONLY, False))


SUITE_MARK = "harness_suite"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _only_benchmarks(config):  # what --benchmark-only does, in an xdist worker
        skip = pytest.mark.skip(reason="not a benchmark (--benchmark-only)")
        for item in items:
            if "benchmark" not in getattr(item, "fixturenames", ()):
                item.add_marker(skip)
    # Benchmark suites besides the main one run when asked for (--harness-suites); the others
    # are deselected, not skipped, and the end of the run names them with the command.
    wanted = set(config.getoption("harness_suites"))
    keep, dropped, names = [], [], set()
    for item in items:
        mark = item.get_closest_marker(SUITE_MARK)
        if mark is None or "all" in wanted or mark.args[0] in wanted:
            keep.append(item)
        else:
            dropped.append(item)
            names.add(mark.args[0])
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
    config.stash[NOT_RUN] = sorted(names)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Which engine rows each batch size's round-robin times: those collected and selected."""
    combos: dict[tuple[Any, int], list[tuple[str, str]]] = {}
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "benchmark" in getattr(item, "fixturenames", ()) and isinstance(params.get("engine"), tuple) \
                and "batch" in params:
            entry = params.get("harness_request")
            try:
                request = entry.request if entry is not None else _request_of(session.config)
            except (pytest.skip.Exception, pytest.UsageError):
                continue
            rows = combos.setdefault((request, int(params["batch"])), [])
            if params["engine"] not in rows:
                rows.append(params["engine"])
    session.config.stash[COMBOS] = combos


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    from harness.parallel import timing_slot

    if not (_is_worker(item.config) and "benchmark" in getattr(item, "fixturenames", ())):
        return (yield)
    benchmark = getattr(item, "funcargs", {}).get("benchmark")
    with timing_slot(item.config.getoption("harness_artifacts"), getattr(benchmark, "extra_info", None)):
        return (yield)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist, in the controller: a worker's rows, unmeasured rows and benchmark JSON."""
    from harness.parallel import rows_in

    output = getattr(node, "workeroutput", {}) or {}
    if "harness" in output:
        config = node.config
        rows, unmeasured = rows_in(output["harness"])
        config.stash[ROWS].extend(rows)
        config.stash[UNMEASURED].extend(unmeasured)
        config.stash.setdefault(BENCH_JSON, []).append(output["harness"].get("benchmark_json", ""))


@pytest.fixture(scope="session")
def harness_benchmark_rows(pytestconfig: pytest.Config) -> list[Any]:
    """Benchmarks append a `harness.timing.Row` per engine x batch; the speedup table and the
    gate at the end of the run are computed from them."""
    return pytestconfig.stash[ROWS]


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    from harness.machine import machine_info as harness_machine_info

    machine_info["harness"] = harness_machine_info()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # A benchmark row that produced no time (its engine skipped, its fixture failed) is listed
    # at the end of the run with the reason, and the gate knows why a row is missing.
    report = yield
    _attach_debug(item, report)
    params = getattr(getattr(item, "callspec", None), "params", {})
    if (report.outcome != "passed" and report.when in ("setup", "call")  # a teardown error follows a timed row
            and "benchmark" in getattr(item, "fixturenames", ()) and "batch" in params):
        from harness.timing import REFERENCE, Unmeasured

        engine = params.get("engine")
        engine_id = f"{engine[0]}-{engine[1]}" if isinstance(engine, tuple) else REFERENCE
        if "tf_runner" in getattr(item, "fixturenames", ()) or isinstance(engine, tuple):
            outcome = "skipped" if report.skipped else "error" if report.when != "call" else "failed"
            item.config.stash[UNMEASURED].append(
                Unmeasured(_model_name(item.config, params.get("harness_request")), engine_id, int(params["batch"]),
                           outcome, _reason(report)))
    return report


def _model_name(config: pytest.Config, entry: ModelEntry | None = None) -> str:
    """The name the benchmark rows of the model under test carry (resolving is cheap: no TensorFlow)."""
    from harness.sources import resolve

    try:
        request = entry.request if entry is not None else _request_of(config)
    except (pytest.skip.Exception, pytest.UsageError):  # an empty shard, several models: no one request
        return str(config.getoption("harness_model"))
    try:
        return resolve(request).name
    except HarnessError:
        return Path(request.model).name or request.model


def _reason(report: pytest.TestReport) -> str:
    if isinstance(report.longrepr, tuple):  # a skip: (file, line, "Skipped: why")
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message).splitlines()[0]
    lines = [line for line in report.longreprtext.splitlines() if line.strip()]
    return lines[-1].strip() if lines else report.outcome


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    from harness.machine import machine_class, machine_info
    from harness.parallel import merge_benchmark_json, rows_out
    from harness.timing import check_counts, check_gate, load_baseline, speedups, update_baseline

    config = session.config
    if _is_worker(config) and hasattr(config, "workeroutput"):  # hand what was measured to the controller
        from harness.thirdparty import worker_json

        mine: list[Any] = config.stash.get(ROWS, [])
        missing: list[Any] = config.stash.get(UNMEASURED, [])
        payload = rows_out(mine, missing)
        doc = worker_json(config) if config.getoption("benchmark_json", None) or _only_benchmarks(config) else None
        if doc is not None:  # the controller writes it (its own --benchmark-json or the default)
            payload["benchmark_json"] = json.dumps(doc, default=str)
        config.workeroutput["harness"] = payload
        return
    parts: list[str] = config.stash.get(BENCH_JSON, [])
    merged = merge_benchmark_json(parts)
    out = config.getoption("benchmark_json", None)
    if merged is not None and out:
        # a path (pytest-benchmark 5.3+) or, before, a file it opened
        Path(out if isinstance(out, (str, os.PathLike)) else out.name).write_text(json.dumps(merged, indent=4, default=str))
    rows: list[Any] = config.stash.get(ROWS, [])
    gate = config.getoption("harness_gate")
    target = config.getoption("harness_update_baseline")
    info = machine_info() if gate is not None or target is not None else {}  # once: it runs nvidia-smi
    if gate is not None:
        unmeasured: list[Any] = config.stash[UNMEASURED]
        report = check_gate(rows, load_baseline(gate), info["class"], config.getoption("harness_max_slowdown"),
                            config.getoption("harness_gate_allow_missing"), unmeasured)
        config.stash[GATE] = report
        if report.failed and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    counting = config.getoption("harness_count_instructions")
    count_class = None
    if counting and (gate is not None or target is not None):
        from harness.counting import counting_class

        count_class = counting_class()
    if gate is not None and counting:
        counts = check_counts(rows, load_baseline(gate), count_class or {}, config.getoption("harness_max_increase"),
                              config.getoption("harness_gate_allow_missing"))
        config.stash[COUNT_GATE] = counts
        if counts.failed and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    measured = speedups(rows)
    if target is not None and measured and session.exitstatus == 0:
        update_baseline(target, measured, machine_class(info), {"versions": info["versions"]}, rows, count_class)
        config.stash[BASELINE_WRITTEN] = True


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> Iterator[None]:
    """The harness's lines come last, after pytest-benchmark's tables and pytest's short test
    summary (this wrapper is outside the terminal reporter's): the table a user reads, the gate,
    the suites not run with the command that runs them, and the report's path."""
    result = yield
    from harness.timing import summary_lines

    rows = config.stash.get(ROWS, [])
    unmeasured = config.stash.get(UNMEASURED, [])
    tw = terminalreporter
    if rows or unmeasured:
        tw.section("harness: median latency per batch and speedup over TensorFlow (same run)")
        for line, failure in summary_lines(rows, unmeasured):
            tw.line(line, red=failure)
    if GATE in config.stash:
        report = config.stash[GATE]
        tw.section(f"harness gate ({config.getoption('harness_gate')}, max slowdown "
                   f"{config.getoption('harness_max_slowdown'):.0%}): {report.verdict}",
                   red=report.failed, green=not report.failed and not report.no_baseline,
                   yellow=report.no_baseline and not report.failed)
        for line, failure in report.lines(config.getoption("harness_gate")):
            tw.line(line, red=failure)
    if COUNT_GATE in config.stash:
        counts = config.stash[COUNT_GATE]
        tw.section(f"harness gate on instructions per call ({config.getoption('harness_gate')}, max increase "
                   f"{config.getoption('harness_max_increase'):.1%}): {counts.verdict}", red=counts.failed,
                   green=not counts.failed)
        for line, failure in counts.lines():
            tw.line(line, red=failure)
    not_run = config.stash.get(NOT_RUN, [])
    if not_run:
        tw.line(f"harness: not run: the {', '.join(not_run)} benchmark suite(s); run them with: pytest benchmarks/ "
                f"--benchmark-only --harness-suites {','.join(not_run)}")
    target = config.getoption("harness_update_baseline")
    if target is not None:
        written = config.stash.get(BASELINE_WRITTEN, False)
        tw.line(f"harness: baseline {'written to' if written else 'NOT written (the run failed):'} {target}")
    report_dir = config.getoption("harness_report")
    if report_dir is not None and rows:
        json_path = config.getoption("benchmark_json", None)
        tw.line(_write_report(config, report_dir) + (f"; pytest-benchmark JSON: {json_path}" if json_path else ""))
    if unmeasured and not rows:
        skipped = sum(u.outcome == "skipped" for u in unmeasured)
        tw.line(f"harness: NO BENCHMARK ROW WAS MEASURED: {len(unmeasured)} row(s) produced no time ({skipped} "
                "skipped, the rest failed or errored); see the reasons above", red=True)
    return result


def _write_report(config: pytest.Config, out: Path) -> str:
    from harness.report import write_run_report

    rows: list[Any] = config.stash[ROWS]
    sections: list[tuple[str, list[str]]] = config.stash.get(SECTIONS, [])
    return write_run_report(out, rows, config.getoption("harness_gate"), sections)
