"""Instructions per call under Valgrind (harness.counting): deterministic across processes,
and a known regression shows up at its size."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from harness.backends.base import RunnerRecipe
from harness.counting import CALLS, WARMUP, count_instructions, unavailable
from harness.sources import ModelRequest
from harness.workspace import Workspace

pytest.importorskip("onnxruntime", reason="onnxruntime not importable")
pytest.importorskip("tensorflow", reason="tensorflow not importable (digits is exported from TensorFlow)")
if unavailable():
    pytest.skip(f"instruction counts cannot run here: {unavailable()}", allow_module_level=True)

DIGITS = ModelRequest("digits")


def _recipe(workspace: Workspace, runner_class: str | None = None) -> RunnerRecipe:
    recipe = workspace.engine(DIGITS, "onnxruntime", "fp32").runner.recipe()
    if runner_class is None:
        return recipe
    return replace(recipe, kwargs={**recipe.kwargs, "runner_class": runner_class})


def test_counts_repeat_across_processes_and_a_doubled_call_counts_double(harness_workspace: Workspace) -> None:
    root = Path(harness_workspace.store.root)
    plain = _recipe(harness_workspace)
    first = count_instructions(plain, [1, 8], root)
    second = count_instructions(plain, [1, 8], root)
    for batch in (1, 8):
        a, b = first[batch].per_call, second[batch].per_call
        assert a > 50_000 and abs(a - b) / a <= 0.001, (batch, a, b)  # the 0.1% the gate's margin relies on
    assert first[8].per_call > 2 * first[1].per_call  # eight samples are more work than one
    # A known regression: every call's work done twice.
    twice = count_instructions(_recipe(harness_workspace, "tests.counting_runners:TwiceOrt"), [1], root)
    assert 1.9 <= twice[1].per_call / first[1].per_call <= 2.05


def test_one_off_work_in_one_counted_call_does_not_move_the_count(harness_workspace: Workspace) -> None:
    root = Path(harness_workspace.store.root)
    recipe = _recipe(harness_workspace, "tests.counting_runners:OnceOrt")
    plain = count_instructions(replace(recipe, kwargs={**recipe.kwargs, "spin": 0}), [1], root)[1]
    assert len(plain.calls) == CALLS
    # ~20% of a call's work, once, in the second counted call: a sum over the calls moves by ~4%.
    got = count_instructions(replace(recipe, kwargs={**recipe.kwargs, "spin": 4_000, "at": WARMUP + 2}), [1], root)[1]
    assert got.calls[1] > 1.1 * plain.per_call, got.calls  # the event was counted, in that call
    # Within 0.5%, against the ~4% a sum would move: two processes whose job files differ (here the
    # spin's arguments) lay out their heaps differently, which moved batch 1 by 0.19% on a cold CI
    # machine (one call of each process also carried one-off work of ONNX Runtime's, +4.6%).
    assert abs(got.per_call - plain.per_call) / plain.per_call <= 0.005, (got.per_call, plain.per_call)
    sums = sum(got.calls) / sum(plain.calls) - 1
    assert sums > 0.04, sums  # what the trimmed mean is for: a sum would have moved this much


def test_a_failing_child_names_the_engine_and_its_log(harness_workspace: Workspace) -> None:
    from harness.errors import HarnessError

    broken = replace(_recipe(harness_workspace), kwargs={**_recipe(harness_workspace).kwargs,
                                                         "onnx_path": "/nonexistent/model.onnx"})
    with pytest.raises(HarnessError, match=r"digits-fp32: counting under valgrind failed .* output is in .*\.log"):
        count_instructions(broken, [1], Path(harness_workspace.store.root), name="digits-fp32")
