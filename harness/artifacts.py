"""Content-addressed artifact cache.

An entry is a directory `ROOT/KIND/NAME-KEY/` holding the artifact files and `meta.json`.
It is built in a temporary sibling directory and renamed into place, under a file lock,
so an interrupted or parallel build never leaves a half-written entry that a later run
trusts: an entry without a readable `meta.json` whose key matches is rebuilt, and one whose
files no longer match the digests recorded in `meta.json` (truncated, edited) is rebuilt
with a warning."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_ROOT = Path(".harness")
META = "meta.json"


def digest_bytes(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(hashlib.sha256(c).digest())
    return h.hexdigest()


def digest_json(obj: Any) -> str:
    return digest_bytes(json.dumps(obj, sort_keys=True, default=str).encode())


def digest_files(paths: Iterable[Path], root: Path | None = None) -> str:
    """Digest of file contents and their names relative to `root` (for directories)."""
    h = hashlib.sha256()
    for p in sorted(paths):
        rel = str(p.relative_to(root)) if root else p.name
        h.update(rel.encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache or golden file is not
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


@contextlib.contextmanager
def building_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `final` only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive lock shared by processes (pytest-xdist workers, parallel CLI runs)."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        yield


@dataclass(frozen=True)
class Entry:
    path: Path
    meta: Mapping[str, Any]
    reused: bool

    def file(self, name: str) -> Path:
        return self.path / name


def read_meta(entry_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((entry_dir / META).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class ArtifactStore:
    def __init__(self, root: Path = DEFAULT_ROOT) -> None:
        self.root = Path(root)

    def entry_dir(self, kind: str, name: str, key: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return self.root / kind / f"{safe}-{key[:16]}"

    def get_or_build(
        self,
        kind: str,
        name: str,
        key: str,
        build: Callable[[Path], Mapping[str, Any]],
        *,
        rebuild: bool = False,
    ) -> Entry:
        """Reuse the entry whose meta records `key`, else run `build(tmpdir)` (which writes
        the files and returns extra metadata) and publish its directory atomically."""
        final = self.entry_dir(kind, name, key)
        with locked(final):
            meta = read_meta(final)
            if not rebuild and meta is not None and meta.get("key") == key:
                damaged = damaged_files(final, meta)
                if not damaged:
                    return Entry(final, meta, reused=True)
                warnings.warn(f"{final}: {', '.join(damaged)} changed since it was built; rebuilding", stacklevel=2)
            with building_dir(final) as tmp:
                extra = build(tmp)
                files = {p.name: file_digest(p) for p in sorted(tmp.iterdir()) if p.is_file()}
                meta = {"key": key, "kind": kind, "name": name, "files": files, **extra}
                atomic_write_json(tmp / META, meta)
            return Entry(final, meta, reused=False)


def damaged_files(entry_dir: Path, meta: Mapping[str, Any]) -> list[str]:
    """Files of an entry that are missing or whose content differs from the recorded digest."""
    recorded = meta.get("files")
    if not isinstance(recorded, dict) or not recorded:
        return [META]
    return [
        name for name, digest in recorded.items()
        if not (entry_dir / name).is_file() or file_digest(entry_dir / name) != digest
    ]
