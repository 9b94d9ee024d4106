"""Benchmark and comparison results -> a report people would rather look at than read:
`report.md` (images beside it), `report.html` (one self-contained file, images embedded)
and the PNG plots, in one output directory.

Inputs are pytest-benchmark JSON files (`--benchmark-json`, or saved runs under
`.benchmarks/`, directories searched) and optionally `harness compare --json` records.
A file that is not what it should be is named in a warning and left out; the rest renders."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.artifacts import atomic_write_bytes
from harness.compare import SYNTHETIC_NOTE
from harness.errors import InputError
from harness.timing import REFERENCE, baseline_for

TREND_METRICS = {
    "speedup": ("speedup_vs_tensorflow", "speedup over TensorFlow (x)"),
    "p50": ("p50_ms", "p50 latency (ms)"),
    "p99": ("p99_ms", "p99 latency (ms)"),
    "throughput": ("samples_per_s", "throughput (samples/s)"),
}


@dataclass(frozen=True)
class BenchRow:
    model: str
    backend: str
    precision: str
    batch: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    samples_per_s: float
    speedup_vs_tensorflow: float | None
    calibration_synthetic: bool = False  # an int8 engine calibrated on synthetic data
    speedup_interval: tuple[float, float] | None = None  # 95%, from the interleaved rounds
    low_confidence: tuple[str, ...] = ()  # percentiles measured on fewer rounds than they need
    stopped: str = ""  # what ended the row's measurement ("interval", "time cap")
    busy: bool = False  # other processes took more than harness.measure.BUSY_SHARE of the machine meanwhile
    others_share: float | None = None

    @property
    def engine(self) -> str:
        return f"{self.backend}-{self.precision}"


@dataclass(frozen=True)
class Run:
    name: str
    path: Path
    when: str
    machine: Mapping[str, Any]
    rows: tuple[BenchRow, ...]
    # The run's other suites' end-of-run tables (model zoo, serving, runner overhead): (title, lines).
    sections: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def machine_summary(self) -> str:
        m = self.machine
        harness = m.get("harness", {})
        cpu = harness.get("cpu", {}).get("model") or m.get("cpu", {}).get("brand_raw") or m.get("processor", "?")
        cores = harness.get("cpu", {}).get("usable_cores") or m.get("cpu", {}).get("count", "?")
        gpus = ", ".join(g.get("name", "?") for g in harness.get("gpus", [])) or "no GPU"
        return f"{cpu}, {cores} cores, {gpus}"


@dataclass
class Inputs:
    runs: list[Run] = field(default_factory=list)
    compare: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)  # every model any run or record covers


def _json_files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        files += sorted(p.rglob("*.json")) if p.is_dir() else [p]
    return files


def load_run(path: Path) -> Run:
    """One pytest-benchmark JSON file, or InputError saying what is wrong with it."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e})") from e
    except ValueError as e:
        raise InputError(f"{path}: not JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list) or "machine_info" not in data:
        raise InputError(f"{path}: not a pytest-benchmark file (no 'benchmarks' list and 'machine_info'); "
                         "write one with pytest benchmarks/ --benchmark-only --benchmark-json FILE")
    rows = []
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {}) if isinstance(bench, dict) else {}
        if not {"model", "engine", "precision", "batch", "p50_ms"} <= set(info):
            continue  # not a harness latency row (the overhead benchmark, a user's own)
        rows.append(BenchRow(
            # "engine" is backend-precision; files of harness 0.1 put the backend alone under it.
            str(info["model"]), str(info.get("backend", info["engine"])), str(info["precision"]), int(info["batch"]),
            float(info["p50_ms"]), float(info["p90_ms"]), float(info["p99_ms"]), float(info["samples_per_s"]),
            None if info.get("speedup_vs_tensorflow") is None else float(info["speedup_vs_tensorflow"]),
            bool(info.get("calibration_synthetic", False)),
            _interval(info.get("speedup_interval")), tuple(str(q) for q in info.get("low_confidence") or ()),
            str(info.get("stopped_by", "")), bool(info.get("busy", False)), info.get("others_cpu_share"),
        ))
    if not rows:
        raise InputError(f"{path}: an empty run (no harness benchmark rows among {len(data['benchmarks'])} benchmarks)")
    sections = tuple((str(x.get("title", "")), tuple(str(line) for line in x.get("lines", [])))
                     for x in data.get("harness_sections", []) if isinstance(x, dict))
    return Run(Path(path).stem, Path(path), str(data.get("datetime", "")), data.get("machine_info", {}), tuple(rows),
               sections)


def _interval(value: Any) -> tuple[float, float] | None:
    """A row's [low, high], absent from files of harnesses before intervals."""
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
        return float(value[0]), float(value[1])
    return None


def load_compare(path: Path) -> list[dict[str, Any]]:
    try:
        records = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable JSON file ({e})") from e
    if not isinstance(records, list) or not all(isinstance(r, dict) and "backend" in r for r in records):
        raise InputError(f"{path}: not `harness compare --json` records (a list of objects with 'backend')")
    return records


def load_inputs(benchmarks: Sequence[Path], compare: Sequence[Path] = (), allow_empty: bool = False) -> Inputs:
    inputs = Inputs()
    for path in _json_files(benchmarks):
        try:
            inputs.runs.append(load_run(path))
        except InputError as e:
            inputs.warnings.append(f"left out: {e}")
    for path in compare:
        try:
            inputs.compare += [r for r in load_compare(path) if "skipped" not in r]
        except InputError as e:
            inputs.warnings.append(f"left out: {e}")
    inputs.runs.sort(key=lambda r: r.when)
    if not inputs.runs and not inputs.compare and not allow_empty:
        raise InputError("nothing to report: " + "; ".join(inputs.warnings or ["no input files"]))
    machines = {r.machine_summary for r in inputs.runs}
    if len(machines) > 1:
        inputs.warnings.append("runs come from different machines, so their absolute times are not comparable "
                               "(speedups measured within each run are): " + "; ".join(sorted(machines)))
    inputs.models = sorted({row.model for r in inputs.runs for row in r.rows}
                           | {str(c["model"]) for c in inputs.compare if "model" in c})
    if len(inputs.models) > 1:
        inputs.warnings.append(f"the inputs cover several models ({', '.join(inputs.models)}): each is reported "
                               "on its own, from the latest run that measured it, with that run's machine")
    return inputs


# --- plots -------------------------------------------------------------------------------


def _pyplot() -> Any:
    from harness.lazy import lazy_import

    matplotlib = lazy_import("matplotlib")
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    import io

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")  # the legend beside the axes included
    _pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _engines(rows: Sequence[BenchRow]) -> list[str]:
    return sorted({r.engine for r in rows}, key=lambda e: (e != REFERENCE, e))


# matplotlib's tab20 then tab20b, so plots made without matplotlib (the docs' results page) use
# the same colours
PALETTE = ("#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd",
           "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d",
           "#17becf", "#9edae5",
           "#393b79", "#5254a3", "#6b6ecf", "#9c9ede", "#637939", "#8ca252", "#b5cf6b", "#cedb9c", "#8c6d31",
           "#bd9e39", "#e7ba52", "#e7cb94", "#843c39", "#ad494a", "#d6616b", "#e7969c", "#7b4173", "#a55194",
           "#ce6dbd", "#de9ed6")


def engine_colour(engine: str) -> str:
    """One colour per engine in every plot of every report and page: its place among all the
    engines the harness knows, not among those a plot happens to show (OpenVINO int8 was pink
    in one plot and grey in the next)."""
    from harness.backends.names import ENGINE_BACKENDS
    from harness.precision import ALL_PRECISIONS

    known = [REFERENCE] + [f"{b}-{p}" for b in ENGINE_BACKENDS for p in ALL_PRECISIONS if not p.endswith("-mixed")]
    known += [f"{b}-{p}" for b in ENGINE_BACKENDS for p in ALL_PRECISIONS if p.endswith("-mixed")]
    index = known.index(engine) if engine in known and known.index(engine) < len(PALETTE) else 20 + sum(map(ord, engine)) % 20
    return PALETTE[index]


def _legend(ax: Any, **kwargs: Any) -> None:
    """Beside the plot, never over its data."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kwargs)


def plot_latency(rows: Sequence[BenchRow], model: str, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    for engine in _engines(rows):
        mine = sorted((r for r in rows if r.engine == engine), key=lambda r: r.batch)
        batches = [r.batch for r in mine]
        color = engine_colour(engine)
        ax.plot(batches, [r.p50_ms for r in mine], "o-", color=color, label=f"{engine} p50")
        ax.plot(batches, [r.p99_ms for r in mine], "v--", color=color, alpha=0.6, label=f"{engine} p99")
        ax.fill_between(batches, [r.p50_ms for r in mine], [r.p90_ms for r in mine], color=color, alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("latency per batch (ms)")
    ax.set_title(f"{model}: latency (p50, p50-p90 band, p99)")
    _legend(ax)
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def _grouped_bars(ax: Any, rows: Sequence[BenchRow], engines: list[str], value: Any) -> dict[tuple[str, int], Any]:
    batches = sorted({r.batch for r in rows})
    width = 0.8 / max(len(engines), 1)
    positions = {}
    for i, engine in enumerate(engines):
        by_batch = {r.batch: r for r in rows if r.engine == engine}
        xs = [b + (i - (len(engines) - 1) / 2) * width for b in range(len(batches))]
        heights = [value(by_batch[b]) if b in by_batch and value(by_batch[b]) is not None else 0 for b in batches]
        ax.bar(xs, heights, width, label=engine, color=engine_colour(engine))
        for x, b in zip(xs, batches, strict=True):
            positions[(engine, b)] = x
    ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
    _legend(ax)
    ax.grid(True, axis="y", alpha=0.3)
    return positions


def plot_throughput(rows: Sequence[BenchRow], model: str, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    _grouped_bars(ax, rows, _engines(rows), lambda r: r.samples_per_s)
    ax.set_ylabel("samples / s")
    ax.set_title(f"{model}: throughput")
    return _save(fig, path)


def plot_speedup(rows: Sequence[BenchRow], model: str, path: Path, baseline: Mapping[str, Any] | None) -> Path:
    """`baseline`: the gate's speedups of the run's machine class, {model: {engine: {batch: ratio}}}."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    engines = [e for e in _engines(rows) if e != REFERENCE]
    positions = _grouped_bars(ax, rows, engines, lambda r: r.speedup_vs_tensorflow)
    ax.axhline(1.0, color="black", lw=0.8)
    for r in rows:  # the 95% interval of each speedup
        if r.speedup_interval is not None and r.speedup_vs_tensorflow is not None and (r.engine, r.batch) in positions:
            low, high = r.speedup_interval
            ax.errorbar(positions[(r.engine, r.batch)], r.speedup_vs_tensorflow, color="black", capsize=3, lw=1,
                        yerr=[[r.speedup_vs_tensorflow - low], [high - r.speedup_vs_tensorflow]])
    marked = False
    for (engine, batch), x in positions.items():
        ratio = ((baseline or {}).get(model, {}).get(engine, {}) or {}).get(str(batch))
        if ratio is not None:
            ax.plot([x - 0.12, x + 0.12], [ratio, ratio], color="black", lw=2,
                    label=None if marked else "gate baseline")
            marked = True
    ax.set_ylabel("speedup over TensorFlow (same run)")
    ax.set_title(f"{model}: speedup over TensorFlow")
    _legend(ax)
    return _save(fig, path)


def plot_errors(records: Sequence[Mapping[str, Any]], model: str, path: Path) -> Path:
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    for i, r in enumerate(records):
        label = f"{r['backend']}-{r['precision']} {r['output']}"
        hist = r.get("abs_error_histogram")
        if hist and hist.get("counts"):  # no bins: identical to the reference
            left.stairs(hist["counts"], hist["edges"], color=f"C{i}", label=label)
        cosines = r.get("cosine_per_sample") or []
        # 1 - cosine on a log axis: 0.9999 and 0.99 are far apart there, not on a linear one.
        left_out = [max(1.0 - c, 1e-12) for c in cosines]
        right.plot(range(len(left_out)), sorted(left_out), ".", color=f"C{i}", label=label, ms=3)
    left.set_xscale("log")
    left.set_xlabel("|engine - TensorFlow| per element")
    left.set_ylabel("elements")
    left.set_title(f"{model}: absolute error")
    left.legend(fontsize=7)
    right.set_yscale("log")
    right.set_xlabel("golden samples (sorted)")
    right.set_ylabel("1 - cosine similarity")
    right.set_title(f"{model}: per-sample cosine distance")
    right.legend(fontsize=7)
    return _save(fig, path)


def plot_trend(runs: Sequence[Run], model: str, metric: str, path: Path) -> Path:
    plt = _pyplot()
    key, label = TREND_METRICS[metric]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    series: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for index, run in enumerate(runs):
        for row in run.rows:
            value = getattr(row, key)
            if row.model == model and value is not None and not (metric == "speedup" and row.engine == REFERENCE):
                series.setdefault((row.engine, row.batch), []).append((index, value))
    for i, ((engine, batch), points) in enumerate(sorted(series.items())):
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color=f"C{i % 10}", label=f"{engine} b{batch}")
    ax.set_xticks(range(len(runs)), [r.when[:16] or r.name for r in runs], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(label)
    ax.set_title(f"{model}: {label} across {len(runs)} runs")
    ax.legend(fontsize=6, ncol=3)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


# --- tables and documents ----------------------------------------------------------------


def summary_rows(run: Run, model: str, compare: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The summary table of one model in one run, joined with golden results where known."""
    golden: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in compare:
        if r.get("model") == model:
            golden.setdefault((str(r["backend"]), str(r["precision"])), []).append(r)
    rows = []
    for row in sorted((r for r in run.rows if r.model == model), key=lambda r: (r.batch, r.engine != REFERENCE, r.engine)):
        checks = golden.get((row.backend, row.precision), [])
        accuracy = next((c.get("accuracy") for c in checks if c.get("accuracy") is not None), None)
        rows.append({
            "backend": row.backend, "precision": row.precision, "batch": row.batch,
            "p50_ms": row.p50_ms, "p90_ms": row.p90_ms, "p99_ms": row.p99_ms,
            "samples_per_s": row.samples_per_s, "speedup": row.speedup_vs_tensorflow,
            "interval": row.speedup_interval if row.engine != REFERENCE else None,
            "low_confidence": row.low_confidence,
            # "unstable": passed only within the reference's own noise floor (harness.floor).
            "golden": ("-" if not checks else "FAIL" if not all(c.get("passed") for c in checks)
                       else "unstable" if any(c.get("verdict") == "UNSTABLE" for c in checks) else "pass"),
            "accuracy": accuracy, "stopped": row.stopped, "busy": row.busy, "others_share": row.others_share,
        })
    return rows


COLUMNS = ["backend", "precision", "batch", "p50 ms", "p90 ms", "p99 ms", "samples/s", "speedup [95%]", "golden",
           "accuracy"]


def _table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and cells, without the golden and accuracy columns where no row has one (a
    benchmark run alone knows no golden results)."""
    cells = [_cells(r) for r in rows]
    keep = [i for i, c in enumerate(COLUMNS) if c not in ("golden", "accuracy") or any(row[i] != "-" for row in cells)]
    return [COLUMNS[i] for i in keep], [[row[i] for i in keep] for row in cells]


LOW_CONFIDENCE_MARK = "~"  # a percentile from fewer rounds than it needs (harness.measure.rounds_needed)


def _cells(row: Mapping[str, Any]) -> list[str]:
    def ms(q: str) -> str:
        return f"{LOW_CONFIDENCE_MARK if q in row.get('low_confidence', ()) else ''}{row[f'{q}_ms']:.2f}"

    speedup = "-" if row["speedup"] is None else f"{row['speedup']:.2f}x"
    if row["speedup"] is not None and row.get("interval"):
        speedup += " [{:.2f}, {:.2f}]".format(*row["interval"])
    return [
        row["backend"], row["precision"], str(row["batch"]), ms("p50"), ms("p90"), ms("p99"),
        f"{row['samples_per_s']:.1f}", speedup, row["golden"],
        f"{row['accuracy']:.4f}" if row["accuracy"] is not None else "-",
    ]


@dataclass(frozen=True)
class Written:
    markdown: Path
    html: Path
    plots: tuple[Path, ...]
    warnings: tuple[str, ...]


def write_run_report(out: Path, rows: Sequence[Any], baseline: Path | None = None,
                     sections: Sequence[tuple[str, Sequence[str]]] = ()) -> str:
    """The report of a benchmark run still in memory (`harness.timing.Row`s with their
    extra_info), written as `harness-run.json` (the subset of pytest-benchmark's JSON this
    module reads: machine_info, datetime, each row's extra_info; not pytest-benchmark's own
    file, which --benchmark-json writes), then rendered; one line saying where it went, or
    why there is none."""
    import datetime

    from harness.errors import HarnessError
    from harness.machine import machine_info

    timed = [r for r in rows if r.extra_info is not None]
    if not timed:
        return "harness: no report: no benchmarks ran"
    data = {
        "machine_info": {"harness": machine_info()},
        "datetime": datetime.datetime.now(datetime.UTC).isoformat(),
        "benchmarks": [{"name": f"{r.model} {r.engine} batch {r.batch}", "group": f"{r.model} batch {r.batch}",
                        "extra_info": dict(r.extra_info)} for r in timed],
        "harness_sections": [{"title": title, "lines": list(lines)} for title, lines in sections],
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "harness-run.json", (json.dumps(data, indent=2, default=str) + "\n").encode())
    try:
        written = write_report(out, [out / "harness-run.json"], baseline=baseline)
    except HarnessError as e:
        return f"harness: no report: {e}"
    return f"harness: report written to {written.html} ({len(written.plots)} plots)"


def write_report(
    out: Path,
    benchmarks: Sequence[Path],
    compare: Sequence[Path] = (),
    baseline: Path | None = None,
    trend: str = "speedup",
    debug: Sequence[Path] = (),
) -> Written:
    if trend not in TREND_METRICS:
        raise InputError(f"trend metric {trend!r}: choose from {sorted(TREND_METRICS)}")
    inputs = load_inputs(benchmarks, compare, allow_empty=bool(debug))
    gate = None
    if baseline is not None:
        from harness.errors import HarnessError
        from harness.timing import load_baseline

        try:
            gate = load_baseline(baseline)
        except HarnessError as e:  # a broken baseline loses the markers, not the report
            inputs.warnings.append(f"left out the gate baseline: {e}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md: list[str] = ["# Inference benchmark report", ""]
    body: list[tuple[str, Any]] = []  # ("h2"|"p"|"table"|"img"|"warn", content), rendered twice
    for w in inputs.warnings:
        body.append(("warn", w))
    for run in inputs.runs:
        body.append(("p", f"Run {run.name} ({run.when or 'no date'}): {run.machine_summary}; versions "
                     + ", ".join(f"{k} {v}" for k, v in run.machine.get("harness", {}).get("versions", {}).items())))
    plots: list[Path] = []
    for model in inputs.models:
        body.append(("h2", model))
        # The latest run that measured this model: shards of one model list, run as N CI jobs on N
        # machines, merge into one report this way, each model from the job that ran it.
        latest = next((r for r in reversed(inputs.runs) if any(row.model == model for row in r.rows)), None)
        rows = [r for r in latest.rows if r.model == model] if latest else []
        if rows and latest is not None:
            body.append(("p", (f"Latest run: {latest.name}, on {latest.machine_summary} (machine class "
                               f"{latest.machine.get('harness', {}).get('class', '?')}). Speedups are against "
                               "TensorFlow at the same batch size, measured in the same run.")))
            table = summary_rows(latest, model, inputs.compare)
            body.append(("table", _table(table)))
            notes = []
            if any(r["low_confidence"] for r in table):
                notes.append(f"{LOW_CONFIDENCE_MARK} before a latency: that percentile comes from fewer calls than it "
                             "needs (10 beyond it: the median 20, p90 100, p99 1000)")
            capped = [f"{r['backend']}-{r['precision']} batch {r['batch']}" for r in table if r.get("stopped") == "time cap"]
            if capped:
                notes.append(f"stopped by the time cap before the interval reached its target: {', '.join(capped)}")
            busy = [f"{r['backend']}-{r['precision']} batch {r['batch']} ({r['others_share']:.0%})" for r in table
                    if r.get("busy")]
            if busy:
                body.append(("warn", ("measured while other processes took more than 10% of the machine (their share "
                                      f"in brackets): {', '.join(busy)}; these figures may be wrong either way")))
            if notes:
                body.append(("p", "; ".join(notes) + "."))
            machine = str(latest.machine.get("harness", {}).get("class", ""))
            marks = baseline_for(gate, machine) if gate is not None else None
            if gate is not None and marks is None:
                body.append(("warn", (f"the gate baseline has no entry for this run's machine class ({machine}); "
                                     "its speedups are not marked")))
            plots += [
                plot_latency(rows, model, out / f"latency-{model}.png"),
                plot_throughput(rows, model, out / f"throughput-{model}.png"),
                plot_speedup(rows, model, out / f"speedup-{model}.png", marks),
            ]
            body += [("img", p) for p in plots[-3:]]
        records = [c for c in inputs.compare if c.get("model") == model]
        live = sorted({str(c["reference"]) for c in records if "(no golden)" in str(c.get("reference", ""))})
        for reference in live:
            body.append(("warn", f"compared with {reference}: no stored golden; record one with `harness golden`"))
        for c in records:
            if c.get("reference_unstable"):
                body.append(("warn", (f"{c.get('backend')}-{c.get('precision')} output {c.get('output')!r}: reference "
                                     f"unstable ({'; '.join(c['reference_unstable'])}); golden verdict "
                                     f"{c.get('verdict', '?')}: TensorFlow does not hold this output steady itself")))
        synthetic = sorted({f"{c.get('backend')}-{c.get('precision')}" for c in records if c.get("calibration_synthetic")})
        synthetic += sorted({f"{r.engine} (benchmarked)" for r in rows if r.calibration_synthetic})
        if synthetic:
            body.append(("warn", f"{', '.join(synthetic)}: {SYNTHETIC_NOTE}"))
        if records:
            plots.append(plot_errors(records, model, out / f"errors-{model}.png"))
            body.append(("img", plots[-1]))
        with_model = [r for r in inputs.runs if any(row.model == model for row in r.rows)]
        if len(with_model) >= 2:
            plots.append(plot_trend(with_model, model, trend, out / f"trend-{model}.png"))
            body.append(("img", plots[-1]))

    for run in inputs.runs:  # the other suites that ran (zoo, serving, overhead), as the run printed them
        for title, lines in run.sections:
            body.append(("h2", title.removeprefix("harness: ") + (f" ({run.name})" if len(inputs.runs) > 1 else "")))
            body.append(("pre", "\n".join(lines)))

    from harness.debug import DebugReport

    for path in debug:  # `harness debug --json` files: the summary and error against depth
        try:
            report = DebugReport.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            body.append(("warn", f"left out {path}: not a `harness debug --json` file ({type(e).__name__}: {e})"))
            continue
        body.append(("h2", f"{report.model}: {report.precision} tensor by tensor (harness debug)"))
        body.append(("p", report.summary().replace("\n", "  \n")))
        plots.append(plot_debug(report, out / f"debug-{report.model}-{report.precision}.png"))
        body.append(("img", plots[-1]))

    for kind, content in body:
        if kind == "h2":
            md += [f"## {content}", ""]
        elif kind == "p":
            md += [content, ""]
        elif kind == "warn":
            md += [f"> **Warning:** {content}", ""]
        elif kind == "pre":
            md += ["```", content, "```", ""]
        elif kind == "table":
            columns, cells_of = content
            md += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            md += ["| " + " | ".join(cells) + " |" for cells in cells_of] + [""]
        else:
            md += [f"![{content.stem}]({content.name})", ""]
    markdown = out / "report.md"
    atomic_write_bytes(markdown, "\n".join(md).encode())

    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}.warn{background:#fff3cd;padding:6px}"
             "img{max-width:100%}")
    page = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'><title>Inference benchmark report</title>",
            f"<style>{style}</style></head><body>", "<h1>Inference benchmark report</h1>"]
    for kind, content in body:
        if kind == "h2":
            page.append(f"<h2>{html.escape(content)}</h2>")
        elif kind == "p":
            page.append(f"<p>{html.escape(content)}</p>")
        elif kind == "warn":
            page.append(f"<p class='warn'><b>Warning:</b> {html.escape(content)}</p>")
        elif kind == "pre":
            page.append(f"<pre>{html.escape(content)}</pre>")
        elif kind == "table":
            columns, cells_of = content
            page.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>")
            page += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in cells_of]
            page.append("</table>")
        else:
            data = base64.b64encode(content.read_bytes()).decode()
            page.append(f"<p><img alt='{html.escape(content.stem)}' src='data:image/png;base64,{data}'></p>")
    page.append("</body></html>")
    report_html = out / "report.html"
    atomic_write_bytes(report_html, "\n".join(page).encode())
    return Written(markdown, report_html, tuple(plots), tuple(inputs.warnings))


def plot_debug(report: Any, path: Path) -> Path:
    """`harness debug`'s relative error of every tensor against its depth in the graph, overflowing
    (fp16) or saturating (int8) tensors marked, the first error jump annotated."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    rows = report.rows
    ax.plot([r.depth for r in rows], [max(r.relative, 1e-9) for r in rows], ".", color="C0", label="relative error")
    flagged = [r for r in rows if r.overflow or r.saturated > 0.01]
    if flagged:
        ax.plot([r.depth for r in flagged], [max(r.relative, 1e-9) for r in flagged], "x", color="C3", markersize=8,
                label="fp16 overflow" if report.precision == "fp16" else "int8 saturation > 1%")
    jump = report.first_jump()
    if jump is not None:
        ax.annotate(f"first jump: {jump.op}", (jump.depth, max(jump.relative, 1e-9)), textcoords="offset points",
                    xytext=(10, 10), arrowprops={"arrowstyle": "->"})
    ax.set_yscale("log")
    ax.set_xlabel("depth (node index in the fp32 graph)")
    ax.set_ylabel("max |error| / max |fp32 value|")
    ax.set_title(f"{report.model}: {report.precision} against fp32, tensor by tensor")
    ax.legend(fontsize=8)
    return _save(fig, path)
