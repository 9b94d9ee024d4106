"""Parsers of option values shared by the CLI and the pytest plugin: each raises
argparse.ArgumentTypeError, so a bad value is a usage error when the options are parsed
(argparse names the option in front of the message)."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.spec import InputArg

OPSET_RANGE = (9, 21)


def input_arg(text: str) -> InputArg:
    try:
        return InputArg.parse(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def opset(text: str) -> int:
    low, high = OPSET_RANGE
    if not text.isdigit() or not low <= int(text) <= high:
        raise argparse.ArgumentTypeError(f"opset {text!r}: an integer from {low} to {high}")
    return int(text)


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a positive integer")
    return int(text)


def batch_sizes(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated positive integers, e.g. 1,8,32")
    return sorted({int(p) for p in parts})


def choices(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    """Parser of a comma-separated list drawn from `allowed`, order kept."""

    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items or any(t not in allowed for t in items):
            raise argparse.ArgumentTypeError(f"{text!r}: comma-separated, from {','.join(allowed)}")
        return items

    return parse


def one_of(allowed: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"{text!r}: one of {','.join(allowed)}")
        return text

    return parse


def report_dir(text: str) -> Path | None:
    return None if text.lower() == "none" else Path(text)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a positive number")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a fraction in [0, 1), e.g. 0.15")
    return value


# --- the option table ----------------------------------------------------------------------
#
# Every option the CLI and the pytest plugin share is declared once here: its name (the
# plugin's is the CLI's with a `--harness-` prefix), one value parser, one help text that
# states the default, and where it applies: CLI commands by name, "pytest" for the plugin.
# Per-place defaults (compare checks onnxruntime by default, the engine fixture every
# backend) are data in the same entry.

PYTEST = "pytest"
DEFAULT_MODEL = "inception_v3"  # the benchmark suite's main job
DEFAULT_BATCH_SIZES = "1,8,32"
DEFAULT_MAX_SLOWDOWN = 0.15
MODEL_COMMANDS = ("export", "build", "golden", "compare", "serve", "debug")
ENGINE_COMMANDS = ("build", "compare", "serve")
EXTRA_SUITES = ("zoo", "serving", "overhead")  # benchmark modules one option away from the main job


@dataclass(frozen=True)
class Option:
    name: str  # e.g. "max-batch": --max-batch in the CLI, --harness-max-batch in pytest
    help: str  # "(default: ...)" is appended from `default` unless `default_text` says otherwise
    where: tuple[str, ...]  # CLI commands, and PYTEST
    type: Callable[[str], Any] | None = None
    default: Any = None
    metavar: str | None = None
    action: str | None = None  # "store_true" | "append"
    default_text: str | None = None  # how the help states the default, where str(default) won't do
    per_place: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # place -> overrides of the above
    aliases: tuple[str, ...] = ()  # older CLI spellings still accepted

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    def at(self, place: str) -> Option:
        return replace(self, **self.per_place.get(place, {}), per_place={})

    def kwargs(self) -> dict[str, Any]:
        shown = self.default_text if self.default_text is not None else _show(self.default)
        # argparse formats help with %: a "95%" in the text would be a format error at --help
        kw: dict[str, Any] = {"help": f"{self.help} (default: {shown})".replace("%", "%%"), "default": self.default}
        if self.action:
            kw["action"] = self.action
        if self.type is not None:
            kw["type"] = self.type
        if self.metavar and self.action != "store_true":
            kw["metavar"] = self.metavar
        return kw


def _show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "none"
    return "none" if value is None else str(value)


@functools.cache
def option_table() -> tuple[Option, ...]:
    from harness.artifacts import DEFAULT_ROOT
    from harness.backends.names import BACKENDS, ENGINE_BACKENDS, TRT_LIBRARIES
    from harness.backends.onnxrt import PROVIDERS
    from harness.backends.trt.build import (
        DEFAULT_MAX_BATCH,
        DEFAULT_OPTIMIZATION_LEVEL,
        DEFAULT_WORKSPACE,
        RTX_AHEAD_OF_TIME,
        RTX_COMPUTE_CAPABILITIES,
    )
    from harness.export import DEFAULT_OPSET
    from harness.golden import GOLDEN_DIR_DEFAULT
    from harness.measure import MAX_SECONDS, TARGET_HALFWIDTH
    from harness.precision import ALL_PRECISIONS, BACKEND_PRECISIONS, PRECISIONS
    from harness.precision.calibration import DEFAULT_PREPROCESS, METHODS
    from harness.stages.calibrate import DEFAULT_CALIBRATION_METHOD, DEFAULT_CALIBRATION_SAMPLES
    from harness.timing import DEFAULT_MAX_INCREASE

    models = MODEL_COMMANDS + (PYTEST,)
    engines = ENGINE_COMMANDS + (PYTEST,)
    calibration = ("build", "compare", "serve", "debug", PYTEST)
    return (
        Option("input", "input node of a checkpoint or .pb, with its shape if the graph lacks one (e.g. "
               "input:1x299x299x3); for any user's model, a dynamic dim's range (tokens:?x1..128 or ?x1/64/128) "
               "and an integer input's values (ids[0,30522)); repeatable", models, input_arg, [],
               "NAME[:SHAPE][[LO,HI)]", "append", "none"),
        Option("output", "output node of a checkpoint or .pb; repeatable", models, None, [], "NAME", "append", "none"),
        Option("signature", "SavedModel signature", models, None, None, "NAME", default_text="serving_default"),
        Option("artifacts", "cache of frozen graphs, ONNX files, calibrations and plans", models, Path,
               DEFAULT_ROOT, "DIR"),
        Option("golden-dir", "golden store", models, Path, None, "DIR", default_text=GOLDEN_DIR_DEFAULT),
        Option("opset", "ONNX opset of the export", models, opset, DEFAULT_OPSET, "N"),
        Option("providers", f"ONNX Runtime execution providers in priority order, from {','.join(PROVIDERS)}",
               models, choices(list(PROVIDERS)), ["cpu"], "P,P,..."),
        # What to run: a list everywhere but `serve`, which serves one engine.
        Option("backends", "backends, comma-separated", ("build", "compare", PYTEST), None, None, "B,B,...",
               aliases=("--backend",), per_place={
                   "build": {"type": choices(list(TRT_LIBRARIES)), "default": ["tensorrt_rtx"],
                             "help": f"TensorRT libraries to build with, from {','.join(TRT_LIBRARIES)}"},
                   "compare": {"type": choices(list(BACKENDS)), "default": ["onnxruntime"],
                               "help": f"backends compared with the golden, from {','.join(BACKENDS)}"},
                   PYTEST: {"type": choices(list(ENGINE_BACKENDS)), "default": list(ENGINE_BACKENDS),
                            "default_text": "all; those unavailable here are skipped with the reason",
                            "help": f"engine backends the `engine` fixture covers, from {','.join(ENGINE_BACKENDS)}"},
               }),
        Option("precisions", f"precisions, comma-separated, from {','.join(ALL_PRECISIONS)} (the -mixed ones "
               "only when named: see harness debug --fix)", ("build", "compare", PYTEST),
               choices(list(ALL_PRECISIONS)), list(PRECISIONS), "P,P,...", aliases=("--precision",), per_place={
                   "compare": {"default": ["fp32"], "default_text": "fp32; tensorflow, the reference, is always fp32"},
                   "build": {"type": choices(list(BACKEND_PRECISIONS["tensorrt"])), "default": ["fp32", "fp16", "int8"],
                             "help": "precisions to build TensorRT plans of, comma-separated, from "
                                     + ",".join(BACKEND_PRECISIONS["tensorrt"])},
               }),
        Option("backend", f"the engine's backend, from {','.join(BACKENDS)}", ("serve",), one_of(BACKENDS),
               "onnxruntime", "B"),
        Option("precision", f"the engine's precision, from {','.join(ALL_PRECISIONS)}", ("serve",), one_of(ALL_PRECISIONS),
               "fp32", "P"),
        Option("calibration", "int8 calibration data: a directory of images, a .npy or an .npz keyed by input name",
               calibration, Path, None, "PATH", default_text="a built-in model's calibration split; otherwise 32 "
               "seeded synthetic inputs, with a warning"),
        Option("calibration-samples", "int8 calibration samples used, the first N", calibration, positive_int,
               DEFAULT_CALIBRATION_SAMPLES, "N"),
        Option("calibration-method", f"int8 calibration method, from {','.join(METHODS)}", calibration, one_of(METHODS),
               DEFAULT_CALIBRATION_METHOD, "M"),
        Option("calibration-preprocess", "preprocessing of calibration images: inception ([-1, 1]), unit ([0, 1]) "
               "or module:function taking an HxWxC uint8 array", calibration, None, DEFAULT_PREPROCESS,
               "NAME|MODULE:FUNCTION"),
        # TensorRT plans.
        Option("engine-dir", "where TensorRT plans and their sidecars are cached", engines, Path, None, "DIR",
               default_text="ARTIFACTS/engines"),
        Option("rebuild", "rebuild TensorRT plans even when a cached one matches", engines, None, False,
               action="store_true", default_text="reuse"),
        Option("max-batch", "largest batch a TensorRT plan takes, MAX_BATCH_SIZE", engines, positive_int,
               DEFAULT_MAX_BATCH, "N"),
        Option("opt-batch", "batch size a TensorRT plan's tactics are tuned for", ("build", "compare", "serve"),
               positive_int, None, "N", default_text="--max-batch"),
        Option("trt-workspace-mib", "TensorRT builder workspace, MAX_WORKSPACE, in MiB", engines, positive_int,
               DEFAULT_WORKSPACE >> 20, "MIB", aliases=("--workspace-mib",)),
        Option("optimization-level", "TensorRT builder optimization level, 0-5", engines, optimization_level,
               DEFAULT_OPTIMIZATION_LEVEL, "0-5"),
        Option("compute-capability", "tensorrt_rtx: build ahead of time for these, e.g. SM86,SM89", engines,
               choices(list(RTX_COMPUTE_CAPABILITIES)), [], "SM,SM,...",
               default_text=f"the GPU here, or without one all of {','.join(RTX_AHEAD_OF_TIME)}"),
        Option("cuda-graph", "TensorRT runners replay captured CUDA graphs", ("compare", "serve", PYTEST), None, False,
               action="store_true", default_text="off"),
        Option("verbose", "let TensorFlow's own C++ log lines through", (PYTEST,), None, False, action="store_true",
               default_text="dropped"),
        Option("devices", "GPUs to spread xdist workers over, one each (CUDA_VISIBLE_DEVICES set in each worker "
               "before CUDA starts)", (PYTEST,), device_list, None, "I,I,...", default_text="all, shared"),
        Option("debug-on-fail", "when a test of an fp16 or int8 engine fails, run harness debug on that precision "
               "and attach its summary to the failure", (PYTEST,), None, False, action="store_true", default_text="off"),
        # The benchmark suite and its gate (pytest only).
        Option("batch-sizes", "batch sizes the benchmarks run", (PYTEST,), batch_sizes, batch_sizes(DEFAULT_BATCH_SIZES),
               "N,N,..."),
        Option("gate", "fail the run when a measured speedup over TensorFlow falls below this baseline's (for this "
               "machine class) by more than --harness-max-slowdown", (PYTEST,), Path, None, "BASELINE.json",
               default_text="no gate"),
        Option("gate-allow-missing", "let the gate pass when baseline rows were not measured or no TensorFlow row "
               "ran", (PYTEST,), None, False, action="store_true",
               default_text="those fail the gate, which must not pass by measuring nothing"),
        Option("max-slowdown", "margin of the gate, a fraction of the baseline speedup", (PYTEST,), fraction,
               DEFAULT_MAX_SLOWDOWN,
               "F"),
        Option("count-instructions", "also count each benchmark row's instructions per call under Valgrind's "
               "callgrind (single-threaded; the mean of the middle 3 of 9 calls; needs valgrind and a C compiler); with "
               "--harness-gate, the gate judges the counts too", (PYTEST,), None, False, action="store_true",
               default_text="off"),
        Option("one-core", "pin this process to one CPU and run TensorFlow and every CPU engine on one thread: "
               "the wall-time gate's low-variance setting (on a shared 2-core VM it cut the spread of speedups "
               "between processes about in half); its speedups are not the multi-core ones a user sees, and its "
               "machine class (1 core) has its own baseline table", (PYTEST,), None, False, action="store_true",
               default_text="off"),
        Option("max-increase", "margin of the gate on instruction counts: a fraction of the baseline count per "
               "call", (PYTEST,), fraction, DEFAULT_MAX_INCREASE, "F"),
        Option("update-baseline", "write the speedups measured in this run into this baseline, under this "
               "machine class (other rows kept)", (PYTEST,), Path, None, "BASELINE.json"),
        Option("report", "write report.md, report.html and plots of a benchmark run to DIR, and, unless "
               "--benchmark-json names another file, its pytest-benchmark JSON as DIR/benchmark.json under "
               "--benchmark-only; 'none' writes neither", (PYTEST,), report_dir, Path("report"), "DIR|none"),
        Option("suites", "benchmark suites to run besides the main one (TensorFlow against every engine at each "
               "batch size): zoo (the model-zoo families), serving (the HTTP load test), overhead (the runner's cost "
               "per call), or all", (PYTEST,), choices(["main", *EXTRA_SUITES, "all"]), ["main"], "S,S,..."),
        Option("halfwidth", "a benchmark row stops once its speedup's 95% interval is within this fraction of "
               "the speedup either side", (PYTEST,), fraction, TARGET_HALFWIDTH, "F"),
        Option("max-seconds", "time cap of one batch size's round-robin (TensorFlow and every engine), seconds; a "
               "row still short of --harness-halfwidth stops there and says so", (PYTEST,), positive_float,
               MAX_SECONDS, "S"),
        Option("serve-engine", "engine the serving benchmark serves", (PYTEST,), None, "onnxruntime-fp32",
               "BACKEND-PRECISION"),
        Option("serve-concurrency", "closed-loop clients of the serving load test", (PYTEST,), batch_sizes,
               batch_sizes("1,2,4,8"), "N,N,..."),
        Option("serve-seconds", "seconds per concurrency in the serving load test", (PYTEST,), float, 3.0, "S"),
    )


def add_cli_options(parser: argparse.ArgumentParser, command: str) -> None:
    for option in option_table():
        if command in option.where:
            o = option.at(command)
            parser.add_argument(f"--{o.name}", *o.aliases, dest=o.dest, **o.kwargs())


def add_pytest_options(group: Any) -> None:
    group.addoption("--harness-model", default=DEFAULT_MODEL, metavar="NAME|PATH[,...]",
                    help=f"models under test, comma-separated: built-in names, paths, or names that "
                    f"[tool.harness.model.NAME] in pyproject.toml describes (default: {DEFAULT_MODEL})")
    group.addoption("--harness-shard", default=None, metavar="K/N",
                    help="take the K-th of N deterministic shares of the models (one CI job per share; "
                    "default: all)")
    for option in option_table():
        if PYTEST in option.where:
            o = option.at(PYTEST)
            group.addoption(f"--harness-{o.name}", dest=f"harness_{o.dest}", **o.kwargs())


def device_list(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if not parts or not all(p.isdigit() for p in parts) or len(set(parts)) != len(parts):
        raise argparse.ArgumentTypeError(f"{text!r}: GPU indices, comma-separated, each once, e.g. 0,1")
    return [int(p) for p in parts]


def optimization_level(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 5:
        raise argparse.ArgumentTypeError(f"{text!r}: an integer from 0 to 5")
    return int(text)


# --- what the options build: in one place for the CLI and the plugin -----------------------

Get = Callable[[str], Any]  # option dest -> value: getattr on argparse's namespace, getoption in pytest


def model_request(model: str, get: Get) -> Any:
    from harness.sources import ModelRequest

    return ModelRequest(model, tuple(get("input")), tuple(get("output")), get("signature"))


def build_options(get: Get, opt_batch: int | None = None) -> Any:
    """TensorRT build options; `opt_batch` where the caller derives it (the benchmarks tune for
    the largest batch they run)."""
    from harness.backends.trt.build import BuildOptions

    return BuildOptions(
        max_batch=get("max_batch"),
        opt_batch=opt_batch if opt_batch is not None else get("opt_batch"),
        workspace=get("trt_workspace_mib") << 20,
        optimization_level=get("optimization_level"),
        compute_capabilities=tuple(get("compute_capability")),
    )


def calibration_options(get: Get) -> Any:
    from harness.stages.calibrate import CalibrationOptions

    return CalibrationOptions(get("calibration"), get("calibration_samples"), get("calibration_method"),
                              get("calibration_preprocess"))
