"""`harness` command: info, export, build, golden, compare, debug, serve, loadtest, gate, report.

Exit status: 0 success (all comparisons pass), 1 a tolerance failed, 2 bad input or usage.
A HarnessError is printed as one line, never as a traceback."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import __version__
from harness.artifacts import atomic_write_json
from harness.backends.trt.build import BuildOptions
from harness.compare import SYNTHETIC_NOTE
from harness.errors import HarnessError, UsageError
from harness.golden import GoldenWarning
from harness.options import (
    MODEL_COMMANDS,
    Get,
    add_cli_options,
    batch_sizes,
    build_options,
    calibration_options,
    model_request,
    positive_int,
)
from harness.sources import ModelRequest
from harness.spec import format_shape
from harness.tfimport import VERBOSE_ENV

if TYPE_CHECKING:
    from harness.backends.base import Runner
    from harness.workspace import CalibrationOptions, Workspace

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    """The shared options come from the one table in harness.options (the plugin's are the same
    with --harness-); only what a single command takes is declared here."""
    from harness.workspace import DEFAULT_GOLDEN_SAMPLES, DEFAULT_SEED

    parser = argparse.ArgumentParser(prog="harness", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="let TensorFlow's own C++ log lines through (default: dropped)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("info", help="backends available here, their versions and devices, and why others are missing")
    helps = {
        "export": "freeze the model and export it to ONNX (cached)",
        "build": "build TensorRT plans of the model in each precision (cached)",
        "golden": "write golden inputs and TensorFlow reference outputs",
        "compare": "compare engines with the golden outputs",
        "serve": "serve one engine over HTTP (Open Inference Protocol) from a dedicated worker process",
        "debug": "why a precision fails, tensor by tensor against fp32; --fix: the fewest nodes to keep in higher "
                 "precision for the golden check to pass",
    }
    commands = {}
    for name in MODEL_COMMANDS:
        commands[name] = command = sub.add_parser(name, help=helps[name])
        command.add_argument("model", help="built-in name (inception_v3, digits) or a path: checkpoint prefix, "
                             ".pb, SavedModel directory, .keras/.h5 file")
        add_cli_options(command, name)

    golden = commands["golden"]
    golden.add_argument("--samples", type=positive_int, default=DEFAULT_GOLDEN_SAMPLES,
                        help=f"random samples for models without representative data (default: {DEFAULT_GOLDEN_SAMPLES})")
    golden.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed of those samples (default: {DEFAULT_SEED})")
    golden.add_argument("--floor-only", action="store_true",
                        help="measure and store the reference's own noise floor in the existing golden, its inputs and "
                             "outputs untouched (a golden written before floors were)")
    debug = commands["debug"]
    debug.add_argument("--precision", required=True, choices=["fp16", "int8"], help="the precision to debug")
    debug.add_argument("--fix", action="store_true",
                       help="search the fewest nodes to keep in fp32 (fp16) or unquantized (int8) so the golden check "
                       "passes, and write that model as the variant fp16-mixed / int8-mixed")
    debug.add_argument("--fix-budget", type=positive_int, default=12, metavar="N",
                       help="golden runs the --fix search may make (default: 12)")
    debug.add_argument("--samples", type=positive_int, default=32, help="golden samples compared (default: 32)")
    debug.add_argument("--top", type=positive_int, default=8, help="tensors listed (default: 8)")
    debug.add_argument("--json", type=Path, default=None, metavar="PATH", help="every tensor's figures as JSON")
    debug.add_argument("--plot", type=Path, default=None, metavar="PNG", help="error against depth, as a PNG")
    for name in ("golden", "compare", "debug"):
        commands[name].add_argument(
            "--tolerances", type=Path, default=Path("pyproject.toml"), metavar="PYPROJECT",
            help="pyproject.toml whose [tool.harness] gives tolerances and class-score outputs "
            "(default: ./pyproject.toml, if present)")
    commands["compare"].add_argument("--json", type=Path, default=None, metavar="PATH",
                                     help="also write the records as JSON (default: none)")
    serve = commands["serve"]
    serve.add_argument("--host", default="127.0.0.1", help="(default: 127.0.0.1, loopback only)")
    serve.add_argument("--port", type=int, default=8000, help="(default: 8000; 0 picks a free one)")
    serve.add_argument("--dynamic-batch", type=positive_int, default=1, metavar="N",
                       help="dynamic batching: requests' samples gathered into one engine batch (default: 1, off)")
    serve.add_argument("--max-delay-ms", type=float, default=0.0,
                       help="dynamic batching: how long a request may wait for others when others are queued "
                       "or the engine is busy (default: 0: only requests already queued are batched)")
    serve.add_argument("--grpc-port", type=int, default=None, metavar="PORT",
                       help="also serve the Open Inference Protocol over gRPC on this port, as Triton does on 8001 "
                       "(tritonclient.grpc works unchanged; needs tritonclient[grpc]; default: off)")
    serve.add_argument("--hold-lone-requests", action="store_true",
                       help="dynamic batching: make even a lone request, with the engine idle, wait --max-delay-ms "
                       "for company (default: it runs at once)")
    serve.add_argument("--null-engine", action="store_true",
                       help="serve the model's inputs and outputs with no engine (zeros; the model is frozen for its "
                       "interface, no engine is built): what serving costs with the engine taken out, for "
                       "`harness loadtest`")
    serve.add_argument("--max-body-mib", type=positive_int, default=64, help="largest request body (default: 64)")
    serve.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                       help="seconds a connection has to send a request's line and headers; then 408 and closed "
                       "(default: 10)")
    serve.add_argument("--body-timeout", type=float, default=60.0, metavar="S",
                       help="seconds a request's body has to arrive once its headers have (default: 60)")
    serve.add_argument("--idle-timeout", type=float, default=15.0, metavar="S",
                       help="seconds a kept-alive connection may wait for its next request (default: 15)")
    serve.add_argument("--pad-with-mask", metavar="INPUT", default=None,
                       help="dynamic batching: batch requests of different sequence lengths together, zero-padding "
                       "every input with a dynamic second axis to the batch's longest; INPUT is the model's attention "
                       "mask, which hides the padding (per-token outputs are cut back to each request's length; "
                       "default: off, only requests of one length share a batch)")
    serve.add_argument("--max-connections", type=positive_int, default=1024, metavar="N",
                       help="connections served at once, a thread each; the next waits in the backlog up to the "
                       "header timeout, then gets 503 (default: 1024)")

    load = sub.add_parser("loadtest", help="closed-loop load test of a serving endpoint at several concurrencies")
    load.add_argument("url", help="server URL, e.g. http://127.0.0.1:8000")
    load.add_argument("--model", required=True, help="model name the server serves")
    load.add_argument("--concurrency", type=batch_sizes, default=[1, 2, 4, 8], metavar="N,N,...",
                      help="clients in the closed loop, one run each (default: 1,2,4,8)")
    load.add_argument("--duration", type=float, default=5.0, help="seconds per concurrency (default: 5)")
    load.add_argument("--max-requests", type=positive_int, default=5000,
                      help="cap on requests per concurrency (default: 5000)")
    load.add_argument("--batch", type=positive_int, default=1, help="samples per request (default: 1)")

    gate = sub.add_parser("gate", help="the wall-time gate over several benchmark processes: each row's speedup "
                          "from every run given, judged against the baseline")
    gate.add_argument("runs", nargs="+", type=Path, metavar="BENCH.json",
                      help="pytest-benchmark JSON files of the same benchmark command, one per process")
    gate.add_argument("--baseline", type=Path, required=True, metavar="BASELINE.json",
                      help="the baseline to judge against (or to write, with --update-baseline)")
    gate.add_argument("--max-slowdown", type=float, default=0.15,
                      help="a row fails when its whole interval is below the baseline times (1 - this) (default: 0.15)")
    gate.add_argument("--allow-missing", action="store_true",
                      help="a baseline row no run measured, or one some runs missed, is reported, not failed")
    gate.add_argument("--update-baseline", action="store_true",
                      help="write the runs' combined speedups into the baseline for their machine class instead")

    report = sub.add_parser("report", help="tables and plots from benchmark JSON files and compare records")
    report.add_argument("benchmarks", nargs="*", type=Path, metavar="BENCH.json|DIR",
                        help="pytest-benchmark JSON files (--benchmark-json) or directories of saved runs (.benchmarks/)")
    report.add_argument("--compare", action="append", type=Path, default=[], metavar="RESULTS.json",
                        help="`harness compare --json` records: golden status, accuracy and error plots; repeatable")
    report.add_argument("--debug", action="append", type=Path, default=[], metavar="DEBUG.json",
                        help="`harness debug --json` files: their summary and error-against-depth plot; repeatable")
    report.add_argument("--baseline", type=Path, default=None, metavar="BASELINE.json",
                        help="the gate's baseline, marked on the speedup plot")
    report.add_argument("--trend", choices=["speedup", "p50", "p99", "throughput"], default="speedup",
                        help="metric plotted across runs when several are given (default: speedup)")
    report.add_argument("--out", type=Path, default=Path("report"), help="output directory (default: report)")
    return parser


def _get(args: argparse.Namespace) -> Get:
    return lambda dest: getattr(args, dest)


def _workspace(args: argparse.Namespace, options: BuildOptions | None = None) -> Workspace:
    """The workspace of a command; commands with TensorRT options pass them on (`options`
    where the command derives them itself)."""
    from harness.policy import TolerancePolicy
    from harness.workspace import Workspace

    kwargs: dict[str, Any] = {}
    if hasattr(args, "engine_dir"):
        kwargs = {"engine_dir": args.engine_dir, "rebuild": args.rebuild,
                  "build_options": options or build_options(_get(args)), "cuda_graph": getattr(args, "cuda_graph", False)}
    # Every command judges by the same policy (a mixed variant's search and its cache key use it).
    policy = TolerancePolicy.from_pyproject(getattr(args, "tolerances", Path("pyproject.toml")))
    return Workspace(args.artifacts, args.golden_dir, args.opset, providers=args.providers, policy=policy,
                     fix_budget=getattr(args, "fix_budget", 12), **kwargs)


def _calibration(args: argparse.Namespace) -> CalibrationOptions:
    return calibration_options(_get(args))  # type: ignore[no-any-return]


def _request(args: argparse.Namespace) -> ModelRequest:
    return model_request(args.model, _get(args))  # type: ignore[no-any-return]


def cmd_info(args: argparse.Namespace) -> int:
    from harness.backends import probe_all

    print(f"harness {__version__}, Python {sys.version.split()[0]}")
    for b in probe_all():
        if b.available:
            devices = f"  devices: {', '.join(b.devices)}" if b.devices else ""
            print(f"  {b.name:13s} {b.version:12s} available{devices}")
        else:
            print(f"  {b.name:13s} {'-':12s} missing: {b.reason}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    model = ws.onnx(_request(args))
    print(f"{model.path}  ({model.path.stat().st_size / 1e6:.1f} MB, opset {model.opset}, "
          f"{'reused from cache' if model.reused else 'exported'} in {model.seconds:.1f} s)")
    for kind, tensors in (("input", model.spec.inputs), ("output", model.spec.outputs)):
        for t in tensors:
            print(f"  {kind:6s} {t.name}: {t.dtype}[{format_shape(t.shape)}]")
    return EXIT_OK


def cmd_golden(args: argparse.Namespace) -> int:
    from harness.policy import TolerancePolicy

    policy = TolerancePolicy.from_pyproject(args.tolerances)
    if args.floor_only:
        path, warnings = _workspace(args).write_floor(_request(args), policy)
        print(f"wrote the reference's noise floor into {path}")
    else:
        path, warnings = _workspace(args).write_golden(_request(args), args.samples, args.seed, policy)
        size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
        print(f"wrote {path} ({size / 1e6:.2f} MB)")
    for warning in warnings:
        print(f"harness: warning: {path}: {warning}", file=sys.stderr)
    return EXIT_OK


def cmd_build(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    request = _request(args)
    calibration = _calibration(args)
    for library in args.backends:
        for precision in args.precisions:
            plan = ws.plan(request, library, precision, calibration)
            device = plan.sidecar["device"]
            target = device.get("gpu") or "ahead of time for " + ",".join(device["ahead_of_time"])
            print(f"{plan.path}  {library} {plan.sidecar['version']} {precision}  {plan.size / 1e6:.1f} MB  "
                  f"{'reused' if plan.reused else 'built'} in {plan.seconds:.1f} s  ({target})")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.policy import TolerancePolicy

    ws = _workspace(args)
    request = _request(args)
    calibration = _calibration(args)
    policy = TolerancePolicy.from_pyproject(args.tolerances)
    comparison = ws.compare(request, args.backends, args.precisions, policy, calibration)
    name = ws.frozen(request).name
    width = max([len("output"), *(len(r.output) for r in comparison.results)])
    print(f"{'backend':12s} {'precision':9s} {'output':{width}s} {'result':8s} {'max_abs':>9s} {'p99_abs':>9s} "
          f"{'min_cosine':>10s} {'top1':>6s} {'accuracy':>8s}")
    for r in comparison.results:
        s = r.stats
        top1 = f"{s.top1_agreement:.3f}" if s.top1_agreement is not None else "-"
        accuracy = f"{r.accuracy:.4f}" if r.accuracy is not None else "-"
        print(f"{r.backend:12s} {r.precision:9s} {r.output:{width}s} {r.verdict:8s} "
              f"{s.max_abs_error:9.2e} {s.p99_abs_error:9.2e} {s.cosine_similarity:10.7f} {top1:>6s} {accuracy:>8s}")
    for backend, precision, why in comparison.skipped:
        print(f"{backend:12s} {precision:9s} {'':{width}s} {'SKIP':8s} {why}")
    print(f"(compared with {comparison.reference}; min_cosine: the worst sample's)")
    if any(r.calibration_synthetic for r in comparison.results):
        print(f"(int8: {SYNTHETIC_NOTE})")
    accuracies = {r.reference_accuracy for r in comparison.results if r.reference_accuracy is not None}
    if accuracies:
        print(f"(accuracy: top-1 against the golden labels; TensorFlow reference {accuracies.pop():.4f})")
    if any(r.verdict == "UNSTABLE" for r in comparison.results):
        print("(UNSTABLE: outside the tolerance, but within the reference's own noise floor, which fails the tolerance "
              "itself: not the engine's fault; see below)")
    for r in comparison.results:
        if r.verdict != "PASS":
            print(f"\n{r}")
    for warning in comparison.warnings:
        print(f"harness: warning: {warning}", file=sys.stderr)
    if args.json:
        records = [{"model": name, "reference": comparison.reference, **r.record()} for r in comparison.results]
        records += [{"model": name, "backend": b, "precision": p, "skipped": why} for b, p, why in comparison.skipped]
        atomic_write_json(args.json, records)
        print(f"\nwrote {args.json}")
    if not comparison.results:
        print("harness: error: nothing could run here (see SKIP above)", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK if comparison.passed else EXIT_FAILED


def cmd_debug(args: argparse.Namespace) -> int:

    ws = _workspace(args)
    request = _request(args)
    report = ws.debug(request, args.precision, _calibration(args), samples=args.samples)
    print(report.summary(args.top))
    if args.json:
        atomic_write_json(args.json, report.to_dict())
        print(f"wrote {args.json}")
    if args.plot:
        from harness.report import plot_debug

        plot_debug(report, args.plot)
        print(f"wrote {args.plot}")
    if not args.fix:
        return EXIT_OK if report.passed else EXIT_FAILED
    if report.passed:
        print(f"{args.precision} already passes its golden check: nothing to keep out of it"
              + (f" (output(s) {', '.join(report.unstable_fp32)} only within the reference's own noise floor)"
                 if report.unstable_fp32 else ""))
        return EXIT_OK
    if report.unstable_fp32:
        from harness.floor import refusal

        raise HarnessError(refusal(report.model, args.precision, report.unstable_fp32))
    mixed = f"{args.precision}-mixed"
    model, _ = ws.variant(request, mixed, _calibration(args))
    meta = json.loads((model.path.parent / "meta.json").read_text())
    kept = meta.get("kept_in_fp32") or meta.get("kept_unquantized") or []
    print(f"\n{mixed}: {len(kept)} node(s) kept out of {args.precision} after {meta.get('golden_runs')} golden runs; "
          f"it passes the {args.precision} policy:")
    for name in kept:
        print(f"  {name}")
    print(f"wrote {model.path} (sidecar {model.path.parent / 'meta.json'}); use it as any precision: "
          f"harness compare {args.model} --precisions {args.precision},{mixed}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from harness.serving.engines import recipe_for
    from harness.serving.server import InferenceServer

    # A TensorRT plan must take at least the batches dynamic batching makes.
    ws = _workspace(args, replace(build_options(_get(args)), max_batch=max(args.max_batch, args.dynamic_batch)))
    request = _request(args)
    runner: Runner
    if args.null_engine:
        from harness.serving.engines import NullRunner

        runner = NullRunner(ws.frozen(request).spec)
    elif args.backend == "tensorflow":
        if args.precision != "fp32":  # the reference has one precision: never serve fp32 under another name
            raise UsageError(f"tensorflow serves fp32 only, not {args.precision}")
        runner = ws.tf_runner(request)
    else:
        runner = ws.engine(request, args.backend, args.precision, _calibration(args)).runner
    spec = runner.spec
    engine = "null" if args.null_engine else f"{args.backend}-{runner.precision}"
    server = InferenceServer(recipe_for(runner), spec, spec.name, f"harness-{engine}",
                             args.host, args.port, args.dynamic_batch, args.max_delay_ms, args.max_body_mib << 20,
                             hold_lone_requests=args.hold_lone_requests, grpc_port=args.grpc_port,
                             header_timeout=args.header_timeout, idle_timeout=args.idle_timeout,
                             body_timeout=args.body_timeout, max_connections=args.max_connections,
                             pad_mask=args.pad_with_mask)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"loading {engine} of {spec.name} in the engine worker ...", flush=True)
    server.start()
    batching = (f"dynamic batching up to {args.dynamic_batch} ({args.max_delay_ms:g} ms)" if args.dynamic_batch > 1
                else "no batching")
    grpc = f"; gRPC at {args.host}:{server.grpc_port}" if server.grpc_port is not None else ""
    print(f"serving {spec.name} at {server.url}/v2/models/{spec.name} ({batching}){grpc}; metrics at "
          f"{server.url}/metrics; Ctrl-C stops", flush=True)
    stop.wait()
    print("stopping: finishing requests in flight ...", flush=True)
    server.stop()
    return EXIT_OK


def cmd_loadtest(args: argparse.Namespace) -> int:
    from harness.serving.loadtest import format_table, run_load

    for i, concurrency in enumerate(args.concurrency):
        result = run_load(args.url, args.model, concurrency, args.duration, args.max_requests, args.batch)
        lines = format_table([result]).splitlines()
        print("\n".join(lines if i == 0 else lines[-1:]), flush=True)  # the header once, then a row each
    return EXIT_OK


def cmd_gate(args: argparse.Namespace) -> int:
    """Repetition where wall time's variance lives: between processes. Each run's rows (from
    its benchmark JSON) are combined per row (`harness.timing.across_processes`) and the
    combined speedups judged like one run's."""
    from harness.machine import machine_class
    from harness.measure import Speedup
    from harness.report import load_run
    from harness.timing import (
        REFERENCE,
        Row,
        across_processes,
        check_gate,
        load_baseline,
        spread_between,
        spread_for,
        update_baseline,
    )

    runs = [load_run(path) for path in args.runs]
    classes = {str(run.machine.get("harness", {}).get("class", "")) for run in runs}
    if len(classes) != 1 or "" in classes:
        raise UsageError(f"the runs come from {len(classes)} machine classes ({'; '.join(sorted(classes))}): a "
                         "speedup is compared within one class; give runs of one machine type, written by this harness")
    machine = classes.pop()
    per_run = [{(r.model, r.engine, r.batch): Speedup(r.speedup_vs_tensorflow,
                                                       *(r.speedup_interval or (r.speedup_vs_tensorflow,) * 2))
                for r in run.rows if r.speedup_vs_tensorflow is not None and r.engine != REFERENCE} for run in runs]
    if args.update_baseline:
        measured = across_processes(per_run)
        if not measured:
            raise UsageError(f"no speedup in {', '.join(map(str, args.runs))}: nothing to record")
        info = dict(runs[0].machine.get("harness", {}))
        update_baseline(args.baseline, measured, machine_class(info),
                        {"versions": info.get("versions", {}), "processes": len(runs)}, spread=spread_between(per_run),
                        class_name=machine)
        print(f"baseline written to {args.baseline}: {len(measured)} row(s) from {len(runs)} process(es), with "
              f"their spread between processes, class {machine}")
        return EXIT_OK
    baseline = load_baseline(args.baseline)
    known = spread_for(baseline, machine)
    measured = across_processes(per_run, known)
    print(f"{len(runs)} process(es) on {machine}: each row's speedup is the geometric mean of its runs, its 95% "
          "interval from the spread between processes" + (" (these runs' pooled with the baseline's)" if known else ""))
    # Every row any run timed, measured or not: a model whose speedups no process measured is a
    # failure of the gate (check_gate), not a model left out of it.
    timed = {(r.model, r.engine, r.batch) for run in runs for r in run.rows if r.engine != REFERENCE}
    rows = [Row(model, engine, batch, 1.0, None, measured.get((model, engine, batch)), rounds=len(runs),
                no_speedup="" if (model, engine, batch) in measured else "no process measured its speedup")
            for model, engine, batch in sorted(timed)]
    report = check_gate(rows, baseline, machine, args.max_slowdown, args.allow_missing)
    # A row some processes did not measure is judged on fewer than were asked for: said, and a
    # failure unless allowed (a gate must not pass on what was not measured).
    measured_in = {key: sum(key in run for run in per_run) for key in measured}
    partial = [f"{m} {e} batch {b}: measured in {n} of {len(runs)} processes"
               for (m, e, b), n in sorted(measured_in.items()) if n < len(runs)]
    failed = report.failed or (bool(partial) and not args.allow_missing)
    print(f"gate ({args.baseline}, max slowdown {args.max_slowdown:.0%}): "
          f"{'FAILED' if failed and not report.failed else report.verdict}")
    record = f"harness gate RUN.json... --baseline {args.baseline} --update-baseline"
    for line, _failure in report.lines(args.baseline, record=record, allow_flag="--allow-missing"):
        print(line)
    for line in partial:
        print(("" if args.allow_missing else "FAILED: ") + line)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report import write_report

    written = write_report(args.out, args.benchmarks, args.compare, args.baseline, args.trend, args.debug)
    for warning in written.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {written.markdown}, {written.html} and {len(written.plots)} plots in {args.out}")
    return EXIT_OK


COMMANDS = {
    "info": cmd_info, "export": cmd_export, "build": cmd_build, "golden": cmd_golden, "compare": cmd_compare,
    "debug": cmd_debug,
    "serve": cmd_serve, "loadtest": cmd_loadtest, "gate": cmd_gate, "report": cmd_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        os.environ[VERBOSE_ENV] = "1"  # inherited by the serving worker too
    warnings.simplefilter("ignore", GoldenWarning)  # the commands print these themselves, as lines
    try:
        return COMMANDS[args.command](args)
    except HarnessError as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
