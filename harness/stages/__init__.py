"""The pipeline, one stage a module, each keyed and cached through the artifact store:

    source --freeze.py--> frozen graph --export.py--> ONNX fp32 --variant.py--> fp16 / int8 ONNX
                                                            \\--calibrate.py--/          |
                                                                                   plan.py: TensorRT plan

A stage takes what the stage before it made (never what a later one makes) plus its own
options, and returns a small record of what it made; `harness.workspace.Workspace` only
wires them for one model request and remembers their results for its life."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

# A stage says what it is doing through this: a context manager that shows progress.
Step = Callable[[str], contextlib.AbstractContextManager[None]]


from harness.stages import calibrate, export, freeze, plan, variant

__all__ = ["Step", "calibrate", "export", "freeze", "plan", "variant"]
