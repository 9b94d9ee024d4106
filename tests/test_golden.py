"""Goldens that could not tell a broken engine from a good one are reported, when written and
when checked."""

from __future__ import annotations

import numpy as np
import pytest

from harness.compare import DEFAULT_TOLERANCES
from harness.golden import golden_key, golden_warnings

RNG = np.random.default_rng(0)


def _tolerances(output: str) -> dict[str, dict[str, object]]:
    return {p: {output: t} for p, t in DEFAULT_TOLERANCES.items()}


def test_a_golden_that_depends_on_its_input_raises_nothing() -> None:
    logits = RNG.standard_normal((32, 10)).astype(np.float32) * 3
    assert golden_warnings({"logits": logits}, {"logits"}, _tolerances("logits")) == []  # type: ignore[arg-type]


def test_the_same_top1_for_every_sample_is_reported() -> None:
    logits = RNG.standard_normal((8, 10)).astype(np.float32)
    logits[:, 4] += 10
    found = golden_warnings({"logits": logits}, {"logits"})
    assert any("the same top-1 class (4) for all 8 samples" in w for w in found)
    assert golden_warnings({"logits": logits}, set()) == []  # not class scores: top-1 is not its question


def test_an_output_that_hardly_depends_on_the_input_is_reported() -> None:
    base = RNG.standard_normal(16).astype(np.float32) * 5
    flat = np.stack([base + RNG.standard_normal(16).astype(np.float32) * 1e-3 for _ in range(6)])
    found = golden_warnings({"boxes": flat}, set(), _tolerances("boxes"))  # type: ignore[arg-type]
    assert any("hardly depends on the input" in w for w in found)
    # ... and an engine that ignores its input would pass fp16's, bf16's and int8's tolerances (not fp32's):
    assert {p for p in DEFAULT_TOLERANCES if any(f"the {p} tolerance" in w for w in found)} == {"fp16", "bf16", "int8"}
    assert any("1 sample only" in w for w in golden_warnings({"boxes": flat[:1]}, set()))


def test_a_constant_engine_passing_a_loose_tolerance_is_reported() -> None:
    # Spread across samples is real (2% of the magnitude, not "hardly depends"), but a constant
    # answer stays inside fp16's atol and cosine.
    base = RNG.uniform(0.5, 1.5, 20).astype(np.float32)
    out = np.stack([base + RNG.standard_normal(20).astype(np.float32) * 0.02 for _ in range(10)])
    found = golden_warnings({"y": out}, set(), _tolerances("y"))  # type: ignore[arg-type]
    assert not any("hardly depends" in w for w in found)
    assert any("always the mean output) would pass the fp16 tolerance" in w for w in found)
    assert not any("the fp32 tolerance" in w for w in found)


def test_golden_keys_follow_the_model_path(tmp_path):  # type: ignore[no-untyped-def]
    assert golden_key("digits", "digits", builtin=True) == "digits"
    assert golden_key("a/model.keras", "model", builtin=False, cwd=tmp_path) == "a/model.keras"
    assert golden_key(str(tmp_path / "b" / "model.keras"), "model", builtin=False, cwd=tmp_path) == "b/model.keras"
    outside = golden_key("/elsewhere/model.keras", "model", builtin=False, cwd=tmp_path)
    assert outside.startswith("model-") and outside != golden_key("/other/model.keras", "model", False, cwd=tmp_path)


def test_rewriting_a_golden_keeps_goldens_nested_in_it(tmp_path):  # type: ignore[no-untyped-def]
    """A SavedModel directory `m` and a Keras file inside it, `m/x.keras`, have nested goldens."""
    from harness.golden import load_golden, write_golden

    one = {"y": np.ones((2, 3), np.float32)}
    write_golden(tmp_path, "m", one, one, None, {"model_digest": "a"})
    write_golden(tmp_path, "m/x.keras", one, one, np.array([1, 2]), {"model_digest": "b"})
    write_golden(tmp_path, "m", one, {"y": np.zeros((2, 3), np.float32)}, None, {"model_digest": "c"})
    assert load_golden(tmp_path, "m/x.keras", "x", "b", "cmd").labels is not None  # still there, untouched
    assert load_golden(tmp_path, "m", "m", "c", "cmd").outputs["y"].sum() == 0
    write_golden(tmp_path, "m/x.keras", one, one, None, {"model_digest": "d"})  # labels gone: not left behind
    assert load_golden(tmp_path, "m/x.keras", "x", "d", "cmd").labels is None


def test_a_golden_check_warns_through_python_warnings() -> None:
    import pytest

    from harness.golden import Golden, GoldenWarning

    class Constant:  # the smallest runner: returns the golden's own outputs
        backend, precision = "fake", "fp16"

        def infer_batched(self, feed):  # type: ignore[no-untyped-def]
            return {"y": out}

    base = RNG.uniform(0.5, 1.5, 20).astype(np.float32)
    out = np.stack([base + RNG.standard_normal(20).astype(np.float32) * 0.02 for _ in range(10)])
    golden = Golden("m", None, {"x": out}, {"y": out}, None, {"inputs": "ten samples"})
    with pytest.warns(GoldenWarning, match=r"m \(no golden\): output 'y': an engine ignoring its input"):
        comparison = golden.check(Constant(), DEFAULT_TOLERANCES["fp16"])  # type: ignore[arg-type]
    assert comparison.passed and comparison.warnings
    assert comparison.reference == "TensorFlow run now on ten samples (no golden)"


def test_tensorflow_noise_pattern() -> None:
    from harness.tfimport import NOISE

    noise = ["WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
             "I0000 00:00:1795757955.333266    4365 port.cc:153] oneDNN custom operations are on.",
             "E0000 00:00:1795757958.496999    4365 cuda_platform.cc:52] failed call to cuInit: INTERNAL"]
    kept = ["[harness] freezing digits (builtin): 10 s so far", "Fatal Python error: Aborted",
            "ImportError: libcudart.so.12: cannot open shared object file"]
    assert all(NOISE.match(line) for line in noise) and not any(NOISE.match(line) for line in kept)


def test_a_golden_larger_than_the_runners_max_batch_is_checked_in_chunks() -> None:
    """360 golden digits through a TensorRT plan built for at most 32: the runner refuses a
    batch over its profile, so the golden check feeds it chunks and joins the outputs in order."""
    from harness.backends.base import Runner
    from harness.golden import Golden
    from harness.spec import ModelSpec, TensorSpec

    spec = ModelSpec("m", (TensorSpec("x", "float32", (None, 3)),), (TensorSpec("y", "float32", (None, 3)),))

    class Doubler(Runner):
        backend, max_batch = "fake", 4

        def __init__(self) -> None:
            super().__init__(spec)
            self.batches: list[int] = []

        def infer_checked(self, feed):  # type: ignore[no-untyped-def]
            assert len(feed["x"]) <= 4, "over the plan's max batch"
            self.batches.append(len(feed["x"]))
            return {"y": feed["x"] * 2}

        def _activate(self) -> None: ...

        def _deactivate(self) -> None: ...

    x = RNG.standard_normal((10, 3)).astype(np.float32)
    golden = Golden("m", None, {"x": x}, {"y": x * 2}, None, {"inputs": "ten"})
    with Doubler() as runner:
        comparison = golden.check(runner, DEFAULT_TOLERANCES["fp32"])
    assert runner.batches == [4, 4, 2] and comparison.passed and comparison.results[0].stats.samples == 10


class _KeepPositive:
    """A runner whose output `rows` holds each sample's positive values as rows of its own (a
    per-image NMS in miniature: the number of rows depends on the data), plus an ordinary `y`."""

    @staticmethod
    def make(batch_one: bool = False, max_batch: int | None = None, declared: bool = False):  # type: ignore[no-untyped-def]
        from harness.backends.base import Runner
        from harness.spec import ModelSpec, TensorSpec

        spec = ModelSpec("m", (TensorSpec("x", "float32", (1 if batch_one else None, 5)),),
                         (TensorSpec("rows", "float32", (None, 1)), TensorSpec("y", "float32", (None, 5))))

        class KeepPositive(Runner):
            backend = "fake"

            def __init__(self) -> None:
                super().__init__(spec)
                self.calls: list[int] = []
                self.max_batch = max_batch

            @property
            def data_dependent(self) -> tuple[str, ...]:  # as a TensorRT plan lists its NMS output
                return ("rows",) if declared else ()

            def infer_checked(self, feed):  # type: ignore[no-untyped-def]
                x = feed["x"]
                self.calls.append(len(x))
                return {"rows": x[x > 0].reshape(-1, 1), "y": x * 2}

            def _activate(self) -> None: ...

            def _deactivate(self) -> None: ...

        return KeepPositive()


@pytest.mark.parametrize("batch_one", [False, True])
def test_an_output_whose_size_depends_on_the_data_is_kept_per_sample(batch_one: bool) -> None:
    """One call over 6 samples gives 13 rows that belong to no sample in particular: the feed is
    run again one sample at a time (a model that takes one sample is run so from the start), and
    each sample's rows come back padded with its own shape, `sample_output` cutting them out."""
    from harness.backends.base import SHAPE, per_sample_shapes, sample_output

    x = RNG.standard_normal((6, 5)).astype(np.float32)
    x[0] = np.abs(x[0]) + 0.1  # 5 rows
    x[1] = -np.abs(x[1]) - 0.1  # none
    with _KeepPositive.make(batch_one) as runner:
        out = runner.infer_batched({"x": x})
        assert runner.calls == ([1] * 6 if batch_one else [6] + [1] * 6)
        assert out["rows" + SHAPE].tolist() == [[int(np.sum(s > 0)), 1] for s in x]
        assert out["rows"].shape == (6, 5, 1)
        for i in range(6):
            np.testing.assert_array_equal(sample_output(out, "rows", i), x[i][x[i] > 0].reshape(-1, 1))
            np.testing.assert_array_equal(sample_output(out, "y", i), x[i : i + 1] * 2)  # the row, batch axis kept
        assert "y" + SHAPE not in out and per_sample_shapes(out, "y") == [(1, 5)] * 6
        if not batch_one:  # the serving worker's call: rows as they came, one call
            flat = runner.infer_batched({"x": x}, ragged=False)
            np.testing.assert_array_equal(flat["rows"], x[x > 0].reshape(-1, 1))


def test_a_data_dependent_output_is_compared_sample_by_sample() -> None:
    """The same rows pass; an engine that drops one sample's last row fails, naming the sample and
    both shapes, instead of comparing misaligned arrays; values off by more than the tolerance fail
    as values."""
    from harness.backends.base import SHAPE
    from harness.compare import compare

    x = RNG.standard_normal((6, 5)).astype(np.float32)
    x[0] = np.abs(x[0]) + 0.1
    with _KeepPositive.make() as runner:
        reference = runner.infer_batched({"x": x})
    tol = DEFAULT_TOLERANCES["fp32"]
    assert compare(reference, reference, tol).passed
    dropped = dict(reference)
    dropped["rows" + SHAPE] = reference["rows" + SHAPE].copy()
    dropped["rows" + SHAPE][0, 0] -= 1  # sample 0: 4 rows instead of 5
    failed = {r.output: r for r in compare(dropped, reference, tol).results}
    assert set(failed) == {"rows", "y"} and failed["y"].passed and not failed["rows"].passed
    assert "1 of 6 samples have another shape than the reference's" in failed["rows"].failures[0]
    assert "sample 0: (4, 1) vs (5, 1)" in failed["rows"].failures[0]
    off = dict(reference)
    off["rows"] = reference["rows"] + 0.01
    (rows,) = [r for r in compare(off, reference, tol).results if r.output == "rows"]
    assert not rows.passed and "error" in rows.failures[0] and "shape" not in rows.failures[0]


def test_data_dependent_rows_are_per_sample_however_the_feed_is_run() -> None:
    """One sample (its whole output its own, no second call), a plan that declares the output
    (one sample at a time even where the rows happen to number the samples), chunks over the
    plan's batch (run again one at a time), and a feed that is not batch-first (named)."""
    from harness.backends.base import SHAPE, sample_output
    from harness.errors import InputError

    x = RNG.standard_normal((6, 5)).astype(np.float32)
    x[:3] = -np.abs(x[:3])
    x[0, :2], x[2, 0] = 1.0, 2.0  # 2, 0 and 1 positives: 3 rows over 3 samples, by chance one each
    with _KeepPositive.make() as runner:
        one = runner.infer_batched({"x": x[:1]})
        assert runner.calls == [1] and one["rows" + SHAPE].tolist() == [[2, 1]]
        np.testing.assert_array_equal(sample_output(one, "rows", 0), [[1.0], [1.0]])
    with _KeepPositive.make(max_batch=8, declared=True) as runner:
        out = runner.infer_batched({"x": x[:3]})
        assert runner.calls == [1, 1, 1] and out["rows" + SHAPE][:, 0].tolist() == [2, 0, 1]
    with _KeepPositive.make(max_batch=4) as runner:
        out = runner.infer_batched({"x": x})
        assert runner.calls == [4, 2] + [1] * 6
        for i in range(6):
            np.testing.assert_array_equal(sample_output(out, "rows", i), x[i][x[i] > 0].reshape(-1, 1))
        with pytest.raises(InputError, match=r"input 'x': shape \(\) given"):
            runner.infer_batched({"x": np.float32(3.0)})


def test_an_engine_whose_samples_came_out_alike_is_compared_with_a_ragged_reference() -> None:
    """The reference's boxes vary in number (so it has `boxes:shape`); an engine that found 2 in
    every image joins them plainly (no `boxes:shape`): compared, not refused as a missing output,
    and judged as detections per image (the same boxes in another order pass)."""
    from harness.backends.base import join_samples
    from harness.compare import compare
    from harness.detections import DetectionOutputs, DetectionTolerance

    boxes = [np.array([[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 0.9]], np.float32), np.array([[0.2, 0.2, 0.6, 0.6]], np.float32)]
    reference = join_samples([{"boxes": b[None]} for b in boxes], [1, 1])
    assert "boxes:shape" in reference
    two = [boxes[0][::-1], np.concatenate([boxes[1], [[0.0, 0.0, 0.05, 0.05]]]).astype(np.float32)]
    actual = join_samples([{"boxes": b[None]} for b in two], [1, 1])
    assert "boxes:shape" not in actual and actual["boxes"].shape == (2, 2, 4)
    (plain,) = compare(actual, reference, DEFAULT_TOLERANCES["fp32"]).results
    assert not plain.passed and "sample 1: (1, 2, 4) vs (1, 1, 4)" in plain.failures[0]
    (judged,) = compare(actual, reference, DEFAULT_TOLERANCES["fp32"],
                        detections=[(DetectionOutputs("boxes"), DetectionTolerance(min_matched=1.0, min_ap=0.5))]).results
    assert judged.detection is not None and judged.detection.matched == 1.0 and judged.detection.engine_count == 4


def test_padding_does_not_water_down_a_mean_tolerance() -> None:
    """One sample of 100 rows and 99 of one row, every real value off by 0.5: the mean error is
    0.5, not the 0.005 it would be if the zero padding counted as agreement."""
    from harness.backends.base import join_samples
    from harness.compare import Tolerance, compare

    samples = [RNG.standard_normal((100 if i == 0 else 1, 1)).astype(np.float32) for i in range(100)]
    reference = join_samples([{"rows": r} for r in samples], [1] * 100)
    actual = join_samples([{"rows": r + np.float32(0.5)} for r in samples], [1] * 100)
    (result,) = compare(actual, reference, Tolerance(atol=0.1, statistic="mean")).results
    assert not result.passed and abs(result.smallest_passing_atol - 0.5) < 1e-5, str(result)
