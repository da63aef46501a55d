"""Input data: the synthetic Criteo-like stream, streaming readers of real click logs, metrics.

numpy only (no jax import), so data loading can run anywhere.

* :mod:`.synthetic`: the spec-v1 synthetic stream (:class:`SyntheticCriteo`).
* :mod:`.criteo`: raw Criteo TSV / header CSV reader, and the streaming
  machinery shared by all readers (:class:`Batch`, :class:`ReaderStats`).
* :mod:`.csv_layouts`: Avazu and Taobao-ad CSV readers.
* :mod:`.metrics`: ``auc`` and ``logloss``.

Everything models and experiments use is exported here; ``preprocess_dense``
is the Criteo reader's (``log1p`` of the dense values clamped at 0).
"""

from .criteo import (Batch, BatchIterator, CriteoFormatError, DataFormatError, FeatureNames,
                     ReaderStats, iter_batches, missing_id, preprocess_dense, resolve_files)
from .csv_layouts import iter_avazu_batches, iter_taobao_batches
from .metrics import auc, logloss
from .synthetic import (CRITEO_KAGGLE_VOCAB, EVAL, NUM_SPARSE, SPEC_VERSION, TRAIN, SyntheticConfig,
                        SyntheticCriteo, default_vocab_sizes, zipf_ranks)

__all__ = [
    "Batch", "BatchIterator", "CRITEO_KAGGLE_VOCAB", "CriteoFormatError", "DataFormatError", "EVAL",
    "FeatureNames", "NUM_SPARSE", "ReaderStats", "SPEC_VERSION", "SyntheticConfig",
    "SyntheticCriteo", "TRAIN", "auc", "default_vocab_sizes", "iter_avazu_batches",
    "iter_batches", "iter_taobao_batches", "logloss", "missing_id", "preprocess_dense",
    "resolve_files", "zipf_ranks",
]
