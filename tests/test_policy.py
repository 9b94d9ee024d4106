"""Tolerance policy: defaults per precision, layered overrides, clear errors for bad tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.compare import DEFAULT_TOLERANCES
from harness.errors import UsageError
from harness.policy import TolerancePolicy


def test_defaults_are_per_precision_and_int8_is_judged_by_cosine_and_top1() -> None:
    policy = TolerancePolicy()
    assert policy.tolerance("fp32", "m", "o") == DEFAULT_TOLERANCES["fp32"]
    fp16, int8 = policy.tolerance("fp16"), policy.tolerance("int8")
    assert fp16.atol > DEFAULT_TOLERANCES["fp32"].atol
    assert int8.atol == float("inf") and int8.min_cosine is not None and int8.min_top1 is not None


def test_the_most_specific_layer_wins_field_by_field(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[tool.harness.tolerance.fp16]\natol = 0.3\nmin_cosine = 0.99\n"
        "[tool.harness.model.m.tolerance.fp16]\natol = 0.2\n"
        "[tool.harness.model.m.output.o.tolerance.fp16]\nstatistic = 'p99'\n"
    )
    policy = TolerancePolicy.from_pyproject(tmp_path / "pyproject.toml")
    assert policy.tolerance("fp16", "other", "o").atol == 0.3
    assert policy.tolerance("fp16", "m", "x").atol == 0.2
    o = policy.tolerance("fp16", "m", "o")
    assert (o.atol, o.min_cosine, o.statistic, o.rtol) == (0.2, 0.99, "p99", DEFAULT_TOLERANCES["fp16"].rtol)
    assert policy.tolerance("int8", "m", "o") == DEFAULT_TOLERANCES["int8"]  # other precisions untouched


def test_override_in_code_layers_on_a_copy() -> None:
    base = TolerancePolicy()
    tighter = base.override("int8", model="m", min_top1=0.99).override("int8", model="m", output="o", min_cosine=0.999)
    assert tighter.tolerance("int8", "m", "o").min_top1 == 0.99
    assert tighter.tolerance("int8", "m", "o").min_cosine == 0.999
    assert tighter.tolerance("int8", "m", "p").min_cosine == DEFAULT_TOLERANCES["int8"].min_cosine
    assert base.tolerance("int8", "m", "o") == DEFAULT_TOLERANCES["int8"]
    with pytest.raises(UsageError, match="needs the model"):
        base.override("int8", output="o", min_top1=0.5)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[tool.harness.tolerance.int4]\natol = 1\n", "unknown precision 'int4'"),
        ("[tool.harness.tolerance.fp16]\natoll = 1\n", r"tolerance.fp16: unknown field\(s\) \['atoll'\]"),
        ("[tool.harness.tolerance.fp16]\natol = '1'\n", r"tolerance.fp16.atol: '1' is not a number"),
        ("[tool.harness.tolerance.fp16]\natol = -1\n", r"tolerance.fp16: .*must be >= 0"),
        ("[tool.harness.tolerance.fp16]\nstatistic = 'min'\n", r"statistic 'min'"),
        ("[tool.harness.model.m.tolerances.fp16]\natol = 1\n", r"model.m: unknown key\(s\) \['tolerances'\]"),
        ("[tool.harness]\ntolerence = 1\n", r"unknown key\(s\) \['tolerence'\]"),
        ("[tool.harness\n", "cannot read it"),
    ],
)
def test_bad_tables_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    (tmp_path / "pyproject.toml").write_text(toml)
    with pytest.raises(UsageError, match=message):
        TolerancePolicy.from_pyproject(tmp_path / "pyproject.toml")


def test_outputs_are_marked_as_class_scores_in_pyproject_or_code(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[tool.harness.model.m.output.scores]\nclasses = true\n"
        "[tool.harness.model.m.output.boxes]\nclasses = false\n"
        "[tool.harness.model.m.output.boxes.tolerance.int8]\nmin_cosine = 0.99\n")
    policy = TolerancePolicy.from_pyproject(tmp_path / "pyproject.toml")
    assert policy.classes("m") == {"scores"} and policy.classes("other") == frozenset()
    assert policy.tolerance("int8", "m", "boxes").min_cosine == 0.99
    assert policy.mark_classes("m", "logits").classes("m") == {"scores", "logits"}
    (tmp_path / "pyproject.toml").write_text("[tool.harness.model.m.output.scores]\nclasses = 'yes'\n")
    with pytest.raises(UsageError, match=r"output.scores.classes: 'yes' is not true or false"):
        TolerancePolicy.from_pyproject(tmp_path / "pyproject.toml")


def test_no_pyproject_means_defaults(tmp_path: Path) -> None:
    assert TolerancePolicy.from_pyproject(tmp_path / "absent.toml") == TolerancePolicy()
