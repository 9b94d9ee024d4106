"""FP32 ONNX -> INT8 ONNX with explicit QuantizeLinear/DequantizeLinear, in the form
TensorRT accepts: symmetric int8 (zero point 0), per-channel weight scales, per-tensor
activation scales.

Two steps so the slow one is cached on its own: `calibrate` runs the FP32 model on the
calibration data and writes the activation ranges (the "calibration table") to a JSON
file; `quantize` turns FP32 + table into the Q/DQ model without running anything."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.backends.onnxrt import import_onnxruntime
from harness.errors import ArtifactError, ExportError, UsageError
from harness.precision import FLOAT_ELEM_TYPES
from harness.precision.calibration import METHODS, CalibrationData

CALIBRATION_BATCH = 2  # minmax holds one batch's activations at a time: InceptionV3 at 8 peaked 1.3 GB higher
PERCENTILE = 99.999  # of |activation|, for the percentile method


def _method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    if name not in METHODS:
        raise UsageError(f"calibration method {name!r}: choose from {list(METHODS)}")
    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over in-memory batches."""

    def __init__(self, data: CalibrationData) -> None:
        self._batches = iter(data.batches(CALIBRATION_BATCH))

    def get_next(self) -> dict[str, Any] | None:
        return next(self._batches, None)

    def __len__(self) -> int:  # only for strided calibration, which is not used
        raise NotImplementedError


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantization tools print progress and log advice on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def calibrate(fp32: Path, data: CalibrationData, method: str, table: Path) -> None:
    import_onnxruntime()
    from onnxruntime.quantization.calibrate import CalibrationDataReader, create_calibrator, save_tensors_data

    CalibrationDataReader.register(_Reader)
    # The real (min, max) of each tensor: a symmetric recipe takes max(|min|, |max|) from it,
    # an asymmetric one uses both ends (half the int8 range is wasted on a ReLU output if
    # the range is made symmetric here).
    options: dict[str, Any] = {"symmetric": False}
    if method == "percentile":
        options["percentile"] = PERCENTILE
    with tempfile.TemporaryDirectory(prefix="harness-calib.") as tmp, _quiet():
        calibrator = create_calibrator(
            Path(fp32),
            None,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=_method(method),
            extra_options=options,
        )
        calibrator.collect_data(_Reader(data))
        ranges = calibrator.compute_data()
        del calibrator
    save_tensors_data(ranges, table)


def check_table(table: Path) -> dict[str, Any]:
    """The calibration table, or ArtifactError naming it: never quantize with a broken one."""
    try:
        raw = json.loads(table.read_text())
        from onnxruntime.quantization.calibrate import TensorsData

        TensorsData.from_dict(raw)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ArtifactError(
            f"{table}: not a readable calibration table ({type(e).__name__}: {e}); delete it to recalibrate"
        ) from e
    if not isinstance(raw, dict):
        raise ArtifactError(f"{table}: not a calibration table; delete it to recalibrate")
    return raw


# Two placements of the same calibration:
# - tensorrt: int8 activations, symmetric (zero point 0), per-tensor; int8 weights symmetric
#   per-channel; float biases. What TensorRT's explicit quantization accepts.
# - onnxruntime: uint8 activations with a zero point, the form ONNX Runtime's x86 kernels fuse
#   into QLinearConv end to end. With symmetric int8 activations it cannot drop the ReLU after
#   a convolution, so only 55 of InceptionV3's 94 convolutions fuse and int8 runs no faster than
#   fp32 (41.9 vs 41.4 ms at batch 1 on the 2-core CI machine; uint8: 18.7 ms).
TARGETS = ("tensorrt", "onnxruntime")


def quantize(fp32: Path, table: Path, method: str, dst: Path, target: str = "tensorrt",
             keep_nodes: Sequence[str] = ()) -> dict[str, Any]:
    """`keep_nodes`: nodes left unquantized besides the integer paths (harness debug --fix)."""
    import_onnxruntime()
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if target not in TARGETS:
        raise UsageError(f"int8 target {target!r}: choose from {list(TARGETS)}")
    check_table(table)
    symmetric = target == "tensorrt"
    keep = integer_paths(fp32)
    keep += [n for n in keep_nodes if n not in keep]
    with _quiet():
        quantize_static(
            str(fp32),
            str(dst),
            None,  # no reader: the ranges come from the table, nothing is recomputed
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            # ONNX Runtime's form: 7-bit weights.  Without VNNI (an AVX2-only x86: AMD EPYC Zen 2/3)
            # its u8s8 kernels add pairs of products into saturating int16 (vpmaddubsw), and with
            # 8-bit weights digits' int8 logits fell to cosine 0.986 (policy 0.995) and InceptionV3's
            # to 0.910; with 7 bits, 0.998 and 0.965, the same kernels, no saturation on any x86.
            reduce_range=not symmetric,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=_method(method),
            calibration_cache_path=str(table),
            nodes_to_exclude=keep,
            # TensorRT's Q/DQ types are int8/fp8/int4: a bias stays float (it fuses it itself).
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True, "QuantizeBias": not symmetric},
        )
    folded = fold_constant_dequantize(dst) if symmetric else []
    return {
        "target": target,
        "format": "QDQ",
        "activations": "int8 symmetric per-tensor" if symmetric else "uint8 asymmetric per-tensor",
        "weights": "int8 symmetric per-channel" + ("" if symmetric else ", 7-bit range (reduce_range)"),
        "left_unquantized": keep,
        **({"constants_kept_float": folded} if folded else {}),
    }


# Where TensorRT takes an int8 constant: a weighted layer's weights (through a DequantizeLinear).
_WEIGHT_SLOTS = {"Conv": 1, "ConvTranspose": 1, "MatMul": 1, "Gemm": 1}


def fold_constant_dequantize(path: Path) -> list[str]:
    """Put back in float every quantized constant that is not a weighted layer's weights (a
    GELU's 0.5 or sqrt(2/pi), a Rescaling layer's scale): TensorRT's builder refuses them
    ("Quantized constant ... is only allowed before DQ"), ONNX Runtime's quantizer makes them
    for every Mul/Add with a constant input. The float value is the dequantized one, so the
    model computes the same; the file is rewritten only if there is one. Returns their names."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for n in graph.node:
        for index, i in enumerate(n.input):
            consumers.setdefault(i, []).append((n, index))
    folded: list[str] = []
    for node in list(graph.node):
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        uses = consumers.get(node.output[0], [])
        if uses and all(_WEIGHT_SLOTS.get(n.op_type) == index for n, index in uses):
            continue
        q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        zero = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32) if len(node.input) > 2 else 0.0
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and q.ndim > 0:  # per channel: scales along `axis`
            shape = [1] * q.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), np.reshape(zero, shape) if np.ndim(zero) else zero
        value = numpy_helper.from_array(((q - zero) * scale).astype(np.float32), node.output[0])
        graph.initializer.append(value)
        graph.node.remove(node)
        folded.append(node.output[0])
    if folded:
        used: set[str] = set()

        def reads(g: Any) -> None:  # loop and branch bodies read outer initializers too
            for n in g.node:
                used.update(n.input)
                for a in n.attribute:
                    for sub in ([a.g] if a.HasField("g") else list(a.graphs)):
                        reads(sub)

        reads(graph)
        for t in [t for t in graph.initializer if t.name not in used]:
            graph.initializer.remove(t)
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as e:
            raise ExportError(f"{path}: folding int8 constants made an invalid model ({str(e).splitlines()[0]})") from e
        onnx.save(model, str(path))
    return folded


def integer_paths(fp32: Path) -> list[str]:
    """Nodes int8 must leave alone: embedding lookups (a Gather whose indices are integers:
    quantizing the table or its rows buys nothing and costs every token's vector), whatever
    computes on integer inputs before they meet the activations (a mask cast to float and
    broadcast), the node where they meet, and a softmax fed from there: an attention mask's
    fill value (-1e9 where masked) would set its input's int8 scale, rounding every real logit
    to 0 (OpenVINO ran a tiny BERT's TensorRT-form int8 at cosine 0.66 against fp32 that way)."""
    import onnx

    graph = onnx.load(str(fp32), load_external_data=False).graph
    constants = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    integer = {i.name for i in graph.input if i.type.tensor_type.elem_type not in FLOAT_ELEM_TYPES}
    derived = set(integer)  # tensors computed from integer inputs (and constants) only
    met: set[str] = set()  # outputs of nodes where they meet the activations (masked tensors)
    keep: list[str] = []
    for node in graph.node:  # ONNX nodes are in topological order
        inputs = [i for i in node.input if i]
        if node.op_type == "Shape" or all(i in constants for i in inputs):
            constants.update(node.output)  # static: made of constants and shapes, not of values
            continue
        if any(i in met for i in inputs) and node.op_type in _AFTER_MASK:
            keep.append(node.name)
            if node.op_type not in ("Softmax", "LogSoftmax"):
                met.update(node.output)
            continue
        if not any(i in derived for i in inputs):
            continue
        keep.append(node.name)
        if node.op_type == "Gather" and len(inputs) > 1 and inputs[1] in derived:
            continue  # a lookup: its output is an activation, the integer path ends
        if all(i in derived or i in constants for i in inputs):
            derived.update(node.output)  # still mask/index arithmetic: follow it
        else:
            met.update(node.output)
    return keep + [n for n in detection_head(graph) if n not in keep]


def detection_head(graph: Any) -> list[str]:
    """The nodes between the last weighted layers and a non-maximum suppression (box decoding,
    score sigmoid), and the NMS's own: which boxes survive is a hard decision on small score
    differences, so int8 there changes which detections come out, not just their digits (a
    tiny detector's classes went to cosine 0 in OpenVINO's int8 with them quantized)."""
    producers = {o: n for n in graph.node for o in n.output}
    head: list[str] = []
    frontier = [i for n in graph.node if n.op_type == "NonMaxSuppression" for i in n.input]
    head += [n.name for n in graph.node if n.op_type == "NonMaxSuppression"]
    while frontier:
        node = producers.get(frontier.pop())
        if node is None or node.name in head or node.op_type in _WEIGHT_SLOTS:
            continue
        head.append(node.name)
        frontier.extend(node.input)
    return head


# Ops between an additive attention mask and the softmax it is for.
_AFTER_MASK = {"Add", "Sub", "Mul", "Where", "Softmax", "LogSoftmax", "Reshape", "Transpose"}
