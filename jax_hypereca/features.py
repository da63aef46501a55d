"""Features: which table a sparse input looks up and how its ids are pooled,
plus the two input forms (padded ``[B, L]`` and ragged values + lengths).

Mirrors jax-tpu-embedding's ``FeatureSpec`` and TorchRec's KeyedJaggedTensor
where the concepts meet.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Mapping, NamedTuple

import numpy as np

from jax_hypereca.errors import PADDING_ID, check_ids


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeatureSpec:
    """A sparse input feature looked up in one table."""

    name: str
    """Unique feature name (the key of its ids in a batch)."""
    table: str
    """Name of the TableSpec it looks up; several features may share a table."""
    pooling: Literal["sum", "mean", "none"] = "sum"
    """How the ids of one sample combine: weighted sum, weighted mean (zeros
    for a sample with no ids), or none (one row per id, shape [B, L, dim])."""
    max_ids: int = 1
    """Ids per sample L (multi-hot); shorter samples are padded with PADDING_ID."""
    weighted: bool = False
    """Whether each id comes with a float weight (inputs then include weights)."""

    def __post_init__(self):
        if not self.name:
            raise ValueError("FeatureSpec.name must be non-empty")
        if self.pooling not in ("sum", "mean", "none"):
            raise ValueError(f"FeatureSpec {self.name!r}: pooling must be 'sum', 'mean' or "
                             f"'none', got {self.pooling!r}")
        if self.max_ids < 1:
            raise ValueError(f"FeatureSpec {self.name!r}: max_ids must be >= 1, got "
                             f"{self.max_ids}")


class Jagged(NamedTuple):
    """Ragged ids of one feature: sample i holds values[offsets[i]:offsets[i+1]]
    with offsets the cumulative lengths (TorchRec's KeyedJaggedTensor layout)."""

    values: np.ndarray             # (N,) int64 ids
    lengths: np.ndarray            # (B,) ids per sample
    weights: np.ndarray | None = None  # (N,) float32, or None


def jagged_to_padded(jagged: Jagged, max_ids: int, *, feature: str = "feature"
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """(ids [B, max_ids] padded with PADDING_ID, weights [B, max_ids] or None).

    Raises ValueError for negative lengths, lengths that do not add up to the
    number of values, or a sample longer than max_ids (with the sample index).
    """
    lengths = np.asarray(jagged.lengths)
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu":
        raise ValueError(f"{feature}: lengths must be a 1-D integer array")
    if (lengths < 0).any():
        i = int(np.flatnonzero(lengths < 0)[0])
        raise ValueError(f"{feature}: negative length {int(lengths[i])} for sample {i}")
    values = check_ids(jagged.values, where=f"{feature} values")
    if values.ndim != 1 or int(lengths.sum()) != values.shape[0]:
        raise ValueError(f"{feature}: lengths sum to {int(lengths.sum())} but there are "
                         f"{values.size} values")
    if lengths.size and int(lengths.max()) > max_ids:
        i = int(np.argmax(lengths))
        raise ValueError(f"{feature}: sample {i} has {int(lengths[i])} ids, more than "
                         f"max_ids={max_ids}; raise FeatureSpec.max_ids or truncate")
    b = lengths.shape[0]
    rows = np.repeat(np.arange(b), lengths)
    cols = np.arange(values.shape[0]) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    ids = np.full((b, max_ids), PADDING_ID, np.int64)
    ids[rows, cols] = values
    weights = None
    if jagged.weights is not None:
        w = np.asarray(jagged.weights, np.float32)
        if w.shape != values.shape:
            raise ValueError(f"{feature}: weights must match values, got {w.shape} vs "
                             f"{values.shape}")
        weights = np.zeros((b, max_ids), np.float32)
        weights[rows, cols] = w
    return ids, weights


def padded_ids(feature: FeatureSpec, ids) -> np.ndarray:
    """Checks host ids of one feature and returns them as int64 [B, max_ids]."""
    arr = check_ids(ids, where=f"feature {feature.name!r} ids")
    if arr.ndim == 1 and feature.max_ids == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != feature.max_ids:
        raise ValueError(f"feature {feature.name!r}: ids must have shape [B, {feature.max_ids}] "
                         f"(max_ids), got {list(arr.shape)}")
    return arr


def check_weights(feature: FeatureSpec, weights, shape) -> np.ndarray:
    """Checks host weights of a weighted feature: float, same shape as its ids."""
    if weights is None:
        raise ValueError(f"feature {feature.name!r} is weighted: give weights[{feature.name!r}]")
    w = np.asarray(weights, np.float32)
    if w.shape != tuple(shape):
        raise ValueError(f"feature {feature.name!r}: weights shape {list(w.shape)} != ids "
                         f"shape {list(shape)}")
    if not np.isfinite(w).all():
        raise ValueError(f"feature {feature.name!r}: weights must be finite")
    return w


def validate_features(features: Mapping[str, FeatureSpec], tables) -> None:
    """Every feature names a known table; names are unique."""
    for f in features.values():
        if f.table not in tables:
            raise ValueError(f"feature {f.name!r} names unknown table {f.table!r}; tables: "
                             f"{sorted(tables)}")
