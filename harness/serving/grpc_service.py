"""The Open Inference Protocol's gRPC service (`inference.GRPCInferenceService`, the one Triton
speaks), in front of the same batcher and engine worker as the HTTP endpoint, so
`tritonclient.grpc` works unchanged.  Built on the protocol's own generated stubs, which
`tritonclient[grpc]` ships; grpcio is imported only when the service is started.

Tensors travel as raw little-endian bytes (`raw_input_contents` / `raw_output_contents`, what
tritonclient sends and reads) or, for inputs, as typed `contents`."""

from __future__ import annotations

import math
from concurrent import futures
from typing import Any

import numpy as np

from harness import __version__
from harness.errors import BackendUnavailable, InputError
from harness.serving.protocol import DATATYPES, Request, Serving, datatype_of

# typed `contents` field of each datatype (InferTensorContents)
_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
             "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
             "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
             "FP64": "fp64_contents"}
# HTTP status the batcher reports -> gRPC status name
_STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 500: "INTERNAL", 503: "UNAVAILABLE"}


def _stubs() -> tuple[Any, Any, Any]:
    try:
        import grpc
        from tritonclient.grpc import service_pb2, service_pb2_grpc
    except ImportError as e:
        raise BackendUnavailable("grpc", f"the gRPC endpoint needs grpcio and tritonclient[grpc] ({e}); "
                                 "pip install 'tritonclient[grpc]'") from e
    return grpc, service_pb2, service_pb2_grpc


def start_grpc(app: Serving, host: str, port: int, threads: int = 64) -> tuple[Any, int]:
    """A started grpc.Server serving `app`, and the port it bound (`port` 0: a free one)."""
    grpc, pb, pb_grpc = _stubs()

    base: Any = pb_grpc.GRPCInferenceServiceServicer

    class Servicer(base):  # type: ignore[misc,valid-type]
        def ServerLive(self, request: Any, context: Any) -> Any:
            return pb.ServerLiveResponse(live=True)

        def ServerReady(self, request: Any, context: Any) -> Any:
            return pb.ServerReadyResponse(ready=app.worker.ready.is_set())

        def ModelReady(self, request: Any, context: Any) -> Any:
            return pb.ModelReadyResponse(ready=request.name == app.model_name and app.worker.ready.is_set())

        def ServerMetadata(self, request: Any, context: Any) -> Any:
            return pb.ServerMetadataResponse(name="harness", version=__version__, extensions=[])

        def ModelMetadata(self, request: Any, context: Any) -> Any:
            self._known(request.name, context)
            meta = app.metadata

            def tensors(ts: list[dict[str, Any]]) -> list[Any]:
                return [pb.ModelMetadataResponse.TensorMetadata(name=t["name"], datatype=t["datatype"],
                                                                shape=t["shape"]) for t in ts]

            return pb.ModelMetadataResponse(name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                                            inputs=tensors(meta["inputs"]), outputs=tensors(meta["outputs"]))

        def ModelInfer(self, request: Any, context: Any) -> Any:
            with app.in_flight() as outcome:  # counted like an HTTP request, rejections included
                outcome[0] = 404
                self._known(request.model_name, context)
                outcome[0] = 400
                try:
                    feed = decode(request, app)
                except InputError as e:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
                wanted = tuple(o.name for o in request.outputs) or tuple(app.spec.output_names)
                unknown = [o for o in wanted if o not in app.spec.output_names]
                if unknown:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"unknown output(s) {unknown}; the model returns {app.spec.output_names}")
                status, outputs, error = app.answer(Request(request.id or None, feed, wanted, frozenset(wanted)))
                outcome[0] = status
                if outputs is None:
                    context.abort(getattr(grpc.StatusCode, _STATUS.get(status, "INTERNAL")), error)
                    raise AssertionError("context.abort returned")  # it raises; this line is for the type checker
                response = pb.ModelInferResponse(model_name=app.model_name, model_version="1", id=request.id)
                for name in wanted:
                    array = np.ascontiguousarray(outputs[name])
                    response.outputs.add(name=name, datatype=datatype_of(array.dtype), shape=list(array.shape))
                    response.raw_output_contents.append(array.tobytes())
                return response

        @staticmethod
        def _known(name: str, context: Any) -> None:
            if name != app.model_name:
                context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {name!r}; this server serves {app.model_name!r}")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="harness-grpc"),
                         options=[("grpc.max_receive_message_length", app.max_body),
                                  ("grpc.max_send_message_length", app.max_body)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:  # recent grpcio raises where older ones returned 0
        bound = 0
    if bound == 0:
        raise BackendUnavailable("grpc", f"cannot listen on {host}:{port} for gRPC (in use?)")
    server.start()
    return server, bound


def decode(request: Any, app: Serving) -> dict[str, np.ndarray]:
    """The request's inputs as arrays, checked against the model (InputError naming the tensor)."""
    by_name = {t.name: t for t in app.spec.inputs}
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InputError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: give one per input")
    feed: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        if tensor.name not in by_name:
            raise InputError(f"unknown input {tensor.name!r}; the model takes {app.spec.input_names}")
        if tensor.name in feed:
            raise InputError(f"input {tensor.name!r} given twice")
        want = datatype_of(by_name[tensor.name].dtype)
        if tensor.datatype != want:
            raise InputError(f"input {tensor.name!r}: datatype {tensor.datatype!r}, the model takes {want}")
        dtype, shape = DATATYPES[want], tuple(tensor.shape)
        count = math.prod(shape)
        if raw:
            if len(raw[i]) != count * dtype.itemsize:
                raise InputError(f"input {tensor.name!r}: {len(raw[i])} bytes for shape {list(shape)} of {want} "
                                 f"({count * dtype.itemsize} expected)")
            array = np.frombuffer(raw[i], dtype.newbyteorder("<")).astype(dtype, copy=False)
        else:
            values = getattr(tensor.contents, _CONTENTS.get(want, ""), None)
            if values is None or len(values) != count:
                raise InputError(f"input {tensor.name!r}: {0 if values is None else len(values)} values in contents "
                                 f"for shape {list(shape)} ({count} expected)")
            array = np.asarray(values, dtype)
        feed[tensor.name] = array.reshape(shape)
    checked = app.spec.check_feed(feed)
    if next(iter(checked.values())).shape[0] > app.max_batch > 1:
        raise InputError(f"batch of {next(iter(checked.values())).shape[0]} is over the server's --dynamic-batch "
                         f"{app.max_batch}")
    return checked
