"""The `harness` command, run in-process: outputs, JSON records and exit codes."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.golden import BUILTIN_GOLDEN_DIR
from harness.sources import ModelRequest
from harness.tfimport import VERBOSE_ENV

ABSL_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:")

pytest.importorskip("tensorflow", reason="tensorflow not importable")
pytest.importorskip("onnxruntime", reason="onnxruntime not importable")


def test_compare_builtin_passes_and_writes_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.json"
    assert main(["compare", "digits", "--backends", "onnxruntime,tensorflow", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "onnxruntime  fp32      logits " in table and "PASS" in table
    records = json.loads(out.read_text())
    assert [(r["backend"], r["precision"], r["output"]) for r in records] == [
        ("onnxruntime", "fp32", "logits"),
        ("tensorflow", "fp32", "logits"),
    ]
    for r in records:
        assert r["passed"] is True and r["model"] == "digits"
        assert {"max_abs_error", "cosine_similarity", "top1_agreement", "p99_abs_error"} <= set(r)


def test_compare_every_precision_with_accuracy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.json"
    argv = ["compare", "digits", "--precisions", "fp32,fp16,int8", "--backends", "tensorflow,onnxruntime",
            "--calibration-samples", "200", "--json", str(out)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "onnxruntime  int8      logits PASS" in table and "accuracy" in table
    records = json.loads(out.read_text())
    assert [(r["backend"], r["precision"]) for r in records] == [
        ("tensorflow", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "fp16"), ("onnxruntime", "int8")
    ]
    golden_labels = np.load(BUILTIN_GOLDEN_DIR / "digits" / "labels.npy")
    for r in records:
        assert r["passed"] and 0.95 <= r["accuracy"] <= 1.0 and r["reference_accuracy"] >= 0.95
    # The reference accuracy is TensorFlow's own, straight from the golden outputs and labels.
    with np.load(BUILTIN_GOLDEN_DIR / "digits" / "outputs.npz") as g:
        assert records[0]["reference_accuracy"] == pytest.approx(float(np.mean(g["logits"].argmax(1) == golden_labels)))


def test_compare_with_bad_calibration_data_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "cal.npy", np.zeros((3, 8, 8, 1), np.int64))
    argv = ["compare", "digits", "--precisions", "int8", "--calibration", str(tmp_path / "cal.npy"),
            "--artifacts", str(tmp_path / "a")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cal.npy" in err and "dtype int64 given, the model takes float32" in err
    assert not (tmp_path / "a" / "calibration").exists()


def test_compare_exits_1_on_a_tolerance_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    golden_dir = tmp_path / "golden"
    shutil.copytree(BUILTIN_GOLDEN_DIR / "digits", golden_dir / "digits")
    with np.load(golden_dir / "digits" / "outputs.npz") as data:
        logits = data["logits"] * np.float32(1.01)  # a reference the engine cannot match
    np.savez_compressed(golden_dir / "digits" / "outputs.npz", logits=logits)
    out = tmp_path / "r.json"
    assert main(["compare", "digits", "--golden-dir", str(golden_dir), "--json", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "FAIL" in printed and "smallest atol that would have passed" in printed
    assert json.loads(out.read_text())[0]["passed"] is False


def test_user_model_export_golden_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.models import write_tf1_checkpoint

    prefix = write_tf1_checkpoint(tmp_path)
    common = [str(prefix), "--input", "input", "--output", "Logits/SpatialSqueeze",
              "--artifacts", str(tmp_path / "a"), "--golden-dir", str(tmp_path / "g")]
    assert main(["export", *common]) == 0
    assert "exported" in capsys.readouterr().out
    assert main(["export", *common]) == 0
    assert "reused from cache" in capsys.readouterr().out
    assert main(["golden", *common]) == 0
    from harness.workspace import Workspace

    root, key = Workspace(tmp_path / "a", tmp_path / "g", quiet=True).golden_location(
        ModelRequest.of(str(prefix), ["input"], ["Logits/SpatialSqueeze"]))
    assert root == tmp_path / "g" and "@" in key  # keyed by the file and its --input/--output nodes
    assert [p.parent for p in (tmp_path / "g").rglob("meta.json")] == [root / key]
    assert main(["compare", *common, "--backends", "onnxruntime,tensorflow"]) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "no_such_model"], "no_such_model: no such built-in model or file"),
        (["export", "digits", "--input", "x"], "--input/--output are not used for built-in model"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["compare", "digits", "--backend", "tensorrt9"], ["export", "digits", "--opset", "99"],
                                  ["compare", "digits", "--precision", "int4"],
                                  ["compare", "digits", "--calibration-method", "kl"],
                                  ["compare", "digits", "--calibration-samples", "0"]])
def test_bad_option_is_a_usage_error(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_compare_without_a_golden_uses_tensorflow_now_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "digits", "--golden-dir", "/nonexistent/golden"]) == 0
    captured = capsys.readouterr()
    assert "onnxruntime  fp32      logits PASS" in captured.out
    assert "no golden; comparing with TensorFlow run now on the 360 held-out digits" in captured.err
    assert "harness golden digits --golden-dir=/nonexistent/golden" in captured.err
    assert not Path("/nonexistent/golden").exists()  # nothing written


def test_input_shape_that_conflicts_with_the_graph_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.models import write_frozen_pb

    pb = write_frozen_pb(tmp_path)  # input x: ?x5
    common = ["--output", "y", "--artifacts", str(tmp_path / "a")]
    assert main(["export", str(pb), "--input", "x:1x7", *common]) == 2
    err = capsys.readouterr().err
    assert "--input x:?x7 conflicts with the graph" in err and "has shape ?x5" in err and "Traceback" not in err
    assert main(["export", str(pb), "--input", "x:1x5x1", *common]) == 2  # another rank
    assert "has shape ?x5" in capsys.readouterr().err
    assert main(["export", str(pb), "--input", "x:1x5", *common]) == 0  # the graph's own shape is fine


def test_builtin_golden_is_found_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "digits", "--artifacts", str(Path(__file__).resolve().parents[1] / ".harness")]) == 0
    captured = capsys.readouterr()
    assert "PASS" in captured.out and "no golden" not in captured.err


def test_tensorflow_log_lines_are_dropped_unless_verbose(tmp_path: Path) -> None:
    import subprocess
    import sys

    def run(*extra: str) -> str:
        # A fresh artifact dir each time, so TensorFlow really loads and freezes.
        argv = [sys.executable, "-m", "harness", *extra, "export", "digits", "--artifacts", str(tmp_path / str(extra))]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True,
                              env={k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", VERBOSE_ENV)})
        return done.stdout + done.stderr

    quiet = run()
    assert "model.onnx" in quiet
    for line in quiet.splitlines():  # absl's "I0000 00:00:... file.cc:123] ..." and its preamble
        assert not ABSL_LINE.match(line) and "absl::InitializeLog" not in line and "cuInit" not in line, line
    loud = run("--verbose")
    assert any(ABSL_LINE.match(line) for line in loud.splitlines()), loud[-2000:]
