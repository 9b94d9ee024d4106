from __future__ import annotations

import numpy as np
import pytest

from harness.errors import InputError, UsageError
from harness.spec import InputArg, ModelSpec, TensorSpec


@pytest.mark.parametrize(
    ("text", "name", "shape"),
    [
        ("input", "input", None),
        ("input:0", "input", None),  # a tensor name, not a shape
        ("input:1x299x299x3", "input", (None, 299, 299, 3)),  # batch made dynamic
        ("scope/x:?,8,8,1", "scope/x", (None, 8, 8, 1)),
        ("x:0:-1x5", "x", (None, 5)),
        ("v:[10]", "v", (None,)),
    ],
)
def test_input_arg_parse(text: str, name: str, shape: tuple | None) -> None:
    arg = InputArg.parse(text)
    assert (arg.name, arg.shape) == (name, shape)


@pytest.mark.parametrize("text", [":1x2", "x:1x0x3", "x:1xax3"])
def test_input_arg_rejects_bad_text(text: str) -> None:
    with pytest.raises(UsageError, match="--input"):
        InputArg.parse(text)


SPEC = ModelSpec(
    "m",
    (TensorSpec("a", "float32", (None, 2, 3)), TensorSpec("b", "int64", (None,))),
    (TensorSpec("y", "float32", (None, 4)),),
)


def test_check_feed_accepts_any_batch() -> None:
    feed = {"a": np.zeros((5, 2, 3), np.float32), "b": np.zeros(5, np.int64)}
    assert SPEC.check_feed(feed)["a"].shape == (5, 2, 3)


@pytest.mark.parametrize(
    ("feed", "message"),
    [
        ({"a": np.zeros((1, 2, 3), np.float32)}, r"missing \['b'\]"),
        ({"a": np.zeros((1, 2, 3), np.float32), "b": np.zeros(1, np.int64), "c": 1}, r"unknown \['c'\]"),
        ({"a": np.zeros((1, 2, 3), np.float64), "b": np.zeros(1, np.int64)}, "input 'a': dtype float64 given"),
        ({"a": np.zeros((1, 3, 2), np.float32), "b": np.zeros(1, np.int64)}, r"input 'a': shape \(1, 3, 2\) given.*\?x2x3"),
        ({"a": np.zeros((2, 2, 3), np.float32), "b": np.zeros(3, np.int64)}, "different batch sizes"),
    ],
)
def test_check_feed_names_the_problem(feed: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        SPEC.check_feed(feed)


def test_spec_round_trips_through_dict() -> None:
    assert ModelSpec.from_dict(SPEC.to_dict()) == SPEC


def test_random_feed_is_seeded_and_valid() -> None:
    a, b = SPEC.random_feed(3, seed=7), SPEC.random_feed(3, seed=7)
    SPEC.check_feed(a)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["a"], SPEC.random_feed(3, seed=8)["a"])


def test_ranges_and_values_parse_and_several_inputs_of_one_name_add_up() -> None:
    from harness.stages.freeze import describe

    arg = InputArg.parse("ids:?x1..128[0,30522)")
    assert (arg.shape, arg.ranges, arg.values) == ((None, None), (None, (1, 128, 128)), (0, 30522))
    assert InputArg.parse("ids:?x1/64/128").ranges == (None, (1, 64, 128))
    for bad in ("ids:?x0..4", "ids:?x8..4", "ids:?x1/9/4", "ids[5,5)", "ids:1..4x3"):
        with pytest.raises(UsageError, match="--input"):
            InputArg.parse(bad)
    spec = ModelSpec("m", (TensorSpec("ids", "int32", (None, None), "ids:0"),), (TensorSpec("y", "float32", (None, 2)),))
    both = describe(spec, [InputArg.parse("ids:?x1..128"), InputArg.parse("ids[0,100)")]).inputs[0]
    assert both.ranges == (None, (1, 128, 128)) and both.values == (0, 100) and both.values_from == "given"
    feed = ModelSpec("m", (both,), spec.outputs).random_feed(4, seed=0)["ids"]
    assert feed.shape == (4, 128) and 0 <= feed.min() and feed.max() < 100
    with pytest.raises(InputError, match="outside the range 1..128"):
        both.check(np.zeros((1, 129), np.int32))
    with pytest.raises(UsageError, match="no input 'nope'"):
        describe(spec, [InputArg.parse("nope[0,2)")])
