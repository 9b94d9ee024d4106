"""Why a precision fails, tensor by tensor, and the smallest mixed-precision model that passes.

`debug_precision` runs the fp32 ONNX and a precision variant with every intermediate tensor
exposed (ONNX Runtime on the CPU, graph optimisations off so no tensor is fused away), one
golden sample at a time, and reports per tensor, in the fp32 graph's topological order: max
absolute error, error relative to the tensor's own scale, worst cosine similarity, fp16 overflow
(|x| > 65504 or non-finite) and underflow (0 < |x| < 2^-14, float16's smallest normal), and for
int8 the share of values outside the calibrated range (clipped).  Tensors are matched by name:
the fp16 converter and the Q/DQ quantizer both keep the fp32 model's tensor names.

`find_mixed` searches for the fewest nodes to keep in fp32 (fp16) or unquantized (int8) so that
the golden check passes: nodes ranked by the report (overflowing ones first, then by the error
they introduce), the smallest passing prefix of that ranking found by doubling then bisecting,
within a budget of golden runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import UsageError

FP16_MAX = 65504.0
FP16_TINY = 2.0 ** -14  # float16's smallest normal
DEBUG_PRECISIONS = ("fp16", "int8")
# A tensor "introduces" error when its relative error is this many times its inputs' worst.
JUMP = 4.0
# Relative error (to the tensor's scale) below which a tensor is not worth naming, per precision.
NOTICE = {"fp16": 1e-2, "int8": 5e-2}


@dataclass(frozen=True)
class TensorReport:
    depth: int  # position of the producing node in the fp32 graph's topological order
    tensor: str
    node: str
    op: str
    max_abs: float
    relative: float  # max |error| / max |fp32 value|
    cosine: float  # worst sample
    introduced: float  # relative / the worst relative error of its inputs
    overflow: int = 0  # fp16: fp32 values past float16's range (where an overflow starts)
    nonfinite: int = 0  # inf/nan in the variant (an overflow's consequence, or its start)
    underflow: int = 0  # fp16: nonzero values under its smallest normal
    saturated: float = 0.0  # int8: share of values outside the calibrated range
    elements: int = 0
    consumers: tuple[str, ...] = ()  # nodes that take this tensor (where int8 quantizes it)


@dataclass
class DebugReport:
    model: str
    precision: str
    samples: int
    rows: list[TensorReport]
    passed: bool | None = None  # the golden check of the variant, where it was run
    golden_summary: str = ""
    notes: list[str] = field(default_factory=list)
    # Failing outputs that TensorFlow does not hold steady even in fp32 (their noise floor fails
    # the fp32 tolerance: harness.floor): no mixed-precision model can be judged on them.
    unstable_fp32: list[str] = field(default_factory=list)

    def first_overflow(self) -> TensorReport | None:
        return next((r for r in self.rows if r.overflow), None) or next((r for r in self.rows if r.nonfinite), None)

    def first_jump(self) -> TensorReport | None:
        notice = NOTICE[self.precision]
        return next((r for r in self.rows if r.relative > notice and r.introduced >= JUMP), None)

    def first_saturated(self, share: float = 0.01) -> TensorReport | None:
        return next((r for r in self.rows if r.saturated > share), None)

    def worst(self, n: int = 5) -> list[TensorReport]:
        """The tensors that introduce the most error, the most first."""
        notice = NOTICE[self.precision]
        return sorted((r for r in self.rows if r.relative > notice / 10), key=lambda r: -r.introduced)[:n]

    def nothing_to_fix(self) -> bool:
        return (self.passed is not False and self.first_overflow() is None and self.first_jump() is None
                and self.first_saturated() is None)

    def ranking(self) -> list[str]:
        """Node names, the most likely to need higher precision first: where fp16 overflows or
        int8 saturates, then where the results stop being finite (in graph order: keeping the
        overflow's producer in fp32 is no use if its consumer casts the value back), then the
        rest by the error they introduce.  For int8 a tensor is quantized where it is consumed,
        so a tensor brings its consumers along."""
        causes = [r for r in self.rows if r.overflow or r.saturated > 0.01]
        broken = [r for r in self.rows if r.nonfinite and r not in causes]
        rest = sorted((r for r in self.rows if r not in causes and r not in broken),
                      key=lambda r: (-r.introduced, -r.relative))
        names: list[str] = []
        for r in (*causes, *broken, *rest):
            for name in (r.node, *(r.consumers if self.precision == "int8" else ())):
                if name not in names:
                    names.append(name)
        return names

    def summary(self, top: int = 5) -> str:
        lines = [(f"harness debug: {self.model} {self.precision} against fp32, {len(self.rows)} tensors, "
                  f"{self.samples} golden samples")]
        if self.golden_summary:
            lines.append(f"golden check of the {self.precision} model: {self.golden_summary}")
        overflow, jump, saturated = self.first_overflow(), self.first_jump(), self.first_saturated()
        if overflow:
            lines.append(f"first fp16 overflow: {overflow.tensor} ({overflow.op} {overflow.node!r}, depth "
                         f"{overflow.depth}): {overflow.overflow} fp32 values past +-65504, {overflow.nonfinite} "
                         f"inf/nan in {self.precision}")
        if saturated:
            lines.append(f"first int8 saturation: {saturated.tensor} ({saturated.op} {saturated.node!r}, depth "
                         f"{saturated.depth}): {saturated.saturated:.1%} of values outside the calibrated range")
        if jump:
            lines.append(f"first error jump: {jump.tensor} ({jump.op} {jump.node!r}, depth {jump.depth}): relative "
                         f"error {jump.relative:.3g}, {jump.introduced:.0f}x its inputs'")
        if self.nothing_to_fix():
            lines.append(f"nothing to fix: no overflow, no saturation, no tensor where error jumps past "
                         f"{NOTICE[self.precision]:g} of its scale" + (", and the golden check passes" if self.passed else ""))
        worst = self.worst(top)
        if worst:
            lines.append(f"{'depth':>5}  {'op':<18} {'rel err':>9} {'x inputs':>9} {'cosine':>9} {'ovf':>5} {'sat':>6}  tensor")
            for r in worst:
                lines.append(f"{r.depth:>5}  {r.op[:18]:<18} {r.relative:>9.3g} {r.introduced:>9.3g} {r.cosine:>9.5f} "
                             f"{r.overflow:>5} {r.saturated:>6.1%}  {r.tensor}")
        lines.extend(self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "precision": self.precision, "samples": self.samples, "passed": self.passed,
                "golden_summary": self.golden_summary, "rows": [asdict(r) for r in self.rows], "notes": self.notes,
                "unstable_fp32": self.unstable_fp32}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DebugReport:
        """What `to_dict` wrote (`harness debug --json`)."""
        rows = [TensorReport(**{**r, "consumers": tuple(r.get("consumers", ()))}) for r in data["rows"]]
        return cls(data["model"], data["precision"], int(data["samples"]), rows, data.get("passed"),
                   str(data.get("golden_summary", "")), list(data.get("notes", [])),
                   list(data.get("unstable_fp32", [])))


def _exposed(path: Path, names: Sequence[str]) -> bytes:
    """`path`'s model with `names` added as graph outputs (type left to ONNX Runtime)."""
    import onnx

    model = onnx.load(str(path))
    have = {o.name for o in model.graph.output}
    for name in names:
        if name not in have:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    return bytes(model.SerializeToString())


def _produced(path: Path) -> set[str]:
    import onnx

    return {o for n in onnx.load(str(path), load_external_data=False).graph.node for o in n.output}


def _session(data: bytes) -> Any:
    from harness.backends.onnxrt import import_onnxruntime

    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    options.log_severity_level = 3
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def float_tensors(path: Path) -> list[tuple[str, Any]]:
    """(tensor, node) for each float output of each node of the fp32 graph, in order."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    floats = {v.name for v in (*model.graph.value_info, *model.graph.output)
              if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    return [(o, n) for n in model.graph.node for o in n.output if o in floats]


class _Stats:
    """Running per-tensor statistics over samples."""

    def __init__(self) -> None:
        self.max_abs = 0.0
        self.max_ref = 0.0
        self.cosine = 1.0
        self.overflow = 0
        self.nonfinite = 0
        self.underflow = 0
        self.outside = 0
        self.elements = 0

    def add(self, ref: np.ndarray, got: np.ndarray, precision: str, calibrated: tuple[float, float] | None) -> None:
        ref64, got64 = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
        finite = np.isfinite(got64)
        error = np.abs(np.where(finite, got64, np.inf) - ref64)
        self.max_abs = max(self.max_abs, float(error.max(initial=0.0)))
        self.max_ref = max(self.max_ref, float(np.abs(ref64).max(initial=0.0)))
        norms = np.linalg.norm(ref64) * np.linalg.norm(np.where(finite, got64, 0.0))
        if norms > 0:
            self.cosine = min(self.cosine, float(np.dot(ref64, np.where(finite, got64, 0.0)) / norms))
        elif np.any(ref64) != np.any(got64):
            self.cosine = 0.0
        self.nonfinite += int(np.count_nonzero(~finite))
        if precision == "fp16":
            self.overflow += int(np.count_nonzero(np.abs(ref64) > FP16_MAX))
            magnitude = np.abs(ref64)
            self.underflow += int(np.count_nonzero((magnitude > 0) & (magnitude < FP16_TINY)))
        if calibrated is not None:
            low, high = calibrated
            self.outside += int(np.count_nonzero((ref64 < low) | (ref64 > high)))
        self.elements += ref64.size

    @property
    def relative(self) -> float:
        if self.max_ref == 0:
            return 0.0 if self.max_abs == 0 else float("inf")
        return self.max_abs / self.max_ref


def calibrated_ranges(table: Path | None, symmetric: bool) -> dict[str, tuple[float, float]]:
    """Tensor -> the range int8 represents, from a calibration table (symmetric: +-max|x|)."""
    if table is None:
        return {}
    from harness.precision.int8 import check_table

    ranges = {}
    for name, entry in check_table(table).get("data", {}).items():
        try:
            low = float(np.ravel(entry["lowest"]["data"])[0])
            high = float(np.ravel(entry["highest"]["data"])[0])
        except (KeyError, TypeError, IndexError):
            continue
        bound = max(abs(low), abs(high))
        ranges[name] = (-bound, bound) if symmetric else (low, high)
    return ranges


def debug_precision(fp32: Path, variant: Path, precision: str, feed: Mapping[str, np.ndarray], model: str,
                    table: Path | None = None, symmetric: bool = True,
                    progress: Callable[[str], None] | None = None) -> DebugReport:
    """Compare every float tensor of `variant` with `fp32`'s on `feed`, one sample at a time."""
    if precision not in DEBUG_PRECISIONS:
        raise UsageError(f"harness debug --precision {precision}: choose from {list(DEBUG_PRECISIONS)} "
                         "(bf16 runs in OpenVINO, whose intermediate tensors this does not expose)")
    tensors = float_tensors(fp32)
    ranges = calibrated_ranges(table, symmetric) if precision == "int8" else {}
    names = [t for t, _ in tensors]
    produced = _produced(variant)
    shared = [t for t in names if t in produced]  # a tensor the variant renamed or fused away is not compared
    ref_session, got_session = _session(_exposed(fp32, names)), _session(_exposed(variant, shared))
    stats = {t: _Stats() for t in shared}
    samples = len(next(iter(feed.values())))
    for i in range(samples):
        one = {k: v[i:i + 1] for k, v in feed.items()}
        ref = dict(zip(names, ref_session.run(names, one)))
        present = [t for t in names if t in stats]
        got = dict(zip(present, got_session.run(present, one)))
        for t in present:
            if got[t].shape == ref[t].shape:
                stats[t].add(ref[t], got[t], precision, ranges.get(t))
        if progress and (i + 1) % max(1, samples // 4) == 0:
            progress(f"{i + 1}/{samples} samples")
    return _report(tensors, stats, precision, samples, model)


def _report(tensors: list[tuple[str, Any]], stats: Mapping[str, _Stats], precision: str, samples: int,
            model: str) -> DebugReport:
    relative = {t: s.relative for t, s in stats.items()}
    nodes = list({id(n): n for _, n in tensors}.values())
    order = {n.name: i for i, n in enumerate(nodes)}
    consumers: dict[str, list[str]] = {}
    for node in nodes:
        for i in node.input:
            consumers.setdefault(i, []).append(node.name)
    rows = []
    for tensor, node in tensors:
        s = stats.get(tensor)
        if s is None or s.elements == 0:
            continue
        upstream = max((relative.get(i, 0.0) for i in node.input), default=0.0)
        rows.append(TensorReport(
            order[node.name], tensor, node.name, node.op_type, s.max_abs, s.relative, s.cosine,
            s.relative / max(upstream, 1e-7), s.overflow, s.nonfinite, s.underflow, s.outside / s.elements, s.elements,
            tuple(consumers.get(tensor, ()))))
    return DebugReport(model, precision, samples, rows)


def find_mixed(ranking: Sequence[str], passes: Callable[[Sequence[str]], bool], budget: int = 12,
               progress: Callable[[str], None] | None = None) -> tuple[list[str] | None, int]:
    """The shortest prefix of `ranking` for which `passes(prefix)` holds: doubling, then bisecting
    between the last failing and the first passing length, within `budget` calls of `passes`.
    Returns (prefix or None if none passed within the budget, calls made)."""
    calls = 0

    def attempt(k: int) -> bool:
        nonlocal calls
        calls += 1
        ok = passes(ranking[:k])
        if progress:
            progress(f"run {calls}/{budget}: {k} node(s) kept -> {'pass' if ok else 'fail'}")
        return ok

    if attempt(0):
        return [], calls
    low, high, k = 0, None, 1
    while high is None and calls < budget and k <= len(ranking):
        if attempt(k):
            high = k
        else:
            low, k = k, min(2 * k, len(ranking)) if k < len(ranking) else k + 1
    if high is None:
        return None, calls
    while high - low > 1 and calls < budget:  # low fails, high passes
        mid = (low + high) // 2
        if attempt(mid):
            high = mid
        else:
            low = mid
    return list(ranking[:high]), calls


def write_mixed(fp32: Path, precision: str, kept: Sequence[str], dst: Path, table: Path | None = None,
                method: str = "minmax", target: str = "tensorrt") -> dict[str, Any]:
    """The `precision` model of `fp32` with `kept` nodes in fp32 (fp16) or unquantized (int8)."""
    if precision == "fp16":
        from harness.precision.fp16 import convert_fp16

        info = convert_fp16(fp32, dst, keep_nodes=kept)
    elif precision == "int8":
        from harness.precision.int8 import quantize

        if table is None:
            raise UsageError("int8 mixed precision needs the calibration table")
        info = quantize(fp32, table, method, dst, target, keep_nodes=kept)
    else:
        raise UsageError(f"no mixed variant of {precision!r}; choose from {list(DEBUG_PRECISIONS)}")
    return {**info, "kept_in_fp32" if precision == "fp16" else "kept_unquantized": list(kept)}
