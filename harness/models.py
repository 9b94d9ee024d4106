"""Which models a run covers: `--harness-model a,b,c`, names that `[tool.harness.model.NAME]`
in pyproject.toml describes (path, inputs, outputs, signature, calibration, next to the
tolerances the same table already gives), and `--harness-shard K/N`, which keeps a fixed share
of them so that N CI jobs on N machines split one model list between them."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.sources import ModelRequest

# What a model's table may say besides its tolerances (harness.policy reads those).
DESCRIBES = {"path", "inputs", "outputs", "signature", "calibration"}


@dataclass(frozen=True)
class ModelEntry:
    name: str  # what test ids and the end-of-run table call it
    request: ModelRequest
    calibration: Path | None = None  # the model's own calibration data, if its table names some


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N), 1 <= K <= N."""
    head, _, tail = text.partition("/")
    if not (head.isdigit() and tail.isdigit()) or not 1 <= int(head) <= int(tail):
        raise UsageError(f"--harness-shard {text!r}: give K/N with 1 <= K <= N, e.g. 2/3 for the second of three")
    return int(head), int(tail)


def model_tables(pyproject: Path) -> dict[str, Mapping[str, Any]]:
    """`[tool.harness.model.*]` of `pyproject` ({} if absent)."""
    if not pyproject.is_file():
        return {}
    try:
        data = tomllib.loads(pyproject.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"{pyproject}: cannot read it ({e})") from e
    tables = data.get("tool", {}).get("harness", {}).get("model", {})
    return {name: body for name, body in tables.items() if isinstance(body, Mapping)}


def model_entries(models: str, get: Callable[[str], Any], pyproject: Path, shard: tuple[int, int] | None = None,
                  ) -> list[ModelEntry]:
    """The run's models, in the order given, after the shard.  With one model the command
    line's --harness-input/--output/--signature describe it; with several those must come from
    each model's table (they would be ambiguous)."""
    names = [n.strip() for n in models.split(",") if n.strip()]
    if not names:
        raise UsageError("--harness-model: no model given")
    if len(set(names)) != len(names):
        raise UsageError(f"--harness-model {models!r}: a model is named twice")
    tables = model_tables(pyproject)
    cli = (tuple(get("input")), tuple(get("output")), get("signature"))
    if len(names) > 1 and (cli[0] or cli[1] or cli[2]):
        raise UsageError("--harness-input/--harness-output/--harness-signature describe one model; with several "
                         "models give each its own in pyproject.toml: [tool.harness.model.NAME] path, inputs, "
                         "outputs, signature")
    entries = []
    for name in names:
        table = tables.get(name, {})
        if "path" in table:
            where = f"{pyproject} [tool.harness.model.{name}]"
            inputs, outputs = _strings(table, "inputs", where), _strings(table, "outputs", where)
            path = (pyproject.parent / str(table["path"])).resolve() if not Path(str(table["path"])).is_absolute() \
                else Path(str(table["path"]))
            calibration = table.get("calibration")
            request = ModelRequest.of(str(path), inputs, outputs, table.get("signature"))
            entries.append(ModelEntry(name, request, pyproject.parent / str(calibration) if calibration else None))
        else:
            entries.append(ModelEntry(name, ModelRequest.of(name, *cli[:2], cli[2])))
    if shard is not None:
        k, n = shard
        ordered = sorted(entries, key=lambda e: e.name)  # whatever order each job was given them in
        mine = {e.name for i, e in enumerate(ordered) if i % n == k - 1}
        entries = [e for e in entries if e.name in mine]
    return entries


def _strings(table: Mapping[str, Any], key: str, where: str) -> Sequence[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{where}: {key} must be a list of strings, e.g. {key} = [\"input:1x299x299x3\"]")
    return value
