"""Every saved form goes freeze -> export -> golden -> compare, and bad input of each kind
gets a HarnessError that names the file or tensor, leaving no half-written artifact."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.errors import ExportError, GoldenMissing, GoldenStale, InputError, ModelSourceError, UsageError
from harness.sources import ModelRequest
from harness.workspace import Workspace

pytest.importorskip("tensorflow", reason="tensorflow not importable")
pytest.importorskip("onnxruntime", reason="onnxruntime not importable")


def _requests(m: dict[str, Any]) -> dict[str, ModelRequest]:
    return {
        "checkpoint": ModelRequest.of(str(m["checkpoint"]), ["input"], ["Logits/SpatialSqueeze"]),
        "frozen_pb": ModelRequest.of(str(m["frozen_pb"]), ["x"], ["y"]),
        "saved_model_two_heads": ModelRequest.of(str(m["saved_model"]), signature="two_heads"),
        "keras": ModelRequest.of(str(m["keras"])),
        "h5": ModelRequest.of(str(m["h5"])),
    }


@pytest.mark.parametrize("kind", ["checkpoint", "frozen_pb", "saved_model_two_heads", "keras", "h5"])
def test_export_golden_compare(kind: str, user_models: dict[str, Any], tmp_workspace: Workspace) -> None:
    request = _requests(user_models)[kind]
    model = tmp_workspace.onnx(request)
    assert all(t.shape[0] is None for t in (*model.spec.inputs, *model.spec.outputs))
    tmp_workspace.write_golden(request)
    comparison = tmp_workspace.compare(request, ["onnxruntime", "tensorflow"])
    assert comparison.passed, str(comparison)
    assert {r.output for r in comparison.results} == set(model.spec.output_names)


def test_checkpoint_fixed_batch_becomes_dynamic(user_models: dict[str, Any], tmp_workspace: Workspace) -> None:
    request = _requests(user_models)["checkpoint"]
    feed = {"input": np.random.default_rng(0).standard_normal((3, 8, 8, 3)).astype(np.float32)}
    with tmp_workspace.ort_runner(request) as ort, tmp_workspace.tf_runner(request) as tf:
        a, b = ort.infer(feed), tf.infer(feed)
    assert a["Logits/SpatialSqueeze"].shape == (3, 5)
    np.testing.assert_allclose(a["Logits/SpatialSqueeze"], b["Logits/SpatialSqueeze"], atol=1e-5)


def test_saved_model_outputs_match_the_signature_by_name(user_models: dict[str, Any], tmp_workspace: Workspace) -> None:
    import tensorflow as tf

    request = _requests(user_models)["saved_model_two_heads"]
    x = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    direct = tf.saved_model.load(str(user_models["saved_model"])).signatures["two_heads"](features=tf.constant(x))
    with tmp_workspace.ort_runner(request) as ort:
        out = ort.infer({"features": x})
    assert set(out) == {"probabilities", "embedding"}
    for name in out:
        np.testing.assert_allclose(out[name], direct[name].numpy(), atol=1e-5)


def test_default_signature_is_serving_default(user_models: dict[str, Any], tmp_workspace: Workspace) -> None:
    spec = tmp_workspace.frozen(ModelRequest.of(str(user_models["saved_model"]))).spec
    assert spec.output_names == ["scores"]


def test_second_export_reuses_the_cache(user_models: dict[str, Any], tmp_workspace: Workspace) -> None:
    request = _requests(user_models)["keras"]
    assert not tmp_workspace.onnx(request).reused
    fresh = Workspace(tmp_workspace.store.root, tmp_workspace.golden_dir, quiet=True)
    assert fresh.onnx(request).reused and fresh.frozen(request).reused


def _entries(ws: Workspace, kind: str) -> list[str]:
    """Whatever is in the cache beside the lock files: entries and leftovers alike."""
    folder = ws.store.root / kind
    return sorted(p.name for p in folder.iterdir() if p.suffix != ".lock") if folder.exists() else []


# --- bad input ------------------------------------------------------------------------------


def test_unknown_model_name(tmp_workspace: Workspace) -> None:
    with pytest.raises(ModelSourceError, match=r"inceptionv3: no such built-in model.*inception_v3"):
        tmp_workspace.frozen(ModelRequest.of("inceptionv3"))


def test_wrong_output_node_is_named_with_a_suggestion(user_models: dict[str, Any], tmp_workspace: Workspace) -> None:
    request = ModelRequest.of(str(user_models["checkpoint"]), ["input"], ["Logits/SpatialSqueez"])
    with pytest.raises(ModelSourceError, match=r"no output node 'Logits/SpatialSqueez'.*did you mean Logits/SpatialSqueeze"):
        tmp_workspace.frozen(request)
    assert _entries(tmp_workspace, "frozen") == []


def test_wrong_input_node(user_models: dict[str, Any], tmp_workspace: Workspace) -> None:
    request = ModelRequest.of(str(user_models["frozen_pb"]), ["images"], ["y"])
    with pytest.raises(ModelSourceError, match=r"no input node 'images'.*placeholders in the graph: \['x'\]"):
        tmp_workspace.frozen(request)


def test_graph_needs_node_names(user_models: dict[str, Any], tmp_workspace: Workspace) -> None:
    with pytest.raises(UsageError, match="--input NAME"):
        tmp_workspace.frozen(ModelRequest.of(str(user_models["frozen_pb"])))


def test_missing_checkpoint_shard(user_models: dict[str, Any], tmp_path: Path, tmp_workspace: Workspace) -> None:
    prefix = user_models["checkpoint"]
    for p in prefix.parent.glob(prefix.name + ".*"):
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / f"{prefix.name}.data-00000-of-00001").unlink()
    request = ModelRequest.of(str(tmp_path / prefix.name), ["input"], ["Logits/SpatialSqueeze"])
    with pytest.raises(ModelSourceError, match=r"model\.ckpt\.data-00000-of-00001: missing"):
        tmp_workspace.frozen(request)


def test_corrupt_pb(tmp_path: Path, tmp_workspace: Workspace) -> None:
    bad = tmp_path / "broken.pb"
    bad.write_bytes(b"\x0a\xff\xff\xff this is not a protobuf")
    with pytest.raises(ModelSourceError, match=r"broken\.pb: not a readable GraphDef"):
        tmp_workspace.frozen(ModelRequest.of(str(bad), ["x"], ["y"]))


def test_corrupt_keras_file(tmp_path: Path, tmp_workspace: Workspace) -> None:
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(ModelSourceError, match=r"broken\.keras: cannot load the Keras model"):
        tmp_workspace.frozen(ModelRequest.of(str(bad)))


def test_unknown_signature(user_models: dict[str, Any], tmp_workspace: Workspace) -> None:
    request = ModelRequest.of(str(user_models["saved_model"]), signature="predict")
    with pytest.raises(ModelSourceError, match=r"no signature 'predict'; it has \['serving_default', 'two_heads'\]"):
        tmp_workspace.frozen(request)


def test_unconvertible_op_fails_export_and_leaves_no_onnx(tmp_path: Path, tmp_workspace: Workspace) -> None:
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3, 3], name="m")
        tf.identity(tf.linalg.svd(x, compute_uv=False), name="singular_values")
    pb = tmp_path / "svd.pb"
    pb.write_bytes(graph.as_graph_def().SerializeToString())
    with pytest.raises(ExportError, match=r"svd: tf2onnx .* cannot convert the TensorFlow op\(s\) \['Svd'\]"):
        tmp_workspace.onnx(ModelRequest.of(str(pb), ["m"], ["singular_values"]))
    assert _entries(tmp_workspace, "onnx") == []


def test_wrong_feed_shape_and_dtype(user_models: dict[str, Any], tmp_workspace: Workspace) -> None:
    request = _requests(user_models)["keras"]
    with tmp_workspace.ort_runner(request) as runner:
        with pytest.raises(InputError, match=r"input 'pixels': shape \(1, 6, 6, 3\) given, the model takes \?x6x6x2"):
            runner.infer({"pixels": np.zeros((1, 6, 6, 3), np.float32)})
        with pytest.raises(InputError, match="input 'pixels': dtype float64 given"):
            runner.infer({"pixels": np.zeros((1, 6, 6, 2))})


def test_corrupt_onnx_file_is_refused_by_the_runner(user_models: dict[str, Any], tmp_path: Path,
                                                     tmp_workspace: Workspace) -> None:
    from harness.backends.onnxrt import OrtRunner
    from harness.errors import ArtifactError

    model = tmp_workspace.onnx(_requests(user_models)["keras"])
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(model.path.read_bytes()[: model.path.stat().st_size // 2])
    with pytest.raises(ArtifactError, match=r"bad\.onnx: ONNX Runtime cannot load it"):
        OrtRunner(bad, model.spec).activate()


def test_truncated_cached_onnx_is_rebuilt(user_models: dict[str, Any], tmp_workspace: Workspace) -> None:
    request = _requests(user_models)["keras"]
    path = tmp_workspace.onnx(request).path
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    fresh = Workspace(tmp_workspace.store.root, tmp_workspace.golden_dir, quiet=True)
    with pytest.warns(UserWarning, match="model.onnx changed since it was built"):
        rebuilt = fresh.onnx(request)
    assert not rebuilt.reused
    import onnx

    onnx.checker.check_model(str(rebuilt.path))  # a whole model again (tf2onnx output is not byte-stable)


def test_missing_and_stale_golden_name_the_command(user_models: dict[str, Any], tmp_path: Path,
                                                   tmp_workspace: Workspace) -> None:
    from tests.models import write_keras

    path = write_keras(tmp_path, seed=0, name="net.keras")
    request = ModelRequest.of(str(path))
    with pytest.raises(GoldenMissing, match=f"write it with: harness golden {path}"):
        tmp_workspace.golden(request)
    tmp_workspace.write_golden(request)
    write_keras(tmp_path, seed=1, name="net.keras")  # retrained: same file name, other weights
    fresh = Workspace(tmp_workspace.store.root, tmp_workspace.golden_dir, quiet=True)
    with pytest.raises(GoldenStale, match=f"stale golden.*regenerate it with: harness golden {path}"):
        fresh.golden(request)


def test_goldens_of_different_files_never_collide(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`a/model.keras` and `b/model.keras` get a golden each; regenerating one leaves the
    other's alone, and both stay valid."""
    from tests.models import write_keras

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = write_keras(tmp_path / "a", seed=0), write_keras(tmp_path / "b", seed=1)
    ws = Workspace(tmp_path / "artifacts", quiet=True)  # default golden root: ./golden
    ra, rb = ModelRequest.of("a/model.keras"), ModelRequest.of(str(b))  # relative and absolute paths
    path_a, _ = ws.write_golden(ra)
    path_b, _ = ws.write_golden(rb)
    assert path_a == Path("golden/a/model.keras") and path_b == Path("golden/b/model.keras")
    before = (path_a / "outputs.npz").read_bytes()
    ws.write_golden(rb)  # the suggested fix for b touches b only
    assert (path_a / "outputs.npz").read_bytes() == before
    assert ws.golden(ra).path == path_a and ws.golden(rb).path == path_b
    out_a, out_b = (next(iter(ws.golden(r).outputs.values())) for r in (ra, rb))
    assert not np.array_equal(out_a, out_b)  # two models, two goldens
    assert a.name == b.name == "model.keras"
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    c = write_keras(outside, seed=2)
    path_c, _ = ws.write_golden(ModelRequest.of(str(c)))
    assert path_c.parent == Path("golden") and path_c.name.startswith("model-")  # outside the project: name + digest


def test_user_model_without_golden_or_calibration_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """int8 builds and compares on a model that has no golden and no calibration data: it is
    calibrated on seeded synthetic inputs, said once, and every int8 record carries it."""
    from harness.compare import SYNTHETIC_NOTE
    from tests.models import write_keras

    path = write_keras(tmp_path, seed=0)
    request = ModelRequest.of(str(path))
    ws = Workspace(tmp_path / "artifacts", tmp_path / "golden", quiet=True)
    comparison = ws.compare(request, ["onnxruntime"], ["fp32", "int8"])
    assert not (tmp_path / "golden").exists()  # compare never writes a golden
    by_precision = {r.precision: r for r in comparison.results}
    assert by_precision["int8"].calibration_synthetic and not by_precision["fp32"].calibration_synthetic
    assert by_precision["int8"].record()["note"] == SYNTHETIC_NOTE and "note" not in by_precision["fp32"].record()
    assert by_precision["int8"].stats.samples == 32  # the default for users' models
    assert "seeded synthetic samples" in (by_precision["int8"].calibration or "")
    err = capsys.readouterr().err
    assert err.count("int8 agreement is not evidence of accuracy") == 1 and "no golden; comparing" in err
    ws.compare(request, ["onnxruntime"], ["int8"])
    assert "not evidence" not in capsys.readouterr().err  # once per workspace
    # Given data, it is not synthetic.
    np.save(tmp_path / "cal.npy", np.random.default_rng(5).standard_normal((16, 6, 6, 2)).astype(np.float32))
    from harness.workspace import CalibrationOptions

    given = ws.compare(request, ["onnxruntime"], ["int8"], calibration=CalibrationOptions(tmp_path / "cal.npy"))
    assert not given.results[0].calibration_synthetic and "cal.npy" in (given.results[0].calibration or "")


def test_each_signature_and_node_set_of_one_file_has_its_own_golden(user_models: dict[str, Any],
                                                                     tmp_workspace: Workspace) -> None:
    saved = str(user_models["saved_model"])
    default, heads = ModelRequest.of(saved), ModelRequest.of(saved, signature="two_heads")
    explicit = ModelRequest.of(saved, signature="serving_default")
    keys = {r: tmp_workspace.golden_location(r)[1] for r in (default, heads, explicit)}
    assert keys[default] == keys[explicit] != keys[heads] and keys[heads].endswith("@two_heads")
    tmp_workspace.write_golden(default)
    tmp_workspace.write_golden(heads)  # would overwrite the default signature's golden if they shared a key
    assert set(tmp_workspace.golden(default).outputs) == {"scores"}
    assert set(tmp_workspace.golden(heads).outputs) == {"probabilities", "embedding"}
    pb = str(user_models["frozen_pb"])
    assert (tmp_workspace.golden_location(ModelRequest.of(pb, ["x"], ["y"]))[1]
            != tmp_workspace.golden_location(ModelRequest.of(pb, ["x:1x5"], ["y"]))[1])
