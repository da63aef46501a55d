"""numpy twins of the native key hashing (ffi/include/hypereca/hash.h); numpy
only, no JAX.

`owner_of` is the one owner hash: the distributed layer, checkpoint
re-sharding and tests use it to know which shard holds a key, and the native
bucketize op computes the same function.
"""

from __future__ import annotations

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_BUCKET_SALT = np.uint64(0x42554B54)
_OWNER_SALT = np.uint64(0x4F574E52)
_INIT_SALT = np.uint64(0x494E4954)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def as_u64(x) -> np.ndarray:
    """Reinterprets int64 values (or uint64 bit patterns) as uint64."""
    x = np.asarray(x)
    return x if x.dtype == np.uint64 else x.astype(np.int64).view(np.uint64)


def mix64(x) -> np.ndarray:
    """splitmix64's finalizer on uint64 values (wrapping arithmetic); a scalar
    or an array in, a uint64 array of the same shape out."""
    x = np.array(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= _M1
        x ^= x >> np.uint64(27)
        x *= _M2
        x ^= x >> np.uint64(31)
    return x


def _salted(keys, salt: np.uint64) -> np.ndarray:
    with np.errstate(over="ignore"):
        return mix64(as_u64(keys).reshape(-1) ^ (salt * GOLDEN))


def _fast_range32(h: np.ndarray, n: int) -> np.ndarray:
    return ((h >> np.uint64(32)) * np.uint64(n)) >> np.uint64(32)


def owner_of(keys, num_shards: int) -> np.ndarray:
    """Owner shard of each int64 key (int32 array of the keys' shape)."""
    keys = np.asarray(keys, dtype=np.int64)
    h = _salted(keys, _OWNER_SALT)
    return _fast_range32(h, num_shards).astype(np.int32).reshape(keys.shape)


def bucket_of(keys, num_buckets: int) -> np.ndarray:
    """Bucket of each key in a shard with `num_buckets` buckets."""
    keys = np.asarray(keys, dtype=np.int64)
    h = _salted(keys, _BUCKET_SALT)
    return _fast_range32(h, num_buckets).astype(np.int64).reshape(keys.shape)
