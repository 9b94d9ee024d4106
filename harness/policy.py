"""Tolerance policy as data: defaults per precision, overridden for all models, per model and
per output, from `[tool.harness]` in pyproject.toml or in code (a conftest.py):

    [tool.harness.tolerance.fp16]                        # every model
    atol = 0.2
    [tool.harness.model.digits.tolerance.int8]           # one model
    min_top1 = 0.99
    [tool.harness.model.digits.output.logits.tolerance.int8]   # one output of one model
    min_cosine = 0.999
    [tool.harness.model.mymodel.output.scores]           # this output is class scores:
    classes = true                                       # top-1/top-5 are computed and gated on it
    [tool.harness.model.ssd.output.boxes]                # a detector: judged as detections
    detections = {scores = "scores", classes = "classes", valid = "valid"}
    [tool.harness.model.ssd.output.boxes.detection_tolerance.int8]
    min_matched = 0.9                                    # harness.detections.DetectionTolerance's fields
    [tool.harness.model.seg.output.logits]               # per-pixel class scores: judged as class maps
    segmentation = true
    [tool.harness.model.seg.output.logits.segmentation_tolerance.int8]
    min_miou = 0.8                                       # harness.segmentation.SegmentationTolerance's fields

The most specific setting wins field by field: output > model > all models > default.
Top-1/top-5 agreement is computed only on outputs that are class scores: a built-in model
declares its own, a user's model marks them with `classes = true` (or `mark_classes()`)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.compare import DEFAULT_TOLERANCES, Tolerance
from harness.errors import HarnessError, UsageError

if TYPE_CHECKING:
    from harness.detections import DetectionOutputs, DetectionTolerance
    from harness.segmentation import SegmentationTolerance

FIELDS = {f.name for f in fields(Tolerance)}
Overrides = Mapping[str, Mapping[str, Any]]  # precision -> {field: value}


def _check(overrides: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    checked: dict[str, dict[str, Any]] = {}
    for precision, values in overrides.items():
        if precision not in DEFAULT_TOLERANCES:
            raise UsageError(f"{where}: unknown precision {precision!r}; choose from {sorted(DEFAULT_TOLERANCES)}")
        if not isinstance(values, Mapping):
            raise UsageError(f"{where}.{precision}: expected a table of {sorted(FIELDS)}")
        unknown = sorted(set(values) - FIELDS)
        if unknown:
            raise UsageError(f"{where}.{precision}: unknown field(s) {unknown}; allowed: {sorted(FIELDS)}")
        for name, value in values.items():
            if name != "statistic" and value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise UsageError(f"{where}.{precision}.{name}: {value!r} is not a number")
        try:
            replace(DEFAULT_TOLERANCES[precision], **values)  # range check now, not at test time
        except HarnessError as e:
            raise UsageError(f"{where}.{precision}: {e}") from e
        checked[precision] = dict(values)
    return checked


def _task_overrides(table: Mapping[str, Any], where: str, kind: type) -> dict[str, dict[str, float]]:
    """Per-precision overrides of a task's tolerance (`kind`: its dataclass, DetectionTolerance or
    SegmentationTolerance): numbers for its fields only."""
    from dataclasses import fields as dataclass_fields

    allowed = {f.name for f in dataclass_fields(kind)}
    checked: dict[str, dict[str, float]] = {}
    for precision, values in table.items():
        if precision not in DEFAULT_TOLERANCES or not isinstance(values, Mapping):
            raise UsageError(f"{where}.{precision}: expected a precision of {sorted(DEFAULT_TOLERANCES)} "
                             f"holding {sorted(allowed)}")
        unknown = sorted(set(values) - allowed)
        if unknown or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values.values()):
            raise UsageError(f"{where}.{precision}: numbers for {sorted(allowed)} only (got {dict(values)!r})")
        checked[precision] = {k: float(v) for k, v in values.items()}
    return checked


@dataclass(frozen=True)
class TolerancePolicy:
    defaults: Mapping[str, Tolerance] = field(default_factory=lambda: dict(DEFAULT_TOLERANCES))
    everywhere: Overrides = field(default_factory=dict)
    models: Mapping[str, Overrides] = field(default_factory=dict)
    outputs: Mapping[tuple[str, str], Overrides] = field(default_factory=dict)
    class_outputs: Mapping[str, frozenset[str]] = field(default_factory=dict)  # model -> outputs that are class scores
    # model -> detectors' outputs (harness.detections), and their tolerance overrides per precision
    detection_outputs: Mapping[str, tuple[DetectionOutputs, ...]] = field(default_factory=dict)
    detection_overrides: Mapping[tuple[str, str], Mapping[str, Mapping[str, float]]] = field(default_factory=dict)
    # model -> outputs that are per-pixel class scores (harness.segmentation), and their overrides
    segmentation_outputs: Mapping[str, frozenset[str]] = field(default_factory=dict)
    segmentation_overrides: Mapping[tuple[str, str], Mapping[str, Mapping[str, float]]] = field(default_factory=dict)

    def segmentations(self, model: str, precision: str) -> list[tuple[str, SegmentationTolerance]]:
        """The model's segmentation outputs, each with its tolerance at `precision`."""
        from harness.precision import base_precision
        from harness.segmentation import segmentation_tolerance

        return [(o, segmentation_tolerance(base_precision(precision), self.segmentation_overrides.get(
            (model, o), {}).get(base_precision(precision)))) for o in sorted(self.segmentation_outputs.get(model, ()))]

    def detections(self, model: str, precision: str) -> list[tuple[DetectionOutputs, DetectionTolerance]]:
        """The model's detectors' outputs, each with its tolerance at `precision`."""
        from harness.detections import detection_tolerance
        from harness.precision import base_precision

        return [(d, detection_tolerance(precision, self.detection_overrides.get((model, d.boxes), {}).get(
            base_precision(precision)))) for d in self.detection_outputs.get(model, ())]

    def classes(self, model: str) -> frozenset[str]:
        return self.class_outputs.get(model, frozenset())

    def mark_classes(self, model: str, *outputs: str) -> TolerancePolicy:
        """A copy in which these outputs of `model` are class scores (top-1/top-5 gated)."""
        if not model or not outputs:
            raise UsageError("mark_classes needs a model and at least one output name")
        return replace(self, class_outputs={**self.class_outputs, model: self.classes(model) | set(outputs)})

    def tolerance(self, precision: str, model: str = "", output: str = "") -> Tolerance:
        from harness.precision import base_precision

        precision = base_precision(precision)  # a mixed variant passes by its base precision's policy
        if precision not in self.defaults:
            raise UsageError(f"no tolerance for precision {precision!r}; known: {sorted(self.defaults)}")
        values: dict[str, Any] = {}
        for layer in (self.everywhere, self.models.get(model, {}), self.outputs.get((model, output), {})):
            values.update(layer.get(precision, {}))
        return replace(self.defaults[precision], **values)

    def for_outputs(self, precision: str, model: str, outputs: Sequence[str]) -> dict[str, Tolerance]:
        """Each output's tolerance (an output's per-sample shapes, `NAME:shape`, are not outputs)."""
        from harness.backends.base import SHAPE

        return {o: self.tolerance(precision, model, o) for o in outputs if not o.endswith(SHAPE)}

    def elementwise(self, precision: str, model: str, outputs: Sequence[str]) -> dict[str, Tolerance]:
        """`for_outputs` without the outputs judged as detections or class maps: what the golden's
        elementwise warnings (an engine ignoring its input would pass) are about."""
        judged = {n for d, _ in self.detections(model, precision) for n in d.names}
        judged |= {o for o, _ in self.segmentations(model, precision)}
        return {o: t for o, t in self.for_outputs(precision, model, outputs).items() if o not in judged}

    def override(self, precision: str, model: str = "", output: str = "", **values: Any) -> TolerancePolicy:
        """A copy with `values` set for all models, one model, or one output of a model
        (what a conftest.py does to change the policy in code)."""
        if output and not model:
            raise UsageError("an output override needs the model it belongs to")
        layer = _check({precision: values}, "override")
        if output:
            key = (model, output)
            merged = {**self.outputs.get(key, {}), precision: {**self.outputs.get(key, {}).get(precision, {}), **values}}
            return replace(self, outputs={**self.outputs, key: merged})
        if model:
            merged = {**self.models.get(model, {}), precision: {**self.models.get(model, {}).get(precision, {}), **values}}
            return replace(self, models={**self.models, model: merged})
        return replace(self, everywhere={**self.everywhere, precision: {**self.everywhere.get(precision, {}), **layer[precision]}})

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str = "[tool.harness]") -> TolerancePolicy:
        unknown = sorted(set(table) - {"tolerance", "model"})
        if unknown:
            raise UsageError(f"{where}: unknown key(s) {unknown}; expected 'tolerance' and 'model'")
        everywhere = _check(table.get("tolerance", {}), f"{where}.tolerance")
        models: dict[str, Overrides] = {}
        outputs: dict[tuple[str, str], Overrides] = {}
        classes: dict[str, frozenset[str]] = {}
        detections: dict[str, tuple[DetectionOutputs, ...]] = {}
        detection_overrides: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
        segmentation: dict[str, frozenset[str]] = {}
        segmentation_overrides: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
        for model, body in table.get("model", {}).items():
            from harness.models import DESCRIBES

            bad = sorted(set(body) - {"tolerance", "output"} - DESCRIBES)
            if bad:
                raise UsageError(f"{where}.model.{model}: unknown key(s) {bad}; expected 'tolerance', 'output' "
                                 f"and what describes the model: {', '.join(sorted(DESCRIBES))}")
            models[model] = _check(body.get("tolerance", {}), f"{where}.model.{model}.tolerance")
            for output, obody in body.get("output", {}).items():
                here = f"{where}.model.{model}.output.{output}"
                keys = {"tolerance", "classes", "detections", "detection_tolerance", "segmentation",
                        "segmentation_tolerance"}
                bad = sorted(set(obody) - keys)
                if bad:
                    raise UsageError(f"{here}: unknown key(s) {bad}; expected {', '.join(repr(k) for k in sorted(keys))}")
                if "segmentation" in obody:
                    from harness.segmentation import SegmentationTolerance

                    if not isinstance(obody["segmentation"], bool):
                        raise UsageError(f"{here}.segmentation: {obody['segmentation']!r} is not true or false")
                    if obody["segmentation"]:
                        segmentation[model] = segmentation.get(model, frozenset()) | {output}
                        segmentation_overrides[(model, output)] = _task_overrides(
                            obody.get("segmentation_tolerance", {}), f"{here}.segmentation_tolerance",
                            SegmentationTolerance)
                if "segmentation_tolerance" in obody and not obody.get("segmentation"):
                    raise UsageError(f"{here}.segmentation_tolerance: only for an output declared with segmentation = true")
                if "detections" in obody:
                    from harness.detections import DetectionOutputs, DetectionTolerance

                    if not isinstance(obody["detections"], Mapping):
                        raise UsageError(f"{here}.detections: a table naming the scores, classes and valid outputs")
                    try:
                        group = DetectionOutputs.from_table(output, obody["detections"], here)
                    except HarnessError as e:
                        raise UsageError(str(e)) from e
                    detections[model] = (*detections.get(model, ()), group)
                    detection_overrides[(model, output)] = _task_overrides(
                        obody.get("detection_tolerance", {}), f"{here}.detection_tolerance", DetectionTolerance)
                elif "detection_tolerance" in obody:
                    raise UsageError(f"{here}.detection_tolerance: only for an output declared with detections = {{...}}")
                if "classes" in obody:
                    if not isinstance(obody["classes"], bool):
                        raise UsageError(f"{where}.model.{model}.output.{output}.classes: "
                                         f"{obody['classes']!r} is not true or false")
                    if obody["classes"]:
                        classes[model] = classes.get(model, frozenset()) | {output}
                outputs[(model, output)] = _check(
                    obody.get("tolerance", {}), f"{where}.model.{model}.output.{output}.tolerance"
                )
        return cls(dict(DEFAULT_TOLERANCES), everywhere, models, outputs, classes, detections, detection_overrides,
                   segmentation, segmentation_overrides)

    @classmethod
    def from_pyproject(cls, path: Path) -> TolerancePolicy:
        """The policy of `[tool.harness]` in `path`; the defaults if the file or table is absent."""
        path = Path(path)
        if not path.is_file():
            return cls()
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise UsageError(f"{path}: cannot read it ({e})") from e
        return cls.from_table(data.get("tool", {}).get("harness", {}), f"{path} [tool.harness]")
