"""The Open Inference Protocol (KServe v2 REST, what Triton speaks) for one model: request
decoding, validation against the model's spec, response encoding, and the binary-data
extension (JSON header of `Inference-Header-Content-Length` bytes, raw tensors after it),
which `tritonclient[http]` uses by default."""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from harness.errors import HarnessError, InputError
from harness.spec import ModelSpec

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}
HEADER_LENGTH = "Inference-Header-Content-Length"


class ProtocolError(HarnessError):
    """A request the server answers with 400 and this message."""


_NAMES = {d: name for name, d in DATATYPES.items()}


def datatype_of(dtype: str | np.dtype[Any]) -> str:
    d = np.dtype(dtype)
    try:
        return _NAMES[d]
    except KeyError:
        raise HarnessError(f"dtype {d} has no Open Inference Protocol datatype") from None


def model_metadata(spec: ModelSpec, name: str, platform: str) -> dict[str, Any]:
    def tensors(ts: Any) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": datatype_of(t.dtype), "shape": [-1 if d is None else d for d in t.shape]}
                for t in ts]

    return {"name": name, "versions": ["1"], "platform": platform,
            "inputs": tensors(spec.inputs), "outputs": tensors(spec.outputs)}


@dataclass(frozen=True)
class Request:
    id: str | None
    feed: dict[str, np.ndarray]
    outputs: tuple[str, ...]
    binary: frozenset[str]  # outputs to return as binary data

    @property
    def batch(self) -> int:
        return len(next(iter(self.feed.values())))


def _json_part(body: bytes | memoryview, header_length: str | None) -> tuple[Any, memoryview]:
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError as e:
            raise ProtocolError(f"{HEADER_LENGTH} {header_length!r} is not an integer") from e
        if not 0 < size <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} {size} is outside the body of {len(body)} bytes")
        head, rest = bytes(body[:size]), memoryview(body)[size:]  # the tensors are read in place, not copied
    else:
        head, rest = bytes(body), memoryview(b"")
    return _json(head), rest


def _json(head: bytes) -> Any:
    try:
        return json.loads(head)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(f"request body is not valid JSON ({e})") from e
    except RecursionError:
        raise ProtocolError("request body's JSON is nested too deeply") from None


def decode_request(body: bytes | memoryview, header_length: str | None, spec: ModelSpec) -> Request:
    doc, binary = _json_part(body, header_length)
    return _decode(doc, binary, spec)


def decode_split(head: bytes, binary: memoryview, spec: ModelSpec) -> Request:
    """A binary-data request whose JSON header and tensors were read into separate buffers
    (the tensors into shared memory the engine reads them from)."""
    return _decode(_json(head), binary, spec)


def _decode(doc: Any, binary: memoryview, spec: ModelSpec) -> Request:
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise ProtocolError('request must be a JSON object with a non-empty "inputs" list')
    by_name = {t.name: t for t in spec.inputs}
    feed: dict[str, np.ndarray] = {}
    offset = 0
    for item in doc["inputs"]:
        if not isinstance(item, dict):
            raise ProtocolError("each input must be an object with name, shape, datatype and data")
        name, shape, datatype = item.get("name"), item.get("shape"), item.get("datatype")
        if name not in by_name:
            raise ProtocolError(f"unknown input {name!r}; the model takes {spec.input_names}")
        if name in feed:
            raise ProtocolError(f"input {name!r} given twice")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                   for d in shape):
            raise ProtocolError(f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
        want = datatype_of(by_name[name].dtype)
        if datatype != want:
            raise ProtocolError(f"input {name!r}: datatype {datatype!r}, the model takes {want}")
        dtype = DATATYPES[want]
        count = math.prod(shape)
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size != count * dtype.itemsize:
                raise ProtocolError(f"input {name!r}: binary_data_size {size!r}, but shape {shape} of {want} "
                                    f"takes {count * dtype.itemsize} bytes")
            if offset + size > len(binary):
                raise ProtocolError(f"input {name!r}: binary data ends after {len(binary) - offset} of {size} bytes")
            array = np.frombuffer(binary, dtype=dtype, count=count, offset=offset).reshape(shape)
            offset += size
        else:
            if "data" not in item:
                raise ProtocolError(f"input {name!r}: no data (neither \"data\" nor binary_data_size)")
            try:
                array = np.asarray(item["data"], dtype=dtype)
            except (TypeError, ValueError) as e:
                raise ProtocolError(f"input {name!r}: data is not {want} values ({e})") from e
            if array.size != count:
                raise ProtocolError(f"input {name!r}: {array.size} values for shape {shape} ({count} needed)")
            array = array.reshape(shape)
        feed[name] = array
    if offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    try:
        feed = spec.check_feed(feed)
    except InputError as e:
        raise ProtocolError(str(e)) from e
    if any(len(v) == 0 for v in feed.values()):
        raise ProtocolError("empty batch: the first dimension must be at least 1")

    params = doc.get("parameters") or {}
    requested = doc.get("outputs")
    if requested is None:
        outputs = tuple(spec.output_names)
        binary_out = frozenset(outputs) if params.get("binary_data_output") else frozenset()
    else:
        if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
            raise ProtocolError('"outputs" must be a list of objects with a name')
        names = [o.get("name") for o in requested]
        unknown = [n for n in names if n not in spec.output_names]
        if unknown:
            raise ProtocolError(f"unknown output(s) {unknown}; the model gives {spec.output_names}")
        outputs = tuple(str(n) for n in names)
        binary_out = frozenset(str(o["name"]) for o in requested
                               if (o.get("parameters") or {}).get("binary_data", params.get("binary_data_output")))
    request_id = doc.get("id")
    return Request(None if request_id is None else str(request_id), feed, outputs, binary_out)


def encode_response(
    request: Request, outputs: Mapping[str, np.ndarray], model: str
) -> tuple[bytes, dict[str, str]]:
    """Body and extra headers; binary outputs go after the JSON header."""
    items, blobs = [], []
    for name in request.outputs:
        array = np.ascontiguousarray(outputs[name])
        item: dict[str, Any] = {"name": name, "datatype": datatype_of(array.dtype), "shape": list(array.shape)}
        if name in request.binary:
            raw = array.tobytes()
            item["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            item["data"] = array.ravel().tolist()
        items.append(item)
    doc: dict[str, Any] = {"model_name": model, "model_version": "1", "outputs": items}
    if request.id is not None:
        doc["id"] = request.id
    head = json.dumps(doc).encode()
    if not blobs:
        return head, {}
    return head + b"".join(blobs), {HEADER_LENGTH: str(len(head))}


class _Ready(Protocol):
    @property
    def ready(self) -> threading.Event: ...


class Serving(Protocol):
    """What a front end (HTTP, gRPC) needs of the server behind it: the server implements it, and
    the gRPC service is typed against it, so the two modules need not import each other."""

    model_name: str
    metadata: dict[str, Any]
    spec: ModelSpec
    max_body: int
    max_batch: int

    @property
    def worker(self) -> _Ready: ...

    def in_flight(self) -> contextlib.AbstractContextManager[list[int]]: ...

    def answer(self, request: Request) -> tuple[int, dict[str, Any] | None, str]: ...
