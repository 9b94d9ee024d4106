"""A TF2 SavedModel directory; tensors are named by the signature's keys."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.artifacts import digest_files, digest_json
from harness.errors import ModelSourceError
from harness.sources import Frozen
from harness.sources.graph import freeze_concrete
from harness.tfimport import import_tensorflow


def is_saved_model(path: Path) -> bool:
    return path.is_dir() and ((path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file())


@dataclass(frozen=True)
class SavedModelSource:
    path: Path
    signature: str
    kind: str = "saved-model"

    @property
    def name(self) -> str:
        base = Path(self.path).resolve().name
        return base if self.signature == "serving_default" else f"{base}-{self.signature}"

    def key(self) -> str:
        root = Path(self.path)
        files = [p for p in root.rglob("*") if p.is_file()]
        return digest_json([self.kind, digest_files(files, root), self.signature])

    def freeze(self) -> Frozen:
        tf = import_tensorflow()
        try:
            loaded = tf.saved_model.load(str(self.path))
        except Exception as e:  # TF raises OSError, ValueError, OpError... for a bad directory
            raise ModelSourceError(f"{self.path}: cannot load the SavedModel ({str(e).splitlines()[0]})") from e
        signatures = dict(loaded.signatures)
        if self.signature not in signatures:
            raise ModelSourceError(
                f"{self.path}: no signature {self.signature!r}; it has {sorted(signatures)}; pick one with --signature NAME"
            )
        fn = signatures[self.signature]
        kwargs = fn.structured_input_signature[1]
        placeholders = [t for t in fn.inputs if t.dtype != tf.resource]
        # Signature placeholders are named after their keys; match by name, not by position.
        by_tensor = {f"{k}:0": k for k in kwargs}
        input_names = [by_tensor.get(t.name, t.name.split(":")[0]) for t in placeholders]
        outputs = fn.structured_outputs
        # Flat outputs of a dict come in sorted key order (tf.nest).
        output_names = sorted(outputs) if isinstance(outputs, dict) else [f"output_{i}" for i in range(len(fn.outputs))]
        return freeze_concrete(
            fn, self.name, input_names, output_names,
            {"source": self.kind, "path": str(self.path), "signature": self.signature},
        )
