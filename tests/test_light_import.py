"""`import harness` (and its CLI and pytest plugin) must work without TensorFlow, tf2onnx or
ONNX Runtime; a missing backend is reported with the fix, not as an ImportError."""

from __future__ import annotations

import subprocess
import sys

BLOCK = "import sys; [sys.modules.__setitem__(m, None) for m in ('tensorflow', 'tf2onnx', 'onnxruntime', 'keras')]; "


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK + code], check=False, capture_output=True, text=True, timeout=120)


def test_import_without_heavy_backends() -> None:
    result = _run(
        "import harness, harness.cli, harness.pytest_plugin, harness.workspace, harness.golden; "
        "heavy = [m for m in ('tensorflow', 'tf2onnx', 'onnxruntime') if sys.modules.get(m) is not None]; "
        "print('heavy', heavy)"
    )
    assert result.returncode == 0, result.stderr
    assert "heavy []" in result.stdout


def test_missing_tensorflow_is_a_clear_error() -> None:
    result = _run(
        "from harness.cli import main; sys.exit(main(['export', 'digits', '--artifacts', '/tmp/harness-no-tf']))"
    )
    assert result.returncode == 2
    assert "tensorflow not importable" in result.stderr and "pip install" in result.stderr
    assert "Traceback" not in result.stderr


def test_info_reports_missing_backends_with_the_fix() -> None:
    result = _run("from harness.cli import main; sys.exit(main(['info']))")
    assert result.returncode == 0, result.stderr
    assert "tensorflow" in result.stdout and "missing: tensorflow not importable" in result.stdout
    assert "onnxruntime" in result.stdout and "pip install" in result.stdout
