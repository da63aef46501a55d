"""Thin `jax.ffi.ffi_call` wrappers around the native custom calls.

Every table-mutating op takes the table arrays and returns them aliased
(`input_output_aliases`), so under `jit` with the state donated the update is
in place. Shapes and static attributes are checked here, before dispatch;
value-dependent problems come back as status outputs (see errors.py). These
wrappers are internal: the public API is in table.py.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jax_hypereca import _native  # noqa: F401  (registers the targets)
from jax_hypereca._native import CONSTANTS

I64 = jnp.int64
I32 = jnp.int32
F32 = jnp.float32

NUM_INSERT_STATUS = CONSTANTS["NUM_INSERT_STATUS"]
NUM_APPLY_STATUS = CONSTANTS["NUM_APPLY_STATUS"]


def ids_array(x, *, where: str = "ids", flat: bool = False) -> jax.Array:
    """int64 ids (plain jnp.asarray would narrow to int32 without
    jax_enable_x64). Refuses what would be stored as another id: non-integer
    dtypes (1.5 would become 1), uint64 ids >= 2**63 (they would wrap to
    negative ids; 2**64-1 to the padding id), and with `flat` (what the table
    ops take) shapes other than (n,)."""
    if not hasattr(x, "dtype"):
        x = np.asarray(x)
    dtype = np.dtype(x.dtype)
    if dtype.kind not in "iu":
        raise TypeError(f"{where} must be integers (int64 ids), got dtype {dtype}; "
                        f"convert them with ids.astype(np.int64) if the values are whole")
    if flat and np.ndim(x) != 1:
        raise ValueError(f"{where} must be 1-D (n,), got shape {tuple(np.shape(x))}; "
                         f"flatten them with ids.reshape(-1)")
    if dtype == np.uint64:
        if isinstance(x, jax.core.Tracer):
            raise TypeError(f"{where}: uint64 ids under jit cannot be checked for values "
                            f">= 2**63; pass int64 ids")
        big = np.asarray(x) >= np.uint64(1 << 63)
        if big.any():
            i = int(np.flatnonzero(big)[0])
            raise ValueError(f"{where}[{i}] = {np.asarray(x)[i]} does not fit int64 (ids are "
                             f"int64; map larger ids into that range, e.g. with mix64)")
    if isinstance(x, np.ndarray):  # on the host: jnp.asarray narrows uint64 to 32 bits
        x = x.astype(np.int64, copy=False)
    return jnp.asarray(x, dtype=I64)


_INT32_MAX = int(np.iinfo(np.int32).max)
_INT64 = np.iinfo(np.int64)


def slots_array(x, *, where: str = "slots") -> jax.Array:
    """int32 slots (n,). Refuses non-integer dtypes (0.5 would become slot 0),
    shapes other than (n,), and concrete values outside int32 (an int64 slot
    2**32 + 5 would wrap to slot 5, another row). Slots below -1 or past the
    table are the op's business (counted, see gather)."""
    if not hasattr(x, "dtype"):
        x = np.asarray(x)
    dtype = np.dtype(x.dtype)
    if dtype.kind not in "iu":
        raise TypeError(f"{where} must be integers (int32 slots, as find_or_insert and "
                        f"find_slots return them), got dtype {dtype}")
    if np.ndim(x) != 1:
        raise ValueError(f"{where} must be 1-D (n,), got shape {tuple(np.shape(x))}; "
                         f"flatten them with slots.reshape(-1)")
    if dtype.itemsize >= 4 and dtype != np.int32 and not isinstance(x, jax.core.Tracer):
        host = np.asarray(x)
        big = host > _INT32_MAX if dtype.kind == "u" else \
            (host > _INT32_MAX) | (host < -_INT32_MAX - 1)
        if big.any():
            i = int(np.flatnonzero(big)[0])
            raise ValueError(f"{where}[{i}] = {host[i]} does not fit int32 (slots index a "
                             f"table's rows; pass the slots find_or_insert returned)")
    return jnp.asarray(x, I32)


def check_int(value, *, where: str, low: int = int(_INT64.min), high: int = int(_INT64.max),
              traced_ok: bool = False) -> None:
    """`value` is an integer (Python or numpy, 0-d integer array; not a bool or
    a float) in [low, high]; a tracer passes when `traced_ok`."""
    if traced_ok and isinstance(value, jax.core.Tracer):
        return
    if isinstance(value, (jax.Array, np.ndarray)) and np.ndim(value) == 0 \
            and np.dtype(value.dtype).kind in "iu":
        value = int(value)
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where} must be an integer, got {value!r} "
                        f"({type(value).__name__})")
    if not low <= int(value) <= high:
        raise ValueError(f"{where} must be in [{low}, {high}], got {value}")


def _sds(shape, dtype) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(shape), dtype)


def _table_sds(keys, values, opt, last, freq, counters):
    return [_sds(a.shape, a.dtype) for a in (keys, values, opt, last, freq, counters)]


class InsertOutputs(NamedTuple):
    """Everything find_or_insert returns besides the updated table."""

    slots: jax.Array            # (n,) int32, -1 for padding, reserved or refused
    found: jax.Array            # (n,) bool, resident before the call
    evicted_keys: jax.Array     # (E,) int64, EMPTY_KEY past the count (others unspecified)
    evicted_values: jax.Array   # (E, dim)
    evicted_state: jax.Array    # (E, K) float32
    evicted_last_step: jax.Array  # (E,) int64
    evicted_freq: jax.Array     # (E,) int64
    status: jax.Array           # (8,) int64, see CONSTANTS["INSERT_STATUS"]


def find_or_insert(table, query, step, pin_from, opt_init, *, seed: int, init_kind: int,
                   init_scale: float, policy: int, bucket_size: int, max_evictions: int):
    keys, values, opt, last, freq, counters = table
    n = query.shape[0]
    dim, width = values.shape[1], opt.shape[1]
    out = _table_sds(*table) + [
        _sds((n,), I32), _sds((n,), jnp.bool_),
        _sds((max_evictions,), I64), _sds((max_evictions, dim), values.dtype),
        _sds((max_evictions, width), F32), _sds((max_evictions,), I64),
        _sds((max_evictions,), I64), _sds((NUM_INSERT_STATUS,), I64)]
    res = jax.ffi.ffi_call("hypereca_find_or_insert", out,
                           input_output_aliases={i: i for i in range(6)})(
        keys, values, opt, last, freq, counters, ids_array(query, flat=True),
        jnp.asarray(step, I64), jnp.asarray(pin_from, I64), jnp.asarray(opt_init, F32),
        seed=np.int64(seed), init_kind=np.int32(init_kind),
        init_scale=np.float32(init_scale), policy=np.int32(policy),
        bucket_size=np.int64(bucket_size))
    return tuple(res[:6]), InsertOutputs(*res[6:])


def find(keys, values, query, *, seed: int, init_kind: int, init_scale: float,
         bucket_size: int, miss_init: bool, with_rows: bool = True):
    n = query.shape[0]
    out = [_sds((n if with_rows else 0, values.shape[1]), values.dtype), _sds((n,), I32),
           _sds((n,), jnp.bool_)]
    return jax.ffi.ffi_call("hypereca_find", out)(
        keys, values, ids_array(query, flat=True), seed=np.int64(seed),
        init_kind=np.int32(init_kind),
        init_scale=np.float32(init_scale), bucket_size=np.int64(bucket_size),
        miss_init=bool(miss_init))


def gather(values, slots):
    """(rows (n, dim), bad_slots () int64): zeros for slot -1 and for the
    counted slots outside [-1, capacity)."""
    slots = slots_array(slots)
    out = [_sds((slots.shape[0], values.shape[1]), values.dtype), _sds((), I64)]
    rows, bad = jax.ffi.ffi_call("hypereca_gather", out)(values, slots)
    return rows, bad


def gather_tagged(tags, slots, tables):
    """rows[i] = tables[tags[i]][slots[i]] (zeros for tag or slot -1, and for
    a slot out of range, which is not counted: its only caller, lookup.py,
    passes slots find_or_insert just returned for that table, or -1)."""
    out = _sds((slots.shape[0], tables[0].shape[1]), tables[0].dtype)
    return jax.ffi.ffi_call("hypereca_gather_tagged", out)(
        jnp.asarray(tags, I32), jnp.asarray(slots, I32), *tables)


def apply_gradients(values, opt, counters, slots, grads, hparams, *, optimizer: int):
    slots = slots_array(slots)
    if not hasattr(grads, "dtype"):
        grads = np.asarray(grads)
    if np.dtype(grads.dtype).kind not in "fiu":
        raise TypeError(f"grads must be numbers (float32 rows), got dtype {grads.dtype}")
    want = (slots.shape[0], values.shape[1])
    if tuple(np.shape(grads)) != want:
        raise ValueError(f"grads must be (n, dim) = {want} for {want[0]} slots of a table of "
                         f"dim {want[1]}, got shape {tuple(np.shape(grads))}")
    out = [_sds(values.shape, values.dtype), _sds(opt.shape, F32),
           _sds(counters.shape, I64), _sds((NUM_APPLY_STATUS,), I64)]
    return jax.ffi.ffi_call("hypereca_apply_gradients", out,
                            input_output_aliases={0: 0, 1: 1, 2: 2})(
        values, opt, counters, slots, jnp.asarray(grads, F32),
        jnp.asarray(hparams, F32), optimizer=np.int32(optimizer))


def erase(keys, last, freq, counters, query, *, bucket_size: int):
    out = [_sds(a.shape, a.dtype) for a in (keys, last, freq, counters)]
    out.append(_sds((query.shape[0],), jnp.bool_))
    return jax.ffi.ffi_call("hypereca_erase", out,
                            input_output_aliases={0: 0, 1: 1, 2: 2, 3: 3})(
        keys, last, freq, counters, ids_array(query, flat=True),
        bucket_size=np.int64(bucket_size))


def erase_if(keys, last, freq, counters, threshold, *, bucket_size: int, mode: int,
             policy: int):
    out = [_sds(a.shape, a.dtype) for a in (keys, last, freq, counters)]
    out.append(_sds((), I64))
    return jax.ffi.ffi_call("hypereca_erase_if", out,
                            input_output_aliases={0: 0, 1: 1, 2: 2, 3: 3})(
        keys, last, freq, counters, jnp.asarray(threshold, I64),
        bucket_size=np.int64(bucket_size), mode=np.int32(mode), policy=np.int32(policy))


def export(keys, values, opt, last, freq, cursor, threshold, *, chunk: int, mode: int,
           policy: int):
    out = [_sds((chunk,), I64), _sds((chunk, values.shape[1]), values.dtype),
           _sds((chunk, opt.shape[1]), F32), _sds((chunk,), I64), _sds((chunk,), I64),
           _sds((2,), I64)]
    return jax.ffi.ffi_call("hypereca_export", out)(
        keys, values, opt, last, freq, jnp.asarray(cursor, I64), jnp.asarray(threshold, I64),
        mode=np.int32(mode), policy=np.int32(policy))


def import_rows(table, row_keys, row_values, row_state, row_last, row_freq, *,
                bucket_size: int):
    n = row_keys.shape[0]
    out = _table_sds(*table) + [_sds((n,), I32), _sds((4,), I64)]
    res = jax.ffi.ffi_call("hypereca_import_rows", out,
                           input_output_aliases={i: i for i in range(6)})(
        *table, ids_array(row_keys, flat=True), row_values, jnp.asarray(row_state, F32),
        jnp.asarray(row_last, I64), jnp.asarray(row_freq, I64),
        bucket_size=np.int64(bucket_size))
    return tuple(res[:6]), res[6], res[7]


def unique(keys):
    keys = ids_array(keys, flat=True)
    n = keys.shape[0]
    out = [_sds((n,), I64), _sds((n,), I32), _sds((), I32)]
    return jax.ffi.ffi_call("hypereca_unique", out)(keys)


def bucketize(keys, *, num_shards: int, capacity: int):
    keys = ids_array(keys, flat=True)
    check_int(num_shards, where="bucketize: num_shards", low=1, high=1 << 20)
    check_int(capacity, where="bucketize: capacity", low=1, high=1 << 30)
    n = keys.shape[0]
    out = [_sds((int(num_shards), int(capacity)), I64), _sds((int(num_shards),), I32),
           _sds((n,), I32)]
    return jax.ffi.ffi_call("hypereca_bucketize", out)(keys)
