"""Input data: the synthetic Criteo-like stream, streaming readers of real click logs, metrics.

numpy only (no jax import), so data loading can run anywhere.

* :mod:`.synthetic`: the spec-v1 synthetic stream (:class:`SyntheticCriteo`).
* :mod:`.criteo`: raw Criteo TSV / header CSV reader, and the streaming
  machinery shared by all readers (:class:`Batch`, :class:`ReaderStats`).
* :mod:`.csv_layouts`: Avazu and Taobao-ad CSV readers.
* :mod:`.metrics`: ``auc`` and ``logloss``.
"""

from .criteo import (Batch, BatchIterator, CriteoFormatError, DataFormatError, FeatureNames,
                     ReaderStats, iter_batches, missing_id)
from .csv_layouts import iter_avazu_batches, iter_taobao_batches
from .metrics import auc, logloss
from .synthetic import EVAL, TRAIN, SyntheticConfig, SyntheticCriteo

__all__ = [
    "Batch", "BatchIterator", "CriteoFormatError", "DataFormatError", "EVAL", "FeatureNames",
    "ReaderStats", "SyntheticConfig", "SyntheticCriteo", "TRAIN", "auc", "iter_avazu_batches",
    "iter_batches", "iter_taobao_batches", "logloss", "missing_id",
]
