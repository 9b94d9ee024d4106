"""KServe's own Python model server with the null engine of serving_compare.py (InceptionV3's
input and output, zeros for logits), for `serving_compare.py --kserve URL`.  Runs in an
environment with `kserve` installed (it is not a harness dependency):

    python -m venv /tmp/kvenv && /tmp/kvenv/bin/pip install kserve
    /tmp/kvenv/bin/python scripts/kserve_null.py --http_port 8090
"""

from __future__ import annotations

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server


class NullLogits(Model):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__("null")
        self.ready = True

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        image = payload.inputs[0].as_numpy()
        output = InferOutput("logits", [len(image), 1000], "FP32")
        output.set_data_from_numpy(np.zeros((len(image), 1000), np.float32), binary_data=True)
        return InferResponse(payload.id or "", self.name, [output])


if __name__ == "__main__":
    args, _ = model_server.parser.parse_known_args()
    ModelServer(http_port=args.http_port, enable_grpc=False, workers=1, enable_latency_logging=False).start([NullLogits()])
