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


def test_lazy_import_names_the_module_and_the_one_remedy() -> None:
    import pytest

    from harness.errors import BackendUnavailable
    from harness.lazy import REMEDIES, lazy_import, remedy

    with pytest.raises(BackendUnavailable, match=r"no_such_module_xyz not importable .*install it with: pip install "
                                                 r"no_such_module_xyz") as e:
        lazy_import("no_such_module_xyz", "xyz")
    assert e.value.backend == "xyz"
    assert remedy("cuda.bindings.runtime") == REMEDIES["cuda.bindings.runtime"] == "pip install cuda-bindings"
    assert remedy("onnxconverter_common.float16") == REMEDIES["onnxconverter_common"]
    assert lazy_import("json").dumps([1]) == "[1]"


def test_help_lists_every_command() -> None:
    from harness.cli import COMMANDS, build_parser

    description = build_parser().description or ""
    assert all(name in description for name in COMMANDS), description


def test_cli_and_plugin_options_come_from_one_table() -> None:
    """Every option both surfaces take has one name (the plugin's is the CLI's with --harness-),
    one parser and one help text stating its default."""
    import argparse

    from harness.options import PYTEST, add_cli_options, add_pytest_options, option_table

    class Group:
        def __init__(self) -> None:
            self.options: dict[str, dict[str, object]] = {}

        def addoption(self, name: str, **kwargs: object) -> None:
            self.options[name] = kwargs

    group = Group()
    add_pytest_options(group)
    shared = [o for o in option_table() if PYTEST in o.where and set(o.where) - {PYTEST}]
    assert {"input", "calibration", "max-batch", "trt-workspace-mib", "backends", "precisions"} <= {o.name for o in shared}
    for option in shared:
        command = next(w for w in option.where if w != PYTEST)
        parser = argparse.ArgumentParser()
        add_cli_options(parser, command)
        action = next(a for a in parser._actions if f"--{option.name}" in a.option_strings)
        plugin = group.options[f"--harness-{option.name}"]
        assert "(default: " in str(plugin["help"]) and "(default: " in str(action.help)
        assert plugin.get("type") is option.at(PYTEST).type and action.type is option.at(command).type
        if not option.per_place:  # the same concept: the same words on both surfaces
            assert plugin["help"] == action.help
    assert not any(name.startswith("--harness-workspace") for name in group.options)  # no clash with the fixture
