"""`harness report`: tables that match the input numbers, valid plot files, an HTML page
that embeds them, and clear warnings for inputs that are not what they should be."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.errors import InputError

pytest.importorskip("matplotlib", reason="matplotlib not importable (pip install -e '.[report]')")

ENGINES = [("tensorflow", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")]


def bench_json(path: Path, model: str = "m", cpu: str = "CPU A", when: str = "2026-11-26T01:00:00",
               scale: float = 1.0) -> Path:
    """A pytest-benchmark file shaped like the suite's, with made-up but consistent numbers."""
    benchmarks: list[dict[str, Any]] = []
    for batch in (1, 8):
        tf_p50 = 10.0 * batch * scale
        for engine, precision in ENGINES:
            p50 = tf_p50 / {"tensorflow": 1.0, "onnxruntime": 1.5}[engine] / (2.0 if precision == "int8" else 1.0)
            benchmarks.append({"group": f"{model} batch {batch}", "name": f"test[{engine}-{precision}-{batch}]",
                               "stats": {"median": p50 / 1e3}, "extra_info": {
                                   "model": model, "engine": engine, "precision": precision, "batch": batch,
                                   "p50_ms": p50, "p90_ms": p50 * 1.1, "p99_ms": p50 * 1.3,
                                   "samples_per_s": batch / (p50 / 1e3), "speedup_vs_tensorflow": tf_p50 / p50}})
    benchmarks.append({"name": "test_overhead[bare]", "extra_info": {"path": "bare"}})  # not a latency row
    path.write_text(json.dumps({"machine_info": {"harness": {"cpu": {"model": cpu, "usable_cores": 2}, "gpus": [],
                                                             "class": f"{cpu}, 2 cores; no GPU",
                                                             "versions": {"onnxruntime": "1.32.0"}}},
                                "datetime": when, "benchmarks": benchmarks}))
    return path


def table(markdown: str, model: str) -> list[list[str]]:
    section = markdown.split(f"## {model}\n", 1)[1].split("\n## ", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| backend")]


def test_tables_match_the_input_and_plots_are_valid_images(tmp_path: Path) -> None:
    from PIL import Image

    from harness.report import write_report

    run = bench_json(tmp_path / "run.json")
    records = [{"model": "m", "backend": "onnxruntime", "precision": p, "output": "logits", "passed": p == "fp32",
                "accuracy": {"fp32": 0.98, "int8": 0.97}[p], "cosine_per_sample": [0.9999, 0.998],
                "abs_error_histogram": {"edges": [1e-4, 1e-3, 1e-2], "counts": [5.0, 2.0]},
                "calibration_synthetic": p == "int8"} for p in ("fp32", "int8")]
    (tmp_path / "cmp.json").write_text(json.dumps(records))
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"format": 2, "machines": {
        "CPU A, 2 cores; no GPU": {"machine": {}, "models": {"m": {"onnxruntime-int8": {"1": 2.5}}}}}}))
    written = write_report(tmp_path / "out", [run], [tmp_path / "cmp.json"], baseline)
    assert written.warnings == ()  # the baseline has this run's machine class
    from harness.compare import SYNTHETIC_NOTE

    assert f"onnxruntime-int8: {SYNTHETIC_NOTE}" in written.markdown.read_text()  # int8 calibrated on synthetic data
    # Records compared against TensorFlow run on the spot (no golden), and a benchmarked int8
    # engine calibrated on synthetic data, are both said in the report.
    data = json.loads(run.read_text())
    for b in data["benchmarks"]:
        if b["extra_info"].get("precision") == "int8":
            b["extra_info"]["calibration_synthetic"] = True
    live_run = tmp_path / "live-run.json"
    live_run.write_text(json.dumps(data))
    live = [{**r, "reference": "TensorFlow run now on 32 seeded random samples (no golden)",
             "calibration_synthetic": False} for r in records]
    (tmp_path / "live.json").write_text(json.dumps(live))
    text = write_report(tmp_path / "out3", [live_run], [tmp_path / "live.json"]).markdown.read_text()
    assert "compared with TensorFlow run now on 32 seeded random samples (no golden)" in text
    assert f"onnxruntime-int8 (benchmarked): {SYNTHETIC_NOTE}" in text
    # A check that passed only within the reference's own noise floor reads "unstable", with why.
    shaky = [{**r, "passed": True, "verdict": "UNSTABLE" if r["precision"] == "int8" else "PASS",
              "reference_unstable": ["its own max error 0.9 > atol 0.0005"] if r["precision"] == "int8" else []}
             for r in records]
    (tmp_path / "shaky.json").write_text(json.dumps(shaky))
    text = write_report(tmp_path / "out4", [run], [tmp_path / "shaky.json"]).markdown.read_text()
    assert {tuple(r[1:2]) + (r[8],) for r in table(text, "m") if r[0] == "onnxruntime"} == {("fp32", "pass"),
                                                                                            ("int8", "unstable")}
    assert "onnxruntime-int8 output 'logits': reference unstable (its own max error 0.9 > atol 0.0005)" in text
    other_class = tmp_path / "other.json"
    other_class.write_text(baseline.read_text().replace("CPU A, 2 cores", "CPU Z, 64 cores"))
    elsewhere = write_report(tmp_path / "out2", [run], [], other_class)
    assert "no entry for this run's machine class (CPU A, 2 cores; no GPU)" in elsewhere.markdown.read_text()

    data = json.loads(run.read_text())
    expected = {(b["extra_info"]["engine"], b["extra_info"]["precision"], b["extra_info"]["batch"]): b["extra_info"]
                for b in data["benchmarks"] if "engine" in b["extra_info"]}
    rows = table(written.markdown.read_text(), "m")
    assert len(rows) == len(expected) == 6
    for engine, precision, batch, p50, p90, p99, rate, speedup, golden, accuracy in rows:
        info = expected[(engine, precision, int(batch))]
        assert (float(p50), float(p90), float(p99)) == pytest.approx(
            (info["p50_ms"], info["p90_ms"], info["p99_ms"]), abs=0.006)
        assert float(rate) == pytest.approx(info["samples_per_s"], abs=0.06)
        assert float(speedup.rstrip("x")) == pytest.approx(info["speedup_vs_tensorflow"], abs=0.006)
        if engine == "onnxruntime":
            assert golden == {"fp32": "pass", "int8": "FAIL"}[precision]
            assert float(accuracy) == {"fp32": 0.98, "int8": 0.97}[precision]
        else:
            assert golden == accuracy == "-"

    names = sorted(p.name for p in written.plots)
    assert names == ["errors-m.png", "latency-m.png", "speedup-m.png", "throughput-m.png"]
    for plot in written.plots:
        with Image.open(plot) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] >= 600
        assert f"]({plot.name})" in written.markdown.read_text()  # Markdown references the file beside it

    page = written.html.read_text()
    embedded = re.findall(r"<img [^>]*src='([^']*)'", page)
    assert len(embedded) == len(written.plots) and all(s.startswith("data:image/png;base64,") for s in embedded)
    assert not re.search(r"(src|href)=['\"](?!data:)", page), "the page must not reference anything outside it"


def test_bad_inputs_are_named_and_the_rest_still_renders(tmp_path: Path) -> None:
    from harness.report import write_report

    good = bench_json(tmp_path / "good.json", model="a")
    other = bench_json(tmp_path / "other.json", model="b", cpu="CPU B", when="2026-11-26T02:00:00")
    (tmp_path / "compare.json").write_text('[{"backend": "onnxruntime"}]')  # a compare file, not a benchmark
    (tmp_path / "empty.json").write_text('{"machine_info": {}, "benchmarks": []}')
    (tmp_path / "broken.json").write_text("{")
    written = write_report(tmp_path / "out", [good, other, tmp_path / "compare.json", tmp_path / "empty.json",
                                              tmp_path / "broken.json"])
    warnings = "\n".join(written.warnings)
    assert "compare.json: not a pytest-benchmark file" in warnings
    assert "empty.json: an empty run" in warnings
    assert "broken.json: not JSON" in warnings
    assert "several models (a, b)" in warnings
    assert "different machines" in warnings and "CPU A" in warnings and "CPU B" in warnings
    markdown = written.markdown.read_text()
    assert "> **Warning:** left out:" in markdown and "## a" in markdown and "## b" in markdown
    assert "class='warn'" in written.html.read_text()

    with pytest.raises(InputError, match="nothing to report.*broken.json: not JSON"):
        write_report(tmp_path / "none", [tmp_path / "broken.json"])


def test_several_runs_give_a_trend_and_directories_are_searched(tmp_path: Path) -> None:
    from PIL import Image

    runs = tmp_path / ".benchmarks" / "Linux-CPython-3.11-64bit"
    runs.mkdir(parents=True)
    for i, scale in enumerate((1.0, 1.1, 1.5)):
        bench_json(runs / f"000{i}_run.json", when=f"2026-11-2{i}T00:00:00", scale=scale)
    written = main(["report", str(tmp_path / ".benchmarks"), "--trend", "p50", "--out", str(tmp_path / "out")])
    assert written == 0
    trend = tmp_path / "out" / "trend-m.png"
    with Image.open(trend) as im:
        im.verify()


def test_cli_report_of_nothing_valid_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.json").write_text('{"not": "a benchmark"}')
    assert main(["report", str(tmp_path / "x.json"), "--out", str(tmp_path / "out")]) == 2
    assert "x.json: not a pytest-benchmark file" in capsys.readouterr().err


def test_speedup_intervals_and_thin_percentiles_are_shown(tmp_path: Path) -> None:
    """A row's 95% interval goes into its speedup cell; a p90/p99 from fewer rounds than it
    needs is marked '~' (files without either still load: older runs)."""
    from harness.report import write_report

    run = bench_json(tmp_path / "run.json")
    data = json.loads(run.read_text())
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if info.get("engine") == "onnxruntime" and info["precision"] == "int8" and info["batch"] == 8:
            info.update(speedup_interval=[info["speedup_vs_tensorflow"] * 0.9, info["speedup_vs_tensorflow"] * 1.1],
                        low_confidence=["p99"], rounds=120)
            marked = info
    run.write_text(json.dumps(data))
    written = write_report(tmp_path / "out", [run])
    rows = {(r[0], r[1], r[2]): r for r in table(written.markdown.read_text(), "m")}
    # a benchmark run alone knows no golden results: no golden and accuracy columns of dashes
    _, _, _, p50, p90, p99, _, speedup = rows[("onnxruntime", "int8", "8")]
    assert "| golden |" not in written.markdown.read_text()
    assert "~ before a latency: that percentile comes from fewer calls than it needs" in written.markdown.read_text()
    low, high = marked["speedup_interval"]
    assert speedup == f"{marked['speedup_vs_tensorflow']:.2f}x [{low:.2f}, {high:.2f}]"
    assert p99 == f"~{marked['p99_ms']:.2f}" and not p90.startswith("~") and not p50.startswith("~")
    assert "[" not in rows[("onnxruntime", "int8", "1")][7]  # no interval recorded: none shown


def test_shards_from_two_machines_merge_into_one_report(tmp_path: Path) -> None:
    """Two CI jobs, one model each, on two kinds of machine: each model's table comes from the
    run that measured it (not the newest run overall), with that run's machine class."""
    a = bench_json(tmp_path / "a.json", model="alpha", cpu="CPU A", when="2026-11-27T01:00:00")
    b = bench_json(tmp_path / "b.json", model="beta", cpu="CPU B", when="2026-11-27T02:00:00", scale=2.0)
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "out")]) == 0
    markdown = (tmp_path / "out" / "report.md").read_text()
    alpha = markdown.split("## alpha\n", 1)[1].split("\n## ", 1)[0]
    beta = markdown.split("## beta\n", 1)[1].split("\n## ", 1)[0]
    assert "machine class CPU A, 2 cores; no GPU" in alpha and "CPU B" not in alpha
    assert "machine class CPU B, 2 cores; no GPU" in beta
    assert len(table(markdown, "alpha")) == 6 and len(table(markdown, "beta")) == 6  # 3 engines x 2 batches each
    # beta's TensorFlow at batch 1 is its own run's (scale 2: 20 ms), alpha's its own (10 ms)
    assert table(markdown, "alpha")[0][3] == "10.00" and table(markdown, "beta")[0][3] == "20.00"


def test_each_engine_has_one_colour_in_every_plot() -> None:
    """OpenVINO int8 was pink in one plot and grey in the next: colours came from each plot's own
    list of engines.  Now from the engine's place among all the harness knows."""
    from harness.backends.names import ENGINE_BACKENDS
    from harness.precision import ALL_PRECISIONS
    from harness.report import engine_colour

    engines = ["tensorflow-fp32"] + [f"{b}-{p}" for b in ENGINE_BACKENDS for p in ALL_PRECISIONS]
    colours = [engine_colour(e) for e in engines]
    assert len(set(colours)) == len(engines)  # every engine its own
    assert colours == [engine_colour(e) for e in reversed(engines)][::-1]  # whatever else a plot shows


def test_the_other_suites_tables_are_in_the_report(tmp_path: Path) -> None:
    """The zoo, serving and overhead tables a run printed at its end are sections of its report."""
    from harness.report import write_report

    path = bench_json(tmp_path / "run.json")
    data = json.loads(path.read_text())
    data["harness_sections"] = [{"title": "harness: model zoo (batch 8)", "lines": ["ssd  onnxruntime-int8  1.50x [1.4, 1.6]"]}]
    path.write_text(json.dumps(data))
    written = write_report(tmp_path / "out", [path])
    markdown = written.markdown.read_text()
    assert "## model zoo (batch 8)\n\n```\nssd  onnxruntime-int8  1.50x [1.4, 1.6]\n```" in markdown
    assert "<pre>ssd  onnxruntime-int8  1.50x [1.4, 1.6]</pre>" in written.html.read_text()
    plain = write_report(tmp_path / "plain", [bench_json(tmp_path / "plain.json")])
    assert "model zoo" not in plain.markdown.read_text()  # only when it ran
    # the end of a pytest run: the rows still in memory and the sections the suites printed
    from harness.report import write_run_report
    from harness.timing import Row

    rows = [Row(b["extra_info"]["model"], f"{b['extra_info']['engine']}-{b['extra_info']['precision']}",
                b["extra_info"]["batch"], b["extra_info"]["p50_ms"] / 1e3, extra_info=b["extra_info"])
            for b in data["benchmarks"] if "model" in b["extra_info"]]
    line = write_run_report(tmp_path / "run", rows, sections=[("harness: serving load test", ["1 client  2.1 ms"])])
    assert line.startswith("harness: report written to")
    assert "## serving load test\n\n```\n1 client  2.1 ms\n```" in (tmp_path / "run" / "report.md").read_text()
