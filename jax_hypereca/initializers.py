"""Row initializers: a row's initial value is a pure function of (table seed,
key, column), never of insertion order, shard or device, so any configuration
can be compared with a single-device dense reference and any row recomputed.

`init_rows` is the bit-exact numpy twin of ffi/include/hypereca/init.h.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np

from jax_hypereca._native import CONSTANTS
from jax_hypereca.hashing import GOLDEN, _INIT_SALT, as_u64, mix64

_KINDS: dict[str, int] = dict(CONSTANTS["INIT_KINDS"])  # InitKind (enums.h)
_NORMAL_SALT = np.uint64(0x4E4F524D)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Initializer:
    """How a new row is filled.

    Attributes:
      kind: ``"uniform"`` draws U[-scale, scale) with 24-bit resolution;
        ``"normal"`` draws scale times an Irwin-Hall(12) variate (sum of 12
        uniforms minus 6: mean 0, standard deviation 1, bounded by ±6), which
        is bit-exact on every platform unlike a transcendental normal;
        ``"constant"`` sets every element to ``scale``.
      scale: half-width (uniform), standard deviation (normal) or value
        (constant).
    """

    kind: Literal["uniform", "normal", "constant"] = "uniform"
    scale: float = 0.05

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"Initializer.kind must be one of {sorted(_KINDS)}, got {self.kind!r}")
        if not math.isfinite(self.scale):
            raise ValueError(f"Initializer.scale must be finite, got {self.scale!r}")

    @property
    def code(self) -> int:
        return _KINDS[self.kind]


def uniform(scale: float) -> Initializer:
    """U[-scale, scale)."""
    return Initializer(kind="uniform", scale=scale)


def normal(stddev: float) -> Initializer:
    """Bounded approximate normal with the given standard deviation."""
    return Initializer(kind="normal", scale=stddev)


def constant(value: float) -> Initializer:
    """Every element equal to `value` (zeros: ``constant(0.0)``)."""
    return Initializer(kind="constant", scale=value)


def default_initializer(dim: int) -> Initializer:
    """U[-1/sqrt(dim), 1/sqrt(dim)): unit-scale dot products at any dim."""
    return uniform(float(np.float32(1.0 / math.sqrt(dim))))


def row_seeds(seed: int, keys) -> np.ndarray:
    """Per-key seeds: Mix64(Mix64(seed ^ INIT_SALT*GOLDEN) ^ key)."""
    with np.errstate(over="ignore"):
        s = mix64(np.uint64(seed % (1 << 64)) ^ (_INIT_SALT * GOLDEN))
        return mix64(s ^ as_u64(keys).reshape(-1))


def _draw24(row_seed: np.ndarray, counter: np.ndarray, salt: np.uint64 | None) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = row_seed[:, None] + counter[None, :] * GOLDEN
        if salt is not None:
            x = x ^ salt
        return (mix64(x) >> np.uint64(40)).astype(np.int64)


def init_rows(seed: int, keys, dim: int, init: Initializer,
              dtype=np.float32) -> np.ndarray:
    """Initial rows of `keys` (any shape) -> keys.shape + (dim,), bit-exact with
    the native ops for float32 and bfloat16 storage."""
    keys = np.asarray(keys, dtype=np.int64)
    flat = keys.reshape(-1)
    scale = np.float32(init.scale)
    if init.kind == "constant":
        out = np.full((flat.size, dim), scale, np.float32)
    else:
        rs = row_seeds(seed, flat)
        cols = np.arange(dim, dtype=np.uint64)
        if init.kind == "uniform":
            k = _draw24(rs, cols + np.uint64(1), None) - (1 << 23)
            out = k.astype(np.float32) * np.float32(scale * np.float32(2.0 ** -23))
        else:
            total = np.zeros((flat.size, dim), np.int64)
            for j in range(12):
                total += _draw24(rs, cols * np.uint64(12) + np.uint64(j + 1), _NORMAL_SALT)
            total -= 6 << 24
            out = total.astype(np.float32) * np.float32(scale * np.float32(2.0 ** -24))
    out = out.astype(np.dtype(dtype)) if np.dtype(dtype) != np.float32 else out
    return out.reshape(keys.shape + (dim,))


__all__ = ["Initializer", "uniform", "normal", "constant", "default_initializer", "init_rows"]
