"""Batches for the models: the synthetic stream or Criteo files, sharded per
process, turned into the dict a collection step takes.

A batch is ``{"dense": [n, 13] float32 (log1p), "ids": {"C1": ids, ...},
"labels": [n] float32}`` with one-hot ids as [n] and multi-hot as [n, L]
int64. Multi-hot bags are expanded from the one-hot id the way MLPerf DLRMv2
materializes its synthetic multi-hot Criteo: a fixed bag per id (here the id
itself plus L - 1 ids hashed from it, so no lookup table is needed).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Iterator, Sequence

import numpy as np

from jax_hypereca import mix64
from jax_hypereca.data import (SPEC_VERSION, BatchIterator, ReaderStats, SyntheticConfig, SyntheticCriteo,
                               default_vocab_sizes, iter_batches, preprocess_dense, resolve_files)

# Salt of the hashed ids of multi-hot bags ("BAGS").
_BAG_SALT = 0x42414753


def expand_bags(ids: np.ndarray, feature: int, size: int) -> np.ndarray:
    """[n] one-hot ids -> [n, size] bags: the id, then size - 1 ids that are a
    fixed function of it (non-negative int64, so never a reserved id)."""
    if size == 1:
        return ids[:, None]
    k = np.arange(1, size, dtype=np.uint64)
    salt = mix64(np.uint64(_BAG_SALT) ^ np.uint64(feature))
    hashed = mix64(ids.astype(np.uint64)[:, None] ^ (salt + k)) >> np.uint64(1)
    return np.concatenate([ids[:, None], hashed.astype(np.int64)], axis=1)


def make_batch(dense: np.ndarray, ids: np.ndarray, labels: np.ndarray,
               names: Sequence[str], multi_hot: Sequence[int]) -> dict:
    """The model's batch from raw dense values, [n, F, 1] ids and labels."""
    out_ids = {}
    for f, (name, size) in enumerate(zip(names, multi_hot)):
        col = ids[:, f, 0]
        out_ids[name] = col if size == 1 else expand_bags(col, f, size)
    return {"dense": preprocess_dense(dense), "ids": out_ids, "labels": labels}


@dataclasses.dataclass
class SyntheticSource:
    """This process's share of the synthetic stream (spec v1).

    Global step s trains on samples [s B, (s + 1) B) of the TRAIN stream
    (process p of P takes its B / P slice), whatever the process count; the
    held-out set is samples [0, size) of the EVAL stream (on every process).
    """

    names: Sequence[str]
    multi_hot: Sequence[int]
    local_batch: int
    process: int = 0
    num_processes: int = 1
    seed: int = 0
    alpha: float = 1.05  # the stream's skew (spec: Zipf-like exponent)
    max_vocab: int = 1_000_000  # ids per feature (spec: the Terabyte sizes capped here)

    def __post_init__(self):
        self.gen = SyntheticCriteo(SyntheticConfig(
            seed=self.seed, alpha=self.alpha, vocab_sizes=default_vocab_sizes(self.max_vocab)))

    def describe(self) -> str:
        return f"synthetic Criteo-like stream (spec v{SPEC_VERSION}, seed {self.seed})"

    def train_batches(self, start_step: int) -> Iterator[dict]:
        """Batches of global steps start_step, start_step + 1, ..."""
        for dense, ids, labels in self.gen.iterate(self.local_batch, self.process,
                                                   self.num_processes, start_step):
            yield make_batch(dense, ids, labels, self.names, self.multi_hot)

    def eval_set(self, size: int) -> dict:
        """The whole held-out set of `size` samples."""
        dense, ids, labels = self.gen.eval_set(size)
        return make_batch(dense, ids, labels, self.names, self.multi_hot)

    def stats(self) -> dict[str, int]:
        return {}


@dataclasses.dataclass
class CriteoSource:
    """This process's share of Criteo files (raw TSV or header CSV, plain or
    gzip, a file or a directory of day files), streamed.

    Data line i belongs to process i mod P. Held out: the first lines of the
    eval files if given, else the first lines of the data (every process
    reads all of them; with P processes each skips its share, so they are
    never trained on). Training cycles over the remaining lines as often as
    the steps need.
    """

    path: str
    names: Sequence[str]
    multi_hot: Sequence[int]
    local_batch: int
    process: int = 0
    num_processes: int = 1
    on_bad_line: str = "skip"
    eval_path: str | None = None

    def __post_init__(self):
        resolve_files(self.path)  # a missing path fails here, before training
        if self.eval_path is not None:
            resolve_files(self.eval_path)
        self._held_out = 0
        self._readers: list[BatchIterator] = []  # still streaming
        self._finished = ReaderStats()           # totals of exhausted readers

    def describe(self) -> str:
        return f"Criteo files at {self.path}"

    def eval_set(self, size: int) -> dict:
        """The first `size` readable lines of the eval files, or of the data
        (then held out: `size` must be a multiple of the global batch)."""
        if self.eval_path is None:
            if size % (self.local_batch * self.num_processes):
                raise ValueError(f"the held-out set ({size} lines) must be a multiple of "
                                 f"the batch ({self.local_batch * self.num_processes})")
            self._held_out = size // self.num_processes
        path = self.eval_path or self.path
        reader = iter_batches(path, size, drop_remainder=True, on_error=self.on_bad_line)
        self._readers.append(reader)
        try:
            b = next(reader)
        except StopIteration:
            raise ValueError(f"{path}: fewer than {size} readable lines for the eval set; "
                             f"lower --eval-size") from None
        return make_batch(b.dense, b.ids, b.labels, self.names, self.multi_hot)

    def train_batches(self, start_step: int) -> Iterator[dict]:
        """Batches of steps start_step, ...: epochs over the training lines (the
        held-out lines skipped), the first start_step batches skipped."""
        return itertools.islice(self._epochs(), start_step, None)

    def _epochs(self) -> Iterator[dict]:
        while True:
            reader = iter_batches(self.path, self.local_batch, shard_index=self.process,
                                         num_shards=self.num_processes, drop_remainder=True,
                                         on_error=self.on_bad_line)
            self._readers.append(reader)
            count = 0
            for b in itertools.islice(reader, self._held_out // self.local_batch, None):
                count += 1
                yield make_batch(b.dense, b.ids, b.labels, self.names, self.multi_hot)
            self._finished = _sum_stats([self._finished, reader.stats])
            self._readers.remove(reader)
            if not count:
                raise ValueError(f"{self.path}: no full batch of {self.local_batch} lines per "
                                 f"process to train on; lower --batch")

    def stats(self) -> dict[str, int]:
        """Lines read and skipped (malformed) so far, counted on every pass."""
        return _sum_stats([self._finished] + [r.stats for r in self._readers]).as_metrics()


def _sum_stats(parts: Sequence[ReaderStats]) -> ReaderStats:
    """The counters of several readers added up."""
    return ReaderStats(lines_read=sum(p.lines_read for p in parts),
                              lines_skipped=sum(p.lines_skipped for p in parts),
                              bags_truncated=sum(p.bags_truncated for p in parts))
