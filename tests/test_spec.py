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
