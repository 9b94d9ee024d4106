from __future__ import annotations

from pathlib import Path

import pytest

from harness.artifacts import ArtifactStore, atomic_write_bytes


def _writer(content: bytes, calls: list[int]):  # type: ignore[no-untyped-def]
    def build(tmp: Path) -> dict:
        calls.append(1)
        (tmp / "a.bin").write_bytes(content)
        return {"size": len(content)}

    return build


def test_reuses_matching_key_and_rebuilds_other_key(tmp_path: Path) -> None:
    store, calls = ArtifactStore(tmp_path), []
    first = store.get_or_build("k", "m", "key1", _writer(b"one", calls))
    again = store.get_or_build("k", "m", "key1", _writer(b"one", calls))
    other = store.get_or_build("k", "m", "key2", _writer(b"two", calls))
    assert (first.reused, again.reused, other.reused) == (False, True, False)
    assert len(calls) == 2
    assert other.file("a.bin").read_bytes() == b"two"


def test_rebuild_flag_forces_a_build(tmp_path: Path) -> None:
    store, calls = ArtifactStore(tmp_path), []
    store.get_or_build("k", "m", "key", _writer(b"x", calls))
    assert not store.get_or_build("k", "m", "key", _writer(b"x", calls), rebuild=True).reused
    assert len(calls) == 2


def test_truncated_file_is_rebuilt_with_a_warning(tmp_path: Path) -> None:
    store, calls = ArtifactStore(tmp_path), []
    entry = store.get_or_build("k", "m", "key", _writer(b"complete", calls))
    entry.file("a.bin").write_bytes(b"comp")
    with pytest.warns(UserWarning, match="a.bin changed since it was built"):
        again = store.get_or_build("k", "m", "key", _writer(b"complete", calls))
    assert not again.reused and again.file("a.bin").read_bytes() == b"complete"


def test_failed_build_leaves_nothing_and_keeps_the_old_entry(tmp_path: Path) -> None:
    store, calls = ArtifactStore(tmp_path), []
    old = store.get_or_build("k", "m", "key1", _writer(b"old", calls))

    def broken(tmp: Path) -> dict:
        (tmp / "a.bin").write_bytes(b"half")
        raise RuntimeError("export crashed")

    with pytest.raises(RuntimeError):
        store.get_or_build("k", "m", "key2", broken)
    assert not store.entry_dir("k", "m", "key2").exists()
    assert old.file("a.bin").read_bytes() == b"old"
    leftovers = [p.name for p in (tmp_path / "k").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_entry_without_meta_is_not_trusted(tmp_path: Path) -> None:
    store, calls = ArtifactStore(tmp_path), []
    half = store.entry_dir("k", "m", "key")
    half.mkdir(parents=True)
    (half / "a.bin").write_bytes(b"half-written by a killed run")
    entry = store.get_or_build("k", "m", "key", _writer(b"good", calls))
    assert not entry.reused and entry.file("a.bin").read_bytes() == b"good"


def test_atomic_write_keeps_old_content_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic_write_bytes(target, b"old")

    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]
