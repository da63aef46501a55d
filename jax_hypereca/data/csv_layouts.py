"""Streaming readers of the Avazu and Taobao-ad CSV layouts.

Both use the machinery of :mod:`jax_hypereca.data.criteo` (files, gzip,
directories, sharding, ``on_error``, :class:`ReaderStats`, :class:`Batch`).
Files are plain comma-separated text with a header line; quoted fields are not
supported (none occur in these data sets).

Categorical values, numeric or not, are hashed from their bytes with
:func:`hash_strings`, a stable 64-bit hash into ``[2**62, 2**63)``: never
negative (so never the table's -1/-2) and never equal to a missing id
(``missing_id(f) = 2**40 + f``, used for empty cells).  Because the hash does
not depend on the feature, the same value hashes the same in two features
(Taobao's ``adgroup_id`` and ``click_sequence`` items can share a table).
"""

from __future__ import annotations

import os

import numpy as np

from .criteo import (PAD_ID, Batch, BatchIterator, FeatureNames, Layout, RowError, missing_ids,
                     parse_labels, parse_numbers, stream_batches)
from .synthetic import mix64

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
HASH_BASE = 1 << 62

AVAZU_COLUMNS = (
    "id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category",
    "app_id", "app_domain", "app_category", "device_id", "device_ip", "device_model",
    "device_type", "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
)
AVAZU_CATEGORICAL = AVAZU_COLUMNS[2:]
HOUR_OF_DAY = "hour_of_day"

TAOBAO_COLUMNS = (
    "clk", "time_stamp", "userid", "adgroup_id", "pid", "cate_id", "campaign_id", "customer",
    "brand", "price", "cms_segid", "cms_group_id", "final_gender_code", "age_level",
    "pvalue_level", "shopping_level", "occupation", "new_user_class_level", "click_sequence",
)
TAOBAO_DENSE = ("price",)
TAOBAO_BAG = "click_sequence"
TAOBAO_CATEGORICAL = tuple(c for c in TAOBAO_COLUMNS[1:] if c not in TAOBAO_DENSE + (TAOBAO_BAG,))
SEQUENCE_SEPARATOR = b"^"

_AVAZU_COLUMN = {name: i for i, name in enumerate(AVAZU_COLUMNS)}
_TAOBAO_COLUMN = {name: i for i, name in enumerate(TAOBAO_COLUMNS)}


def hash_strings(values: np.ndarray) -> np.ndarray:
    """Stable int64 hash of each bytes value: ``2**62 | (mix64(fnv1a64(b)) >> 2)``.

    ``fnv1a64`` is 64-bit FNV-1a over the value's bytes; the splitmix64
    finalizer ``mix64`` spreads it over all bits.  Empty values hash too;
    callers map them to missing ids first.
    """
    values = np.asarray(values, dtype=np.bytes_)
    lengths = np.char.str_len(values)
    width = max(int(lengths.max(initial=0)), 1)
    codes = values.astype(f"S{width}", order="C").view(np.uint8).reshape(values.shape + (width,))
    h = np.full(values.shape, FNV_OFFSET, np.uint64)
    with np.errstate(over="ignore"):
        for pos in range(width):
            step = (h ^ codes[..., pos]) * np.uint64(FNV_PRIME)
            h = np.where(pos < lengths, step, h)
    return ((mix64(h) >> np.uint64(2)) | np.uint64(HASH_BASE)).astype(np.int64)


def hash_categorical(block: np.ndarray, first_feature: int = 0) -> np.ndarray:
    """int64 ids ``(n, k)`` of a bytes block: hashed values, empty -> ``missing_id(first_feature + column)``."""
    return np.where(block == b"", missing_ids(block.shape, first_feature), hash_strings(block))


def hour_of_day(column: np.ndarray) -> np.ndarray:
    """Hour of day 0..23 (int64) of Avazu ``hour`` values written ``YYMMDDHH``."""
    hours = parse_numbers(column[:, None], ("hour",), allow_missing=False)[:, 0]
    hh = hours % 100
    bad = (hours < 0) | (hh != np.floor(hh)) | (hh >= 24)
    if bad.any():
        raise RowError(f"hour: not YYMMDDHH: {column[bad][0].decode('utf-8', 'replace')!r}")
    return hh.astype(np.int64)


def avazu_layout(*, with_hour_of_day: bool = True) -> Layout:
    """The Avazu train layout; sparse features are every column but ``id`` and ``click``.

    With ``with_hour_of_day`` an extra last feature ``hour_of_day`` holds the
    raw hour 0..23 (not hashed).
    """
    sparse = AVAZU_CATEGORICAL + ((HOUR_OF_DAY,) if with_hour_of_day else ())

    def parse(fields: np.ndarray) -> tuple[Batch, int]:
        labels = parse_labels(fields[:, _AVAZU_COLUMN["click"]], "click")
        ids = hash_categorical(fields[:, _AVAZU_COLUMN["hour"]:])
        if with_hour_of_day:
            ids = np.concatenate([ids, hour_of_day(fields[:, _AVAZU_COLUMN["hour"]])[:, None]], axis=1)
        dense = np.zeros((len(fields), 0), np.float32)
        return Batch(dense, ids[:, :, None], labels), 0

    return Layout("avazu", AVAZU_COLUMNS, b",", True, FeatureNames(dense=(), sparse=sparse), parse)


def parse_sequences(column: np.ndarray, max_length: int) -> tuple[np.ndarray, int]:
    """Multi-hot ids ``(n, max_length)`` of ``^``-separated values, padded with ``PAD_ID``.

    Empty items are ignored.  Longer sequences keep their last ``max_length``
    items (the most recent, for a chronological click sequence); the second
    result counts the truncated rows.
    """
    items = [[v for v in cell.split(SEQUENCE_SEPARATOR) if v] for cell in column.tolist()]
    counts = np.array([len(row) for row in items], dtype=np.int64)
    truncated = int((counts > max_length).sum())
    kept = [row[-max_length:] for row in items]
    counts = np.minimum(counts, max_length)
    out = np.full((len(items), max_length), PAD_ID, np.int64)
    flat = [value for row in kept for value in row]
    if flat:
        rows = np.repeat(np.arange(len(items)), counts)
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        out[rows, np.arange(len(flat)) - starts] = hash_strings(np.array(flat, dtype=np.bytes_))
    return out, truncated



def taobao_layout(max_sequence_length: int) -> Layout:
    """The Taobao display-ad layout (FuxiCTR's joined CSV).

    Label ``clk``; dense ``price`` (raw, missing -> 0; apply
    ``criteo.preprocess_dense`` for log1p); bag ``click_sequence`` of at most
    ``max_sequence_length`` ids; every other column is a hashed categorical.
    """
    if max_sequence_length < 1:
        raise ValueError(f"max_sequence_length must be >= 1, got {max_sequence_length}")
    categorical = [_TAOBAO_COLUMN[name] for name in TAOBAO_CATEGORICAL]

    def parse(fields: np.ndarray) -> tuple[Batch, int]:
        labels = parse_labels(fields[:, _TAOBAO_COLUMN["clk"]], "clk")
        dense = parse_numbers(fields[:, [_TAOBAO_COLUMN["price"]]], TAOBAO_DENSE)
        ids = hash_categorical(fields[:, categorical])
        bag, truncated = parse_sequences(fields[:, _TAOBAO_COLUMN[TAOBAO_BAG]], max_sequence_length)
        return Batch(dense.astype(np.float32), ids[:, :, None], labels, {TAOBAO_BAG: bag}), truncated

    features = FeatureNames(dense=TAOBAO_DENSE, sparse=TAOBAO_CATEGORICAL, bags=(TAOBAO_BAG,))
    return Layout("taobao", TAOBAO_COLUMNS, b",", True, features, parse)


def iter_avazu_batches(path: str | os.PathLike, batch_size: int, *, with_hour_of_day: bool = True,
                       shard_index: int = 0, num_shards: int = 1, drop_remainder: bool = False,
                       on_error: str = "skip") -> BatchIterator:
    """Stream Avazu batches (see :func:`avazu_layout`); sharding and errors as ``criteo.iter_batches``."""
    return stream_batches(path, (avazu_layout(with_hour_of_day=with_hour_of_day),), batch_size,
                          shard_index=shard_index, num_shards=num_shards,
                          drop_remainder=drop_remainder, on_error=on_error)


def iter_taobao_batches(path: str | os.PathLike, batch_size: int, *, max_sequence_length: int,
                        shard_index: int = 0, num_shards: int = 1, drop_remainder: bool = False,
                        on_error: str = "skip") -> BatchIterator:
    """Stream Taobao batches (see :func:`taobao_layout`); sharding and errors as ``criteo.iter_batches``.

    ``stats.bags_truncated`` counts click sequences longer than ``max_sequence_length``.
    """
    return stream_batches(path, (taobao_layout(max_sequence_length),), batch_size,
                          shard_index=shard_index, num_shards=num_shards,
                          drop_remainder=drop_remainder, on_error=on_error)
