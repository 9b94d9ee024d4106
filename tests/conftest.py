from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.workspace import Workspace


@pytest.fixture
def tmp_workspace(tmp_path: Path) -> Workspace:
    """A workspace whose artifacts and goldens live in a temporary directory."""
    return Workspace(tmp_path / "artifacts", tmp_path / "golden", quiet=True)


@pytest.fixture(scope="session")
def user_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("tensorflow", reason="tensorflow not importable")
    from tests import models

    root = tmp_path_factory.mktemp("user_models")
    return {
        "checkpoint": models.write_tf1_checkpoint(root),
        "frozen_pb": models.write_frozen_pb(root),
        "saved_model": models.write_saved_model(root),
        "keras": models.write_keras(root),
        "h5": models.write_keras(root, name="model.h5"),
    }
