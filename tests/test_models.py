"""Several models in one run: `--harness-model a,b`, models described in pyproject.toml,
`--harness-shard K/N`, and the same run spread over processes with pytest-xdist."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import UsageError
from harness.models import model_entries, parse_shard

pytest_plugins = ["pytester"]

NO_CLI = {"input": [], "output": [], "signature": None}.__getitem__


def test_names_tables_and_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.harness.model.mine]\npath = "models/m.pb"\ninputs = ["x:?x5"]\noutputs = ["y"]\n'
        'calibration = "cal.npz"\n[tool.harness.model.mine.tolerance.fp16]\natol = 0.2\n')
    entries = model_entries("digits,mine", NO_CLI, tmp_path / "pyproject.toml")
    assert [e.name for e in entries] == ["digits", "mine"]
    mine = entries[1]
    assert mine.request.model == str(tmp_path / "models" / "m.pb")
    assert [str(i) for i in mine.request.inputs] == ["x:?x5"] and mine.request.outputs == ("y",)
    assert mine.calibration == tmp_path / "cal.npz"
    with pytest.raises(UsageError, match="describe one model"):
        model_entries("digits,mine", {"input": ["x"], "output": [], "signature": None}.__getitem__,
                      tmp_path / "pyproject.toml")
    with pytest.raises(UsageError, match="named twice"):
        model_entries("digits,digits", NO_CLI, tmp_path / "pyproject.toml")


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_bad_shards_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="K/N"):
        parse_shard(text)


@given(st.lists(st.text("abcdefgh", min_size=1, max_size=6), min_size=1, max_size=12, unique=True),
       st.integers(1, 5), st.randoms())
def test_shards_split_the_models_exactly_once_whatever_their_order(names: list[str], n: int, rng: Any) -> None:
    shuffled = list(names)
    rng.shuffle(shuffled)
    shares = [[e.name for e in model_entries(",".join(shuffled), NO_CLI, Path("/nonexistent/pyproject.toml"),
                                             (k, n))] for k in range(1, n + 1)]
    assert sorted(name for share in shares for name in share) == sorted(names)
    again = [[e.name for e in model_entries(",".join(names), NO_CLI, Path("/nonexistent/pyproject.toml"), (k, n))]
             for k in range(1, n + 1)]
    assert [sorted(s) for s in shares] == [sorted(s) for s in again]  # the same share on every job
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


GOLDEN_TEST = """
def test_golden(engine, golden, harness_tolerances, model_spec):
    assert golden.check(engine.runner, harness_tolerances).passed
"""


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("tensorflow", reason="tensorflow not importable")
    from harness.sources import ModelRequest
    from harness.workspace import Workspace
    from tests.models import write_keras

    root = tmp_path_factory.mktemp("two_models")
    paths = [write_keras(root, seed=1, name="alpha.keras"), write_keras(root, seed=2, name="beta.keras")]
    workspace = Workspace(root / "artifacts", root / "golden", quiet=True)
    for path in paths:
        workspace.write_golden(ModelRequest.of(str(path)))
    return {"root": root, "paths": paths}


def _run(pytester: pytest.Pytester, models: dict[str, Any], *extra: str, artifacts: Path | None = None) -> Any:
    pytester.makepyfile(test_user=GOLDEN_TEST)
    root = models["root"]
    return pytester.runpytest_subprocess(
        "--harness-model", ",".join(str(p) for p in models["paths"]), "--harness-backends", "onnxruntime",
        "--harness-precisions", "fp32,fp16", "--harness-artifacts", str(artifacts or root / "artifacts"),
        "--harness-golden-dir", str(root / "golden"), "-p", "no:cacheprovider", "-v", *extra)


def test_two_models_in_one_run_each_named_in_the_test_ids(pytester: pytest.Pytester, two_models: dict[str, Any]) -> None:
    result = _run(pytester, two_models)
    result.assert_outcomes(passed=4)
    for path in two_models["paths"]:
        result.stdout.fnmatch_lines([f"*test_golden[[]{path.name}-onnxruntime-fp16[]]*PASSED*"])


def test_shards_take_one_model_each(pytester: pytest.Pytester, two_models: dict[str, Any]) -> None:
    import re

    seen = []
    for k in (1, 2):
        result = _run(pytester, two_models, "--harness-shard", f"{k}/2")
        result.assert_outcomes(passed=2)  # one model's two precisions
        found = re.search(rf"\(shard {k}/2: ([^),]+)\)", result.stdout.str())
        assert found, result.stdout.str()
        seen.append(Path(found[1]).name)
        result.stdout.fnmatch_lines([f"*test_golden*{Path(found[1]).name}-onnxruntime-fp32*PASSED*"])
    assert sorted(seen) == ["alpha.keras", "beta.keras"]


def test_xdist_runs_the_models_on_two_workers_and_builds_each_artifact_once(
        pytester: pytest.Pytester, two_models: dict[str, Any]) -> None:
    pytest.importorskip("xdist", reason="pytest-xdist not importable")
    artifacts = two_models["root"] / "artifacts-xdist"  # empty: the workers build everything
    result = _run(pytester, two_models, "-n", "2", artifacts=artifacts)
    result.assert_outcomes(passed=4)
    assert "gw0" in result.stdout.str() and "gw1" in result.stdout.str()
    for kind in ("frozen", "onnx", "fp16"):  # one entry per model, however many workers wanted it
        entries = sorted(p.name.rsplit("-", 1)[0] for p in (artifacts / kind).iterdir() if p.is_dir())
        assert entries == ["alpha", "beta"], (kind, entries)
        for p in (artifacts / kind).iterdir():
            if p.is_dir():
                assert json.loads((p / "meta.json").read_text())  # complete, not half-written


CRASHING = """
import os, signal, time
from pathlib import Path
from harness.artifacts import ArtifactStore

STORE = ArtifactStore(Path({root!r}))


def test_killed_while_building():
    def build(tmp):
        (tmp / "model.onnx").write_bytes(b"half")  # a half-written artifact, then the worker dies
        os.kill(os.getpid(), signal.SIGKILL)
    STORE.get_or_build("onnx", "m", "k" * 32, build)


def test_a_neighbour_finishes():
    time.sleep(0.5)
    assert STORE.get_or_build("onnx", "other", "o" * 32, lambda tmp: (tmp / "x").write_bytes(b"ok") and {{}}).meta
"""


def test_a_worker_killed_mid_build_fails_its_test_and_leaves_nothing_half_built(
        pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytest.importorskip("xdist", reason="pytest-xdist not importable")
    from harness.artifacts import ArtifactStore

    root = tmp_path / "artifacts"
    pytester.makepyfile(test_crash=CRASHING.format(root=str(root)))
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*worker*crashed while running*test_killed_while_building*"])
    built = []
    entry = ArtifactStore(root).get_or_build(
        "onnx", "m", "k" * 32, lambda tmp: built.append((tmp / "model.onnx").write_bytes(b"whole")) or {})
    assert built and not entry.reused and (entry.path / "model.onnx").read_bytes() == b"whole"
