"""The export's lean path (tf2onnx without its optimizers' deep copies, fresh node protos per
rewrite: InceptionV3's export went from 7.9 GB to 2.8 GB) must be the path taken: a failure
there falls back to tf2onnx's default silently but for the record, so the record is checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("tensorflow", reason="tensorflow not importable")
pytest.importorskip("tf2onnx", reason="tf2onnx not importable")


def test_the_lean_export_path_succeeds_and_leaves_tf2onnx_as_it_was(tmp_path: Path) -> None:
    from tf2onnx import graph

    from harness.export import CATCH_ERRORS, export_onnx
    from harness.sources import Frozen, ModelRequest
    from harness.workspace import Workspace

    frozen = Workspace(artifacts=tmp_path / "a", quiet=True).frozen(ModelRequest("digits"))
    before = (os.environ.get(CATCH_ERRORS), graph.Node.update_proto)
    record = export_onnx(Frozen(frozen.graph_path.read_bytes(), frozen.spec), tmp_path / "digits.onnx")
    assert "tf2onnx_retried_with_copies" not in record, record["tf2onnx_retried_with_copies"]
    assert (os.environ.get(CATCH_ERRORS), graph.Node.update_proto) == before  # env and patch restored
    import onnx

    model = onnx.load(str(tmp_path / "digits.onnx"))
    assert [i.name for i in model.graph.input] == frozen.spec.input_names and len(model.graph.node) > 5
