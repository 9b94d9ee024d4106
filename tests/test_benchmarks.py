"""The benchmark suite (the README's main job) run on the small built-in model: the JSON it
writes has a row per engine x batch size with percentiles, throughput and the speedup
measured in the same run, and the machine information."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.machine import class_id, cpu_info, machine_class, versions
from harness.measure import ESTIMATOR

ROOT = Path(__file__).resolve().parents[1]


def _own_env() -> dict[str, str]:
    """This environment without pytest-xdist's worker variables: a benchmark run started from a
    test that itself runs in an xdist worker is not a worker."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}


def _bench(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("tensorflow", reason="tensorflow not importable")
    pytest.importorskip("onnxruntime", reason="onnxruntime not importable")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/", "--benchmark-only", "--harness-model", "digits",
         "--ignore", "benchmarks/test_zoo.py",  # its own models (--harness-suites zoo)
         "-p", "no:cacheprovider", "-q",
         *([] if any(a.startswith("--harness-report") for a in args) else ["--harness-report", "none"]),
         "--harness-max-seconds", "3",  # what these tests check is not the speedups' precision
         *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False, env=_own_env(),
    )


def test_benchmark_suite_writes_comparable_rows(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = _bench("--harness-batch-sizes", "1,4", f"--benchmark-json={out}", f"--harness-report={tmp_path / 'report'}",
                    "--harness-serve-seconds", "0.5", "--harness-serve-concurrency", "1,2",
                    "--harness-suites", "serving,overhead")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"harness: report written to {tmp_path / 'report' / 'report.html'} (3 plots)" in result.stdout
    assert "speedup over TensorFlow" in result.stdout and "runner overhead" in result.stdout
    for backend in ("onnxruntime", "openvino", "tensorflow"):  # each backend's runner against its bare call
        line = re.search(rf"^{backend}: (\d+\.\d{{4}})x \[\d+\.\d{{4}}, \d+\.\d{{4}}\] \(adds (-?\d+\.\d) us .* to "
                         rf"(\d+(?:\.\d+)?) ms\); direct \d+\.\d{{3}}x \[\d+\.\d{{3}}, \d+\.\d{{3}}\]$", result.stdout, re.MULTILINE)
        assert line, result.stdout[-3000:]
        ratio, added_us, bare_ms = (float(g) for g in line.groups())
        # The runner's own work is microseconds, never the milliseconds a copy of the input or a
        # second call would cost (a runner that called its library twice fails here).
        assert added_us < min(1000, 0.5 * bare_ms * 1e3) and ratio < 1.5
    # Engines that produced no time are listed at the end with the reason, not silently left out.
    for precision in ("fp32", "fp16", "int8"):
        assert re.search(rf"digits +1 tensorrt_rtx-{precision} +SKIPPED  \S", result.stdout), result.stdout[-3000:]
    assert "harness: serving load test" in result.stdout and "serving overhead" in result.stdout
    data = json.loads(out.read_text())
    rows = {(b["extra_info"]["backend"], b["extra_info"]["precision"], b["extra_info"]["batch"]): b["extra_info"]
            for b in data["benchmarks"] if "engine" in b["extra_info"]}
    assert all(info["engine"] == f"{e}-{p}" for (e, p, _), info in rows.items())  # engine = backend-precision
    from harness.backends.openvino import cpu_has_bf16

    engines = [("tensorflow", "fp32")] + [(b, p) for b in ("onnxruntime", "openvino") for p in ("fp32", "fp16", "int8")]
    engines += [("openvino", "bf16")] if cpu_has_bf16()[0] else []  # elsewhere: skipped, naming the CPU flags
    assert set(rows) == {(e, p, b) for e, p in engines for b in (1, 4)}
    for (_, _, batch), info in rows.items():
        assert 0 < info["p50_ms"] <= info["p90_ms"] <= info["p99_ms"]
        assert info["samples_per_s"] == pytest.approx(batch / (info["p50_ms"] / 1e3))
        assert info["speedup_vs_tensorflow"] > 0
        assert info["scenario"] == {1: "SingleStream", 4: "Offline"}[batch]
        # digits' calls are short: at least 6 rounds of turns of at least 5 calls; thinner percentiles are marked.
        assert info["rounds"] >= 30 and info["rounds_needed"] == {"p50": 20, "p90": 100, "p99": 1000}
        assert info["low_confidence"] == [q for q, n in info["rounds_needed"].items() if info["rounds"] < n]
        assert info["robin_rounds"] >= 6 and info["rounds"] == info["robin_rounds"] * info["turn_calls"]
        assert info["others_cpu_share"] is None or 0 <= info["others_cpu_share"] <= 1
    for batch in (1, 4):
        assert rows[("tensorflow", "fp32", batch)]["speedup_vs_tensorflow"] == 1.0
        for engine, precision in engines[1:]:
            row = rows[(engine, precision, batch)]  # measured against TensorFlow timed beside it
            low, high = row["speedup_interval"]
            assert low <= row["speedup_vs_tensorflow"] <= high and row["speedup_confidence"] == 0.95
            assert row["tensorflow_interleaved_p50_ms"] > row["p50_ms"] and row["interleave_block"] >= 1
            # What stopped it is what it says: the interval within the target, or the time cap.
            halfwidth = (high - low) / (2 * row["speedup_vs_tensorflow"])
            assert (row["stopped_by"], halfwidth <= row["target_halfwidth"] + 1e-12) in (
                ("interval", True), ("time cap", False)), row
    assert {b["group"] for b in data["benchmarks"] if "engine" in b["extra_info"]} == {"digits batch 1", "digits batch 4"}
    assert data["machine_info"]["harness"]["versions"]["tensorflow"]
    serving = {b["extra_info"]["batching"]: b["extra_info"] for b in data["benchmarks"] if "batching" in b["extra_info"]}
    assert set(serving) == {"off", "on"}
    for info in serving.values():
        # the sweep asked for, then the burst of 512 clients connecting at once: no error, no reset
        assert [s["concurrency"] for s in info["sweep"]] == [1, 2, 512]
        assert all(s["errors"] == 0 and s["resets"] == 0 for s in info["sweep"]), info["sweep"]
        assert info["serving_p50_ms"] > info["engine_p50_ms"] > 0
    # what serving adds, printed from the two medians timed beside each other, batching off and on
    printed = re.findall(r"engine alone p50 (\d+\.\d\d) ms, one request over HTTP \([\d.]+ [kM]B\) p50 "
                         r"(\d+\.\d\d) ms, timed beside each other \(serving overhead (-?\d+\.\d\d) ms, "
                         r"x(\d+\.\d{3})\)", result.stdout)
    assert len(printed) == 2, result.stdout[-3000:]
    for engine_ms, served_ms, _, _ in printed:  # both measured, in milliseconds, on a 1 kB request
        assert 0 < float(engine_ms) < 1000 and 0 < float(served_ms) < 1000
    # the null engine's row, and its line printing pytest-benchmark's own median of the requests
    (null,) = [b for b in data["benchmarks"] if b["extra_info"].get("served_engine") == "null"
               and "slowloris" not in b["extra_info"]]
    # one client beside 200 slowloris connections, against itself without them: both measured, printed
    (loris,) = [b["extra_info"] for b in data["benchmarks"] if "slowloris" in b["extra_info"]]
    line = re.search(r"beside 200 slowloris connections .*: one client's p50 (\d+\.\d\d) ms beside them, "
                     r"(\d+\.\d\d) ms without", result.stdout)
    assert line and float(line.group(1)) == pytest.approx(loris["serving_p50_ms"], abs=0.006)
    assert float(line.group(2)) == pytest.approx(loris["serving_p50_alone_ms"], abs=0.006) and loris["slowloris"] == 200
    line = re.search(r"digits served by a null engine \(engine taken out; batch 1, [\d.]+ kB binary request, "
                     r"client included\): p50 (\d+\.\d\d) ms", result.stdout)
    assert line and float(line.group(1)) == pytest.approx(null["stats"]["median"] * 1e3, abs=0.006)
    assert null["stats"]["rounds"] == 500
    # The report shows every engine x precision x batch measured, one table row each.
    report = (tmp_path / "report" / "report.md").read_text()
    for (engine, precision, batch) in rows:
        assert f"| {engine} | {precision} | {batch} |" in report


def test_gate_fails_on_a_baseline_the_run_cannot_meet_and_passes_on_one_it_can(tmp_path: Path) -> None:
    fast = ("--harness-batch-sizes", "1", "--harness-precisions", "fp32,int8", "-k", "not overhead and not serving")
    written = tmp_path / "measured.json"
    result = _bench(*fast, f"--harness-update-baseline={written}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    here = class_id(machine_class())
    recorded = json.loads(written.read_text())["machines"]
    assert list(recorded) == [here] and recorded[here]["machine"]["cpu"] == cpu_info()["model"]
    measured = recorded[here]["models"]["digits"]
    assert set(measured) == {f"{b}-{p}" for b in ("onnxruntime", "openvino") for p in ("fp32", "int8")}
    assert all(measured[e]["1"] > 0 for e in measured)

    def baseline(ratio: float, machine: str = here, extra: dict[str, dict[str, float]] | None = None) -> Path:
        path = tmp_path / f"baseline-{ratio}-{len(machine)}-{bool(extra)}.json"
        rows = {e: {"1": ratio} for e in measured} | (extra or {})
        path.write_text(json.dumps({"format": 2, "machines": {machine: {
            "machine": {}, "estimator": ESTIMATOR,
            "models": {"digits": rows, "inception_v3": {"onnxruntime-fp32": {"1": 1e9}}}}}}))
        return path

    unreachable = _bench(*fast, f"--harness-gate={baseline(1e6)}", "--harness-max-slowdown=0.5")
    assert unreachable.returncode == 1, unreachable.stdout[-3000:]
    assert "harness gate" in unreachable.stdout and "FAILED" in unreachable.stdout
    assert f"machine class: {here}" in unreachable.stdout
    assert "digits onnxruntime-int8 batch 1: speedup" in unreachable.stdout
    assert "vs baseline 1000000.00x (floor 500000.00x) REGRESSED" in unreachable.stdout
    assert "inception_v3" not in unreachable.stdout.split("harness gate")[1]  # other models are not judged

    reachable = _bench(*fast, f"--harness-gate={baseline(0.01)}", "--harness-max-slowdown=0.5")
    assert reachable.returncode == 0, reachable.stdout[-3000:] + reachable.stderr[-3000:]
    assert "harness gate" in reachable.stdout and "passed" in reachable.stdout

    # A baseline row this run did not measure fails the gate, naming it, unless allowed.
    with_fp16 = baseline(0.01, extra={"onnxruntime-fp16": {"1": 0.01}})
    missing = _bench(*fast, f"--harness-gate={with_fp16}")
    assert missing.returncode == 1, missing.stdout[-3000:]
    assert "digits onnxruntime-fp16 batch 1: NOT MEASURED in this run" in missing.stdout
    allowed = _bench(*fast, f"--harness-gate={with_fp16}", "--harness-gate-allow-missing")
    assert allowed.returncode == 0, allowed.stdout[-3000:]

    # Without TensorFlow's own rows the engines are still judged: their speedups come from the
    # TensorFlow rounds timed beside them.  (No reference at all fails: test_gate_arithmetic...)
    no_tf_rows = _bench("--harness-batch-sizes", "1", "--harness-precisions", "fp32",
                        "-k", "not overhead and not serving and not tensorflow", f"--harness-gate={baseline(0.01)}",
                        "--harness-gate-allow-missing")
    assert no_tf_rows.returncode == 0, no_tf_rows.stdout[-3000:]
    assert re.search(r"digits onnxruntime-fp32 batch 1: speedup [\d.]+x \[[\d.]+, [\d.]+\] vs baseline 0\.01x",
                     no_tf_rows.stdout), no_tf_rows.stdout[-3000:]

    # A baseline of another machine class only: said so, with how to record one; no verdict.
    elsewhere = _bench(*fast, f"--harness-gate={baseline(1e6, machine='AuthenticAMD Other CPU, 2 cores; no GPU')}")
    assert elsewhere.returncode == 0, elsewhere.stdout[-3000:]
    assert "NO BASELINE for this machine class" in elsewhere.stdout and "--harness-update-baseline" in elsewhere.stdout
    assert "REGRESSED" not in elsewhere.stdout


def test_gate_arithmetic_and_baseline_errors(tmp_path: Path) -> None:
    from harness.errors import UsageError
    from harness.measure import ESTIMATOR, Speedup
    from harness.timing import Row, Unmeasured, check_gate, load_baseline, speedups, update_baseline

    rows = [Row("m", "tensorflow-fp32", 1, 0.010, speedup=Speedup.exact(1.0)),
            Row("m", "onnxruntime-int8", 1, 0.004, speedup=Speedup(2.5, 2.47, 2.53)),
            Row("m", "onnxruntime-fp32", 8, 0.050, no_speedup="TensorFlow unavailable: no tensorflow")]
    measured = speedups(rows)
    assert measured == {("m", "tensorflow-fp32", 1): Speedup.exact(1.0), ("m", "onnxruntime-int8", 1): rows[1].speedup}

    def table(models: dict[str, object], estimator: str = ESTIMATOR) -> dict[str, object]:
        return {"format": 2, "machines": {"box": {"machine": {}, "estimator": estimator, "models": models}}}

    # Ratios recorded with another estimator (the 10th-percentile one of before) are not compared.
    old = check_gate(rows, table({"m": {"onnxruntime-int8": {"1": 1e6}}}, "p10 ratio"), "box", 0.15)
    assert old.results == () and not old.failed and old.other_estimator == "p10 ratio"
    assert "NOT COMPARED" in old.lines("b.json")[1][0] and "not compared" in old.verdict

    skipped = [Unmeasured("m", "onnxruntime-int8", 32, "skipped", "no such engine here")]
    report = check_gate(rows, table({"m": {"onnxruntime-int8": {"1": 2.9, "32": 2.0}}}), "box", 0.15, False, skipped)
    by_batch = {r.batch: r for r in report.results}
    assert by_batch[1].floor == pytest.approx(2.465) and by_batch[1].passed  # 2.47 >= 2.9 * 0.85
    assert by_batch[32].measured is None and "NOT MEASURED" in str(by_batch[32])
    assert "skipped: no such engine here" in str(by_batch[32])
    assert report.failed and not report.no_baseline  # the unmeasured row fails it...
    assert not check_gate(rows, table({"m": {"onnxruntime-int8": {"1": 2.9, "32": 2.0}}}), "box", 0.15, True).failed
    assert check_gate(rows, table({"m": {"onnxruntime-int8": {"1": 3.0}}}), "box", 0.15).failed  # 2.53 < 2.55
    # The floor inside the interval: too noisy to decide, said, not failed.
    noisy = check_gate(rows, table({"m": {"onnxruntime-int8": {"1": 2.95}}}), "box", 0.15)  # floor 2.5075
    assert noisy.results[0].undecided and not noisy.failed and "1 row(s) too noisy to decide" in noisy.verdict
    assert "TOO NOISY TO DECIDE" in str(noisy.results[0])
    other = check_gate(rows, table({"m": {"onnxruntime-int8": {"1": 1e9}}}), "elsewhere", 0.15)
    assert other.no_baseline and not other.failed and other.verdict == "no baseline for this machine class"
    assert any("record one" in line.lower() and not failure for line, failure in other.lines("b.json"))
    assert check_gate([], table({}), "box", 0.15).problems == ("no benchmark rows were measured in this run",)
    no_tf = check_gate([rows[2]], table({}), "box", 0.15)
    assert no_tf.failed and "m: no speedup measured" in no_tf.problems[0] and "no tensorflow" in no_tf.problems[0]

    # This machine class has a table, but not for this model: said, not judged, not "passed".
    unjudged = check_gate(rows, table({"other": {"onnxruntime-int8": {"1": 1.0}}}), "box", 0.15)
    assert unjudged.unjudged == ("m",) and not unjudged.failed and unjudged.verdict.startswith("no baseline for m")
    assert any("NO BASELINE for m on this machine class" in line for line, _ in unjudged.lines("b.json"))
    # An engine timed without the reference beside it: the row says why it has no speedup.
    at8 = check_gate(rows, table({"m": {"onnxruntime-fp32": {"8": 1.0}}}), "box", 0.15)
    assert "timed, but no speedup: TensorFlow unavailable" in str(at8.results[0])

    path = tmp_path / "b.json"
    machine = {"cpu": "Test CPU", "vendor": "V", "isa": ["avx2"], "cores": 2, "gpus": []}
    update_baseline(path, {("other", "onnxruntime-fp32", 1): Speedup.exact(1.5)}, {**machine, "cores": 4}, {})
    update_baseline(path, measured, machine, {"versions": {}})
    data = load_baseline(path)
    assert set(data["machines"]) == {"V Test CPU, 2 cores, avx2; no GPU", "V Test CPU, 4 cores, avx2; no GPU"}
    assert data["machines"]["V Test CPU, 2 cores, avx2; no GPU"]["models"]["m"] == {"onnxruntime-int8": {"1": 2.5}}
    # Recording a filtered run updates its rows and keeps the others of that model.
    update_baseline(path, {("m", "onnxruntime-fp16", 1): Speedup(1.2, 1.1, 1.3)}, machine, {})
    assert load_baseline(path)["machines"]["V Test CPU, 2 cores, avx2; no GPU"]["models"]["m"] == {
        "onnxruntime-int8": {"1": 2.5}, "onnxruntime-fp16": {"1": 1.2}}
    # A baseline of the format before machine classes is replaced, not a dead end.
    path.write_text('{"models": {"m": {"onnxruntime-int8": {"1": 9.9}}}}')
    update_baseline(path, measured, machine, {})
    assert list(load_baseline(path)["machines"]) == ["V Test CPU, 2 cores, avx2; no GPU"]

    for text, message in [("{", "not valid JSON"), ("{}", "no 'machines' table"),
                          ('{"models": {"m": {"e": {"1": 2}}}}', "without machine classes"),
                          ('{"machines": {"x": {"models": {"m": {"e": {"one": 2}}}}}}', "m/e/one")]:
        path.write_text(text)
        with pytest.raises(UsageError, match=message):
            load_baseline(path)
    with pytest.raises(UsageError, match="cannot read it"):
        load_baseline(tmp_path / "absent.json")


def test_machine_class_tells_cpus_apart(tmp_path: Path) -> None:
    intel, amd = tmp_path / "intel", tmp_path / "amd"
    intel.write_text("vendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n"
                     "flags\t\t: fpu avx2 fma avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16\n")
    amd.write_text("vendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\n"
                   "flags\t\t: fpu avx2 fma avx512f avx512_vnni avx512_bf16\n")
    ids = {class_id(machine_class({"cpu": cpu_info(f), "gpus": []})) for f in (intel, amd)}
    assert len(ids) == 2
    assert "AuthenticAMD AMD EPYC 9R14" in " ".join(ids) and "amx_int8" in " ".join(ids)
    gpu = machine_class({"cpu": cpu_info(amd), "gpus": [{"name": "NVIDIA H100", "compute_capability": "9.0"}]})
    assert "NVIDIA H100 (compute capability 9.0)" in class_id(gpu)


def test_settings_that_change_the_kernels_are_part_of_the_machine_class(monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorFlow with oneDNN off runs other kernels, at another speed, on the same CPU: its
    speedups must not be judged against a table recorded with it on."""
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    plain = class_id(machine_class())
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert class_id(machine_class()) == f"{plain}; TF_ENABLE_ONEDNN_OPTS=0"
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")  # the default spelled out is the same class
    assert class_id(machine_class()) == plain


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    fake = tmp_path / "cpuinfo"
    fake.write_text("model name\t: Test CPU 9000\nflags\t\t: fpu sse avx2 fma avx512f avx512_vnni\n")
    info = cpu_info(fake)
    assert info["model"] == "Test CPU 9000"
    assert info["speed_flags"] == ["avx2", "fma", "avx512f", "avx512_vnni"]


def test_versions_are_the_installed_ones() -> None:
    import numpy

    assert versions()["numpy"] == numpy.__version__


def test_an_engine_row_gets_its_speedup_without_the_tensorflow_row(tmp_path: Path) -> None:
    """The speedup comes from TensorFlow timed beside the engine, so it does not depend on the
    TensorFlow row running (or running first)."""
    pytest.importorskip("tensorflow", reason="tensorflow not importable")
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/test_inference.py::test_engine", "--benchmark-only",
         "--harness-model", "digits", "--harness-batch-sizes", "1", "--harness-backends", "onnxruntime",
         "--harness-precisions", "fp32", "--harness-max-seconds", "3", "--harness-report", "none",
         f"--benchmark-json={out}", "-p", "no:cacheprovider", "-v"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False, env=_own_env(),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "test_tensorflow[" not in done.stdout
    [row] = [b["extra_info"] for b in json.loads(out.read_text())["benchmarks"]]
    low, high = row["speedup_interval"]
    assert row["speedup_vs_tensorflow"] > 1 and low <= row["speedup_vs_tensorflow"] <= high
    assert re.search(rf"digits +1 onnxruntime-fp32 .* {row['speedup_vs_tensorflow']:.2f}x \[{low:.2f}, {high:.2f}\]",
                     done.stdout), done.stdout[-3000:]


def test_benchmark_suite_runs_a_model_without_golden_or_calibration_data(tmp_path: Path) -> None:
    """int8 rows used to error with GoldenMissing on a user's model: calibration read the golden."""
    pytest.importorskip("tensorflow", reason="tensorflow not importable")
    from tests.models import write_keras

    model = write_keras(tmp_path)
    done = _bench("--harness-model", str(model), "--harness-batch-sizes", "1", "--harness-backends", "onnxruntime",
                  "--harness-precisions", "int8", "-k", "not overhead and not serving",
                  "--harness-artifacts", str(tmp_path / "a"), "--harness-golden-dir", str(tmp_path / "none"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"model +1 onnxruntime-int8 .* \d+\.\d\dx \[", done.stdout), done.stdout[-3000:]
    assert "int8 agreement is not evidence of accuracy" in done.stdout + done.stderr


def test_unmeasured_rows_are_filed_under_the_model_the_rows_carry(tmp_path: Path) -> None:
    """A checkpoint's rows carry its prefix's name ("model.ckpt"), not the stem; resolving it
    needs --harness-input/--harness-output, which the plugin must pass on."""
    from harness.pytest_plugin import _model_name
    from harness.spec import InputArg

    for suffix in (".meta", ".index", ".data-00000-of-00001"):
        (tmp_path / f"model.ckpt{suffix}").write_bytes(b"")
    options = {"harness_model": str(tmp_path / "model.ckpt"), "harness_input": [InputArg("input")],
               "harness_output": ["logits"], "harness_signature": None, "harness_shard": None}

    class Config:
        rootpath = tmp_path

        def __init__(self) -> None:
            self.stash: dict[object, object] = {}

        def getoption(self, name: str) -> object:
            return options[name]

    assert _model_name(Config()) == "model.ckpt"  # type: ignore[arg-type]


def test_the_benchmark_suite_under_xdist_times_one_benchmark_at_a_time(tmp_path: Path) -> None:
    """`-n 2`: both workers take benchmarks, but no two timed calls overlap (one CPU), and the
    controller's table and --benchmark-json hold every worker's rows."""
    pytest.importorskip("xdist", reason="pytest-xdist not importable")
    out = tmp_path / "bench.json"
    result = _bench("--harness-backends", "onnxruntime", "--harness-batch-sizes", "1", "-k",
                    "not serving and not overhead", "-n", "2", "--benchmark-json", str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads(out.read_text())["benchmarks"]
    engines = {b["extra_info"]["engine"] for b in rows}
    assert engines == {"tensorflow-fp32", "onnxruntime-fp32", "onnxruntime-fp16", "onnxruntime-int8"}
    assert {b["extra_info"]["xdist_worker"] for b in rows} == {"gw0", "gw1"}
    spans = sorted(b["extra_info"]["timed_between"] for b in rows)
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans)), spans
    for engine in engines - {"tensorflow-fp32"}:  # the controller's table, from the workers' rows
        assert re.search(rf"digits +1 {engine} +[\d.]+ +[\d.]+ +\d+ +[\d.]+x \[", result.stdout), result.stdout[-3000:]


def test_an_empty_shard_skips_the_benchmarks_with_why() -> None:
    """More CI jobs than models: a shard with no model skips, naming the shard (it once ended in
    an INTERNALERROR while filing the skipped rows)."""
    result = _bench("--harness-shard", "2/2", "--harness-backends", "onnxruntime", "--harness-batch-sizes", "1",
                    "-k", "not serving and not overhead", "-rs")
    assert result.returncode in (0, 5), result.stdout[-3000:] + result.stderr[-3000:]  # 5: nothing ran
    assert "INTERNALERROR" not in result.stdout + result.stderr
    assert "no model of digits falls in this shard" in result.stdout, result.stdout[-3000:]


def test_the_count_gate_flags_a_rise_over_its_margin_and_never_passes_on_nothing(tmp_path: Path) -> None:
    from harness.timing import Row, check_counts, load_baseline, update_baseline

    this = {"arch": "x86_64", "valgrind": "valgrind-3.19.0", "python": "3.11.7", "versions": {"onnxruntime": "1.32.0"},
            "method": "median of single calls"}
    rows = [Row("m", "onnxruntime-fp32", 1, 0.001, instructions=1_020_000.0),
            Row("m", "onnxruntime-int8", 1, 0.001, instructions=1_009_000.0),
            Row("m", "openvino-fp32", 1, 0.001, no_instructions="valgrind not found")]
    path = tmp_path / "b.json"
    update_baseline(path, {}, {"cpu": "c", "vendor": "v", "isa": [], "cores": 2, "gpus": []}, {},
                    [Row("m", e, 1, 0.001, instructions=1_000_000.0) for e in ("onnxruntime-fp32", "onnxruntime-int8")],
                    this)
    baseline = load_baseline(path)
    assert baseline["instructions"]["models"]["m"] == {"onnxruntime-fp32": {"1": 1000000},
                                                       "onnxruntime-int8": {"1": 1000000}}
    report = check_counts(rows, baseline, this, 0.01)
    verdicts = {r.engine: r for r in report.results}
    assert verdicts["onnxruntime-fp32"].regressed and "+2.00%" in str(verdicts["onnxruntime-fp32"])  # a 2% rise
    assert not verdicts["onnxruntime-int8"].regressed  # 0.9%: inside the 1% margin
    assert report.failed
    # Counted with another library version: said, beside the verdict.
    moved = check_counts(rows, baseline, {**this, "versions": {"onnxruntime": "1.33.0"}}, 0.01)
    assert "onnxruntime 1.32.0 -> 1.33.0" in moved.lines()[0][0]
    # Counted by another method (a sum over calls, say): not compared, and not a pass.
    other = check_counts(rows, baseline, {**this, "method": "sum of 5 calls"}, 0.01)
    assert other.failed and not other.results and "NOT COMPARED" in other.problems[0]
    # A baseline row not counted, or a run that counted nothing, fails unless allowed.
    baseline["instructions"]["models"]["m"]["openvino-fp32"] = {"1": 5}
    missing = check_counts(rows[1:], baseline, this, 0.01)
    assert missing.failed and "NOT COUNTED" in str(missing.results[-1]) and "valgrind not found" in str(missing.results[-1])
    assert not check_counts(rows[1:2], {"instructions": {"class": this, "models": {"m": {"onnxruntime-int8": {"1": 1e6}}}}}, this,
                            0.01, allow_missing=True).failed
    nothing = check_counts(rows[2:], baseline, this, 0.01)
    assert nothing.failed and "no row was counted in this run (valgrind not found)" in nothing.problems
    # Recorded again by another method for some rows only: the old rows are dropped, not relabelled.
    update_baseline(path, {}, {"cpu": "c", "vendor": "v", "isa": [], "cores": 2, "gpus": []}, {},
                    [Row("m", "onnxruntime-fp32", 1, 0.001, instructions=990_000.0)], {**this, "method": "new"})
    assert load_baseline(path)["instructions"]["models"] == {"m": {"onnxruntime-fp32": {"1": 990000}}}


def test_the_main_job_ends_with_its_table_the_suites_not_run_and_the_report(tmp_path: Path) -> None:
    report = tmp_path / "report"
    result = _bench("--harness-batch-sizes", "1", "--harness-backends", "onnxruntime", "--harness-precisions", "fp32",
                    f"--harness-report={report}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert "passed" in lines[-1]  # pytest's own count, then ours just above it
    assert lines[-2].startswith(f"harness: report written to {report / 'report.html'}")
    assert lines[-2].endswith(f"pytest-benchmark JSON: {report / 'benchmark.json'}")
    assert json.loads((report / "benchmark.json").read_text())["benchmarks"]  # written without --benchmark-json
    assert lines[-3] == ("harness: not run: the overhead, serving benchmark suite(s); run them with: pytest benchmarks/ "
                         "--benchmark-only --harness-suites overhead,serving")
    # ours after pytest-benchmark's tables (its legend) and pytest's short summary (the skipped TensorRT rows)
    table = next(i for i, line in enumerate(lines) if "speedup over TensorFlow (same run)" in line)
    assert table > max(i for i, line in enumerate(lines) if line.startswith(("Legend:", "SKIPPED")))
    assert re.search(r"^digits +1 onnxruntime-fp32 +[\d.]+ +[\d.]+ +\d+  [\d.]+x \[", result.stdout, re.MULTILINE)
    # progress of the round-robin, on stderr
    assert re.search(r"\[harness\] digits batch 1: round \d+, \d+ s: done \(1 engine\(s\)\)", result.stderr), \
        result.stderr[-2000:]


def test_a_run_whose_benchmark_rows_were_all_skipped_says_so_last(tmp_path: Path) -> None:
    result = _bench("--harness-batch-sizes", "1", "--harness-backends", "tensorrt", "-k", "test_engine",
                    f"--harness-report={tmp_path / 'report'}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines[-2].startswith("harness: NO BENCHMARK ROW WAS MEASURED: 3 row(s) produced no time (3 skipped"), lines[-6:]


def test_every_extra_info_key_the_suite_writes_is_documented() -> None:
    """docs/reference.md's table of extra_info keys comes from harness.suite.EXTRA_INFO: a key the
    suite writes that the table lacks fails here (read from the source, so no run is needed)."""
    import ast

    from harness.suite import EXTRA_INFO

    written: set[str] = set()
    for path in (ROOT / "benchmarks" / "test_inference.py", ROOT / "harness" / "parallel.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("extra_info.update"):
                written |= {k.arg for k in node.keywords if k.arg}
            if isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("extra_info") \
                    and isinstance(node.slice, ast.Constant):
                written.add(str(node.slice.value))
    assert len(written) > 30 and written <= set(EXTRA_INFO), sorted(written - set(EXTRA_INFO))


def test_the_reference_page_is_current() -> None:
    done = subprocess.run([sys.executable, "scripts/reference_page.py", "--check"], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
