"""TF1 meta-graph checkpoint (PREFIX.meta, PREFIX.index, PREFIX.data-*): restore, then
freeze variables into constants — the "persist the model" step of the classic recipe."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.artifacts import digest_files, digest_json
from harness.errors import ModelSourceError
from harness.sources import Frozen
from harness.sources.graph import check_nodes, spec_of_graph, with_dynamic_batch
from harness.spec import InputArg
from harness.tfimport import import_tensorflow

_SHARD_RE = re.compile(r"\.data-(\d+)-of-(\d+)$")


def prefix_of(path: Path) -> Path:
    return path.with_suffix("") if path.suffix in (".meta", ".index") else path


def is_checkpoint_prefix(path: Path) -> bool:
    prefix = prefix_of(path)
    return any(Path(f"{prefix}{ext}").exists() for ext in (".meta", ".index"))


def checkpoint_files(prefix: Path) -> list[Path]:
    """The checkpoint's files, or a ModelSourceError naming the missing one."""
    meta, index = Path(f"{prefix}.meta"), Path(f"{prefix}.index")
    for p, what in ((meta, "meta graph"), (index, "variable index")):
        if not p.is_file():
            raise ModelSourceError(f"{p}: missing {what} of checkpoint {prefix}; a TF1 checkpoint needs "
                                   f"{prefix}.meta, {prefix}.index and {prefix}.data-*")
    shards = sorted(prefix.parent.glob(f"{prefix.name}.data-*"))
    if not shards:
        raise ModelSourceError(f"{prefix}.data-00000-of-00001: missing; the checkpoint has no variable data shard")
    counts = {int(m.group(2)) for s in shards if (m := _SHARD_RE.search(s.name))}
    for total in counts:
        for i in range(total):
            shard = Path(f"{prefix}.data-{i:05d}-of-{total:05d}")
            if not shard.is_file():
                raise ModelSourceError(f"{shard}: missing shard {i + 1} of {total} of checkpoint {prefix}")
    return [meta, index, *shards]


@dataclass(frozen=True)
class CheckpointSource:
    prefix: Path
    inputs: tuple[InputArg, ...]
    outputs: tuple[str, ...]
    kind: str = "tf1-checkpoint"

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", prefix_of(Path(self.prefix)))

    @property
    def name(self) -> str:
        return self.prefix.name

    def key(self) -> str:
        files = checkpoint_files(self.prefix)
        return digest_json([self.kind, digest_files(files), [str(i) for i in self.inputs], list(self.outputs)])

    def freeze(self) -> Frozen:
        tf = import_tensorflow()
        checkpoint_files(self.prefix)
        where = str(self.prefix)
        graph = tf.Graph()
        with graph.as_default():
            try:
                saver = tf.compat.v1.train.import_meta_graph(f"{self.prefix}.meta", clear_devices=True)
            except Exception as e:  # protobuf and TF raise several types for a bad file
                raise ModelSourceError(f"{self.prefix}.meta: cannot import the meta graph ({e})") from e
            graph_def = graph.as_graph_def()
            check_nodes(graph_def, self.inputs, self.outputs, where)
            with tf.compat.v1.Session(graph=graph) as sess:
                try:
                    saver.restore(sess, str(self.prefix))
                except tf.errors.OpError as e:
                    raise ModelSourceError(f"{self.prefix}: cannot restore the variables ({e.message.splitlines()[0]})") from e
                frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
                    sess, graph_def, [o.split(":")[0] for o in self.outputs]
                )
        frozen = with_dynamic_batch(frozen, self.inputs, where)
        spec = spec_of_graph(frozen, self.name, self.inputs, self.outputs, {"source": self.kind, "path": where})
        return Frozen(frozen.SerializeToString(deterministic=True), spec)
