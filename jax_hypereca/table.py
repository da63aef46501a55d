"""One embedding table shard: its spec, its state (a pytree of plain arrays)
and the functional ops on it.

The state is ordinary JAX arrays, passed into the custom calls and aliased
back out; call the mutating functions inside `jit` with the state donated and
the update is in place; their status outputs are the caller's to check
(errors.raise_for_insert_status / raise_for_apply_status).

Table format (fixed for every platform): ``keys[C]`` int64 with
``EMPTY_KEY`` (-1, also the padding id) for never-used slots and
``ERASED_KEY`` (-2) for tombstones; ``values[C, dim]`` float32 or bfloat16;
``opt_state[C, K]`` float32 beside the row; ``last_step[C]`` and ``freq[C]``
int64 scores; ``counters[16]`` int64 (see ``COUNTER_NAMES``). Slots are grouped
in buckets of ``bucket_size``; a key lives in one bucket.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import Any, Iterator, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jax_hypereca import _ops
from jax_hypereca._native import CONSTANTS
from jax_hypereca.errors import (
    EMPTY_KEY, ERASED_KEY, PADDING_ID, TableFullError, apply_status_dict, check_ids,
    insert_status_dict, raise_for_apply_status, raise_for_gather_status,
    raise_for_insert_status)
from jax_hypereca.initializers import Initializer, default_initializer
from jax_hypereca.optim import Optimizer, RowwiseAdagrad

log = logging.getLogger("jax_hypereca")

COUNTER_NAMES: dict[str, int] = dict(CONSTANTS["COUNTERS"])
NUM_COUNTERS: int = CONSTANTS["NUM_COUNTERS"]
_POLICIES: dict[str, int] = dict(CONSTANTS["POLICIES"])  # ScorePolicy (enums.h)
_DTYPES = {np.dtype(jnp.float32): "float32", np.dtype(jnp.bfloat16): "bfloat16"}
MAX_SHARD_ROWS = (1 << 31) - 1
MAX_ADMIT_AFTER = 127  # the admission sketch counts in int8 (admission.py)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TableSpec:
    """A dynamic embedding table: any int64 id, rows created on first sight.

    Mirrors jax-tpu-embedding's ``TableSpec`` where the concepts meet.
    """

    name: str
    """Unique table name (features refer to tables by it)."""
    dim: int
    """Embedding width (columns per row)."""
    capacity: int
    """Rows the table can hold in total, over all shards. Each shard's share is
    rounded up to a whole number of buckets (logged when it changes)."""
    initializer: Initializer | None = None
    """Initial value of a new row; default U[-1/sqrt(dim), 1/sqrt(dim))."""
    optimizer: Optimizer = RowwiseAdagrad()
    """Fused sparse optimizer applied by apply_gradients (see optim.py)."""
    policy: Literal["lru", "lfu"] = "lru"
    """Eviction score when a bucket is full: least recently or least frequently
    used. Rows accessed at or after the pinned step are never evicted."""
    dtype: Any = jnp.float32
    """Storage dtype of values: float32 or bfloat16 (math is float32)."""
    seed: int = 0
    """Seed of the row initializer (row = f(seed, key, column))."""
    bucket_size: int = 128
    """Slots per bucket (power of two): the probe and eviction scope."""
    admit_after: int = 1
    """Admission: an id gets a row in the train step it is seen in for the
    admit_after-th time (counted in steps, by a sketch that may admit early,
    never late); until then it is not trained and looks up a zero row. 1: at
    once (no filter). At most MAX_ADMIT_AFTER. See admission.py."""
    admission_counters: int = 0
    """Counters per hash row of each shard's admission sketch (a power of
    two); 0: the power of two at or above the shard's rows."""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"TableSpec.name must be a non-empty string, got {self.name!r}")
        for field in ("dim", "capacity", "bucket_size", "seed"):
            _ops.check_int(getattr(self, field), where=f"TableSpec {self.name!r}: {field}")
        if self.dim < 1:
            raise ValueError(f"TableSpec {self.name!r}: dim must be >= 1, got {self.dim}")
        if self.capacity < 1:
            raise ValueError(f"TableSpec {self.name!r}: capacity must be >= 1, got {self.capacity}")
        b = self.bucket_size
        if b < 1 or b & (b - 1) or b > 65536:
            raise ValueError(f"TableSpec {self.name!r}: bucket_size must be a power of two "
                             f"<= 65536, got {b}")
        _ops.check_int(self.admit_after, where=f"TableSpec {self.name!r}: admit_after")
        if not 1 <= self.admit_after <= MAX_ADMIT_AFTER:
            raise ValueError(f"TableSpec {self.name!r}: admit_after must be in "
                             f"1..{MAX_ADMIT_AFTER} (steps an id is seen in before it gets "
                             f"a row; 1: at once), got {self.admit_after}")
        c = self.admission_counters
        _ops.check_int(c, where=f"TableSpec {self.name!r}: admission_counters")
        if c and (c < 1024 or c & (c - 1) or c > 1 << 26):
            raise ValueError(f"TableSpec {self.name!r}: admission_counters must be 0 (sized "
                             f"from the table) or a power of two in [1024, 2**26], got {c}")
        if self.policy not in _POLICIES:
            raise ValueError(f"TableSpec {self.name!r}: policy must be one of "
                             f"{', '.join(map(repr, _POLICIES))}, got {self.policy!r}")
        if np.dtype(self.dtype) not in _DTYPES:
            raise ValueError(f"TableSpec {self.name!r}: dtype must be float32 or bfloat16, "
                             f"got {self.dtype!r}")
        if not isinstance(self.optimizer, Optimizer):
            raise TypeError(f"TableSpec {self.name!r}: optimizer must be a jax_hypereca.optim "
                            f"optimizer, got {type(self.optimizer).__name__}")
        if self.initializer is None:
            object.__setattr__(self, "initializer", default_initializer(self.dim))

    @property
    def state_width(self) -> int:
        """Float32 optimizer-state values stored beside each row."""
        return self.optimizer.state_width(self.dim)

    @property
    def policy_code(self) -> int:
        return _POLICIES[self.policy]

    def shard_geometry(self, num_shards: int = 1) -> tuple[int, int]:
        """(rows per shard, bucket size) for `num_shards` shards."""
        want = max(1, math.ceil(self.capacity / num_shards))
        bucket = min(self.bucket_size, 1 << max(0, (want - 1).bit_length()))
        rows = math.ceil(want / bucket) * bucket
        if rows > MAX_SHARD_ROWS:
            raise ValueError(
                f"TableSpec {self.name!r}: {rows} rows per shard exceeds {MAX_SHARD_ROWS}; "
                f"use more shards or a smaller capacity")
        return rows, bucket

    def row_bytes(self) -> int:
        """Bytes per slot: key, values, optimizer state and scores."""
        return 8 + self.dim * np.dtype(self.dtype).itemsize + 4 * self.state_width + 16


class TableState(NamedTuple):
    """The arrays of one table shard (a pytree; shard them along axis 0)."""

    keys: jax.Array        # (C,) int64
    values: jax.Array      # (C, dim) float32 | bfloat16
    opt_state: jax.Array   # (C, K) float32
    last_step: jax.Array   # (C,) int64
    freq: jax.Array        # (C,) int64
    counters: jax.Array    # (16,) int64

    @property
    def capacity(self) -> int:
        return self.keys.shape[-1]

    @staticmethod
    def empty(spec: "TableSpec", rows: int, sharding=None, *, shards: int = 1) -> "TableState":
        """An empty table of `rows` slots in total and `shards` counter
        vectors: keys EMPTY_KEY, everything else zero. With a `sharding`, the
        arrays are created on the devices it lays them out on (axis 0)."""
        def make():
            return TableState(
                keys=jnp.full((rows,), EMPTY_KEY, jnp.int64),
                values=jnp.zeros((rows, spec.dim), spec.dtype),
                opt_state=jnp.zeros((rows, spec.state_width), jnp.float32),
                last_step=jnp.zeros((rows,), jnp.int64),
                freq=jnp.zeros((rows,), jnp.int64),
                counters=jnp.zeros((shards * NUM_COUNTERS,), jnp.int64))

        if sharding is None:
            return make()
        return jax.jit(make, out_shardings=TableState(*([sharding] * 6)))()


def counters_dict(state: TableState) -> dict[str, int]:
    """Cumulative counters of a (single-shard) state, summed over leading axes."""
    c = np.asarray(state.counters).reshape(-1, NUM_COUNTERS).sum(axis=0)
    return {name: int(c[i]) for name, i in COUNTER_NAMES.items()}


def init_table(spec: TableSpec, *, rows: int | None = None) -> TableState:
    """An empty single-shard state holding `rows` slots (default: the spec's
    capacity rounded up to whole buckets)."""
    if rows is not None:
        _ops.check_int(rows, where=f"init_table {spec.name!r}: rows", low=0)
    if rows is None:
        rows, _ = spec.shard_geometry(1)
        if rows != spec.capacity:
            log.info("table %r: capacity %d rounded up to %d (whole buckets of %d)",
                     spec.name, spec.capacity, rows, spec.shard_geometry(1)[1])
    return TableState.empty(spec, rows)


def _bucket_size(spec: TableSpec, state: TableState) -> int:
    rows = state.capacity
    return min(spec.bucket_size, 1 << max(0, (rows - 1).bit_length()))


class InsertResult(NamedTuple):
    """What find_or_insert reports besides the new state."""

    slots: jax.Array      # (n,) int32; -1 for padding, reserved or refused ids
    found: jax.Array      # (n,) bool; resident before this call
    evicted: "EvictedRows"
    status: jax.Array     # (8,) int64; see errors.insert_status_dict


class EvictedRows(NamedTuple):
    """Rows a find_or_insert evicted, in query order; `keys` is EMPTY_KEY past
    the count (status['evicted']) and the other fields are unspecified there."""

    keys: jax.Array
    values: jax.Array
    opt_state: jax.Array
    last_step: jax.Array
    freq: jax.Array


def find_or_insert(spec: TableSpec, state: TableState, ids, *, step, pin_from=None,
                   max_evictions: int | None = None) -> tuple[TableState, InsertResult]:
    """Slots of `ids` (1-D int64), inserting and initializing the missing ones.

    Rows last accessed at or after `pin_from` (default `step`; a larger value
    counts as `step`, so rows of this step are always pinned) are never
    evicted; ids of this call are accessed at `step`. Evicted rows come back in
    `InsertResult.evicted` (at most `max_evictions`, default len(ids)).
    """
    ids = _ops.ids_array(ids, flat=True)
    n = ids.shape[0]
    _ops.check_int(step, where="find_or_insert: step", low=0, traced_ok=True)
    if pin_from is not None:
        _ops.check_int(pin_from, where="find_or_insert: pin_from", traced_ok=True)
    if max_evictions is not None:
        _ops.check_int(max_evictions, where="find_or_insert: max_evictions", low=0)
    e = n if max_evictions is None else int(max_evictions)
    table, out = _ops.find_or_insert(
        tuple(state), ids, step, step if pin_from is None else pin_from,
        spec.optimizer.initial_state(spec.dim), seed=spec.seed,
        init_kind=spec.initializer.code, init_scale=spec.initializer.scale,
        policy=spec.policy_code, bucket_size=_bucket_size(spec, state), max_evictions=e)
    evicted = EvictedRows(out.evicted_keys, out.evicted_values, out.evicted_state,
                          out.evicted_last_step, out.evicted_freq)
    return TableState(*table), InsertResult(out.slots, out.found, evicted, out.status)


def gather(state: TableState, slots, *, with_status: bool = False):
    """Rows at `slots` (n,) -> (n, dim) in the storage dtype.

    Slot -1 means "no row" (padding, a miss of find_slots, a refused insert)
    and gives zeros. Any other slot outside [0, rows) is a misuse: its row
    comes back zero and it is counted. Called eagerly, that count raises
    SlotOutOfRangeError (naming it and the table's rows). Under jit it cannot
    be raised inside the trace: pass ``with_status=True`` to get
    ``(rows, bad_slots ())`` and check it after the call with
    errors.raise_for_gather_status (without it a traced call returns the rows
    only)."""
    rows, bad = _ops.gather(state.values, slots)
    if with_status:
        return rows, bad
    if not isinstance(bad, jax.core.Tracer):
        raise_for_gather_status(bad, slots, rows=state.capacity)
    return rows


def find(spec: TableSpec, state: TableState, ids, *, miss_init: bool = False):
    """Rows of `ids` without inserting: (rows (n, dim), found (n,)). A missing
    id gets zeros, or with `miss_init` the row an insert would create."""
    ids = _ops.ids_array(ids, flat=True)
    rows, _, found = _ops.find(state.keys, state.values, ids, seed=spec.seed,
                               init_kind=spec.initializer.code,
                               init_scale=spec.initializer.scale,
                               bucket_size=_bucket_size(spec, state), miss_init=miss_init)
    return rows, found


def find_slots(spec: TableSpec, state: TableState, ids) -> tuple[jax.Array, jax.Array]:
    """Slots of `ids` without inserting or reading rows: (slots (n,) int32,
    -1 for a miss; found (n,))."""
    ids = _ops.ids_array(ids, flat=True)
    _, slots, found = _ops.find(state.keys, state.values, ids, seed=spec.seed,
                                init_kind=spec.initializer.code,
                                init_scale=spec.initializer.scale,
                                bucket_size=_bucket_size(spec, state), miss_init=False,
                                with_rows=False)
    return slots, found


def apply_gradients(spec: TableSpec, state: TableState, slots, grads, *, step
                    ) -> tuple[TableState, jax.Array]:
    """Fused optimizer update of the rows at `slots` with row gradients
    `grads` (n, dim); duplicate slots are summed first, slot -1 is ignored.
    `step` is the schedule count (updates done before this one, as in optax).
    Returns (state, status (4,))."""
    _ops.check_int(step, where="apply_gradients: step", low=0, traced_ok=True)
    values, opt, counters, status = _ops.apply_gradients(
        state.values, state.opt_state, state.counters, slots, grads,
        spec.optimizer.hparams(step), optimizer=spec.optimizer.kind)
    return state._replace(values=values, opt_state=opt, counters=counters), status


def erase(spec: TableSpec, state: TableState, ids) -> tuple[TableState, jax.Array]:
    """Removes `ids`; returns (state, erased mask (n,))."""
    keys, last, freq, counters, erased = _ops.erase(
        state.keys, state.last_step, state.freq, state.counters, _ops.ids_array(ids, flat=True),
        bucket_size=_bucket_size(spec, state))
    return state._replace(keys=keys, last_step=last, freq=freq, counters=counters), erased


_MODES: dict[str, int] = dict(CONSTANTS["EXPORT_MODES"])  # ExportMode (enums.h)


def _predicate(below, at_least, where: str) -> tuple[int, int]:
    """(mode, threshold) of a score predicate; the threshold an integer."""
    if below is not None and at_least is not None:
        raise ValueError(f"{where}: give at most one of `below` and `at_least`")
    if below is None and at_least is None:
        return _MODES["all"], 0
    name, thr = ("below", below) if below is not None else ("at_least", at_least)
    _ops.check_int(thr, where=f"{where}: {name}", traced_ok=True)
    return _MODES[name], thr


def erase_if(spec: TableSpec, state: TableState, *, below=None, at_least=None
             ) -> tuple[TableState, jax.Array]:
    """Removes every row whose score (last step for LRU, count for LFU) is
    `< below` or `>= at_least` (or every row if neither is given). Returns
    (state, number erased)."""
    mode, thr = _predicate(below, at_least, "erase_if")
    keys, last, freq, counters, count = _ops.erase_if(
        state.keys, state.last_step, state.freq, state.counters, thr,
        bucket_size=_bucket_size(spec, state), mode=mode, policy=spec.policy_code)
    return state._replace(keys=keys, last_step=last, freq=freq, counters=counters), count


class Rows(NamedTuple):
    """Whole rows on the host: what export yields and import_rows takes."""

    keys: np.ndarray        # (n,) int64
    values: np.ndarray      # (n, dim)
    opt_state: np.ndarray   # (n, K) float32
    last_step: np.ndarray   # (n,) int64
    freq: np.ndarray        # (n,) int64

    @staticmethod
    def concat(parts: list["Rows"]) -> "Rows":
        return Rows(*(np.concatenate(xs) for xs in zip(*parts)))

    @staticmethod
    def empty(spec: TableSpec, shape: int | tuple[int, ...] = 0) -> "Rows":
        """Host rows of `shape` (leading dims) for `spec`: keys EMPTY_KEY,
        everything else zero, each field in its stored dtype."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        return Rows(np.full(shape, EMPTY_KEY, np.int64),
                    np.zeros(shape + (spec.dim,), np.dtype(spec.dtype)),
                    np.zeros(shape + (spec.state_width,), np.float32),
                    np.zeros(shape, np.int64), np.zeros(shape, np.int64))


@functools.partial(jax.jit, static_argnames=("chunk", "mode", "policy"))
def _export_chunk(state, cursor, threshold, *, chunk, mode, policy):
    return _ops.export(state.keys, state.values, state.opt_state, state.last_step, state.freq,
                       cursor, threshold, chunk=chunk, mode=mode, policy=policy)


def export(spec: TableSpec, state: TableState, *, chunk_size: int = 1 << 16, below=None,
           at_least=None) -> Iterator[Rows]:
    """Yields the resident rows (optionally only those whose score passes the
    predicate, as in erase_if) in slot order, `chunk_size` rows at a time.
    Arguments are checked here, not at the first ``next``."""
    _ops.check_int(chunk_size, where="export: chunk_size", low=1, high=1 << 30)
    mode, thr = _predicate(below, at_least, "export")
    return _export_chunks(spec, state, int(chunk_size), mode, thr)


def _export_chunks(spec: TableSpec, state: TableState, chunk_size: int, mode: int, thr
                   ) -> Iterator[Rows]:
    cursor = 0
    while cursor < state.capacity:
        k, v, o, ls, f, info = _export_chunk(state, cursor, thr, chunk=chunk_size, mode=mode,
                                             policy=spec.policy_code)
        start = cursor
        count, cursor = (int(x) for x in np.asarray(info))
        if cursor <= start:  # the op's contract: it always advances (never loop forever)
            raise RuntimeError(f"export: the cursor did not advance past slot {start} of "
                               f"{state.capacity}; this is a bug, please report it")
        if count:
            yield Rows(np.asarray(k)[:count], np.asarray(v)[:count], np.asarray(o)[:count],
                       np.asarray(ls)[:count], np.asarray(f)[:count])


def export_keys(spec: TableSpec, state: TableState, ids) -> tuple[Rows, jax.Array]:
    """Whole rows of `ids` (key, values, optimizer state, scores) without
    changing the table: (rows, found (n,)); rows of missing ids are
    unspecified (their key is EMPTY_KEY). Traceable (use inside shard_map
    for a sharded table)."""
    ids = _ops.ids_array(ids, flat=True)
    slots, found = find_slots(spec, state, ids)
    s = jnp.maximum(slots, 0)
    keys = jnp.where(found, ids, EMPTY_KEY)
    return Rows(keys, state.values[s], state.opt_state[s], state.last_step[s],
                state.freq[s]), found


def import_rows(spec: TableSpec, state: TableState, rows: Rows
                ) -> tuple[TableState, jax.Array, jax.Array]:
    """Upserts whole rows. Returns (state, slots (n,), status (4,): offered,
    inserted, overwritten, refused). Refused rows (full bucket) are not lost:
    they are still in `rows`; the caller must raise or retry. Rows of the
    wrong shapes, and (on the host) non-finite values or optimizer state,
    are refused with the field named, the table unchanged."""
    _check_rows(spec, state, rows)
    table, slots, status = _ops.import_rows(
        tuple(state), rows.keys, jnp.asarray(rows.values, spec.dtype), rows.opt_state,
        rows.last_step, rows.freq, bucket_size=_bucket_size(spec, state))
    return TableState(*table), slots, status


def _check_rows(spec: TableSpec, state: TableState, rows: Rows) -> None:
    n = np.shape(rows.keys)[0] if np.ndim(rows.keys) == 1 else None
    want = {"keys": (n,), "values": (n, spec.dim), "opt_state": (n, state.opt_state.shape[1]),
            "last_step": (n,), "freq": (n,)}
    for field, shape in want.items():
        got = tuple(np.shape(getattr(rows, field)))
        if n is None or got != shape:
            raise ValueError(f"import_rows into table {spec.name!r}: rows.{field} must have "
                             f"shape {shape} (n = len(rows.keys), dim {spec.dim}), got {got}")
    for field in ("values", "opt_state"):
        a = getattr(rows, field)
        if not isinstance(a, np.ndarray):
            continue  # on a device: not checked here
        finite = np.isfinite(a.astype(np.float32)).all(axis=1)
        if not finite.all():
            i = int(np.flatnonzero(~finite)[0])
            raise ValueError(f"import_rows into table {spec.name!r}: rows.{field} of id "
                             f"{int(np.asarray(rows.keys)[i])} (row {i}) is not finite; "
                             f"nothing was imported")


def grow(spec: TableSpec, state: TableState, rows: int) -> TableState:
    """Rehashes a single-shard state into `rows` slots keeping every row, its
    optimizer state, scores and the counters. Raises TableFullError (and
    leaves `state` intact) if some row found no room."""
    _, bucket = TableSpec(**{**_spec_fields(spec), "capacity": rows}).shard_geometry(1)
    if rows % bucket:
        raise ValueError(f"table {spec.name!r}: grow to {rows} rows, not a multiple of the "
                         f"bucket size {bucket}")
    new = init_table(spec, rows=rows)
    new = new._replace(counters=jnp.asarray(state.counters).at[COUNTER_NAMES["size"]].set(0))
    new, _, status = _grow_import(new, state, bucket_size=bucket)
    offered, inserted, _, refused = (int(x) for x in np.asarray(status))
    if refused:
        raise TableFullError(
            f"table {spec.name!r}: growing from {state.capacity} to {rows} rows left "
            f"{refused} of {offered} rows without room (full buckets of {bucket}); the table "
            f"was not changed. Grow to a larger capacity.")
    assert inserted == offered
    return new


@functools.partial(jax.jit, static_argnames=("bucket_size",), donate_argnums=(0,))
def _grow_import(new, old, *, bucket_size):
    table, slots, status = _ops.import_rows(tuple(new), old.keys, old.values, old.opt_state,
                                            old.last_step, old.freq, bucket_size=bucket_size)
    return TableState(*table), slots, status


def _spec_fields(spec: TableSpec) -> dict:
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}


__all__ = [
    "TableSpec", "TableState", "InsertResult", "EvictedRows", "Rows", "COUNTER_NAMES",
    "EMPTY_KEY", "ERASED_KEY", "PADDING_ID", "init_table", "counters_dict", "find_or_insert",
    "gather", "find", "find_slots", "apply_gradients", "erase", "erase_if", "export",
    "export_keys", "import_rows", "grow",
    "check_ids", "insert_status_dict", "apply_status_dict", "raise_for_insert_status",
    "raise_for_apply_status", "raise_for_gather_status",
]
