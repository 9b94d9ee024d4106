"""Parsers of option values shared by the CLI and the pytest plugin: each raises
argparse.ArgumentTypeError, so a bad value is a usage error when the options are parsed
(argparse names the option in front of the message)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from harness.errors import UsageError
from harness.spec import InputArg

OPSET_RANGE = (9, 21)


def input_arg(text: str) -> InputArg:
    try:
        return InputArg.parse(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def opset(text: str) -> int:
    low, high = OPSET_RANGE
    if not text.isdigit() or not low <= int(text) <= high:
        raise argparse.ArgumentTypeError(f"opset {text!r}: an integer from {low} to {high}")
    return int(text)


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a positive integer")
    return int(text)


def batch_sizes(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated positive integers, e.g. 1,8,32")
    return sorted({int(p) for p in parts})


def choices(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    """Parser of a comma-separated list drawn from `allowed`, order kept."""

    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items or any(t not in allowed for t in items):
            raise argparse.ArgumentTypeError(f"{text!r}: comma-separated, from {','.join(allowed)}")
        return items

    return parse


def one_of(allowed: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"{text!r}: one of {','.join(allowed)}")
        return text

    return parse


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a fraction in [0, 1), e.g. 0.15")
    return value
