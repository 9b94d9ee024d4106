"""A Keras model file (.keras or legacy .h5)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.artifacts import digest_json, file_digest
from harness.errors import ModelSourceError
from harness.sources import Frozen
from harness.sources.graph import freeze_keras
from harness.tfimport import import_tensorflow


@dataclass(frozen=True)
class KerasSource:
    path: Path
    kind: str = "keras"

    @property
    def name(self) -> str:
        return Path(self.path).stem

    def key(self) -> str:
        if not Path(self.path).is_file():
            raise ModelSourceError(f"{self.path}: no such Keras file")
        return digest_json([self.kind, file_digest(Path(self.path))])

    def freeze(self) -> Frozen:
        import_tensorflow()
        import keras

        try:
            model = keras.models.load_model(self.path, compile=False)
        except Exception as e:  # Keras raises ValueError, OSError, zipfile errors...
            raise ModelSourceError(f"{self.path}: cannot load the Keras model ({str(e).splitlines()[0]})") from e
        return freeze_keras(model, self.name, {"source": self.kind, "path": str(self.path)})
