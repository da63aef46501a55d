"""The host tier of one owner shard: a native, growable store of whole rows.

A :class:`HostStore` maps int64 ids to the rows the device tier evicted --
values, optimizer state and both scores (``last_step``, ``freq``), exactly the
fields of :class:`jax_hypereca.table.Rows` -- until a batch needs them again
and :meth:`HostStore.take` removes them for promotion (DESIGN.md section 3.4,
issue 14). The store is C++ (ffi/include/hypereca/host_store.h): an
open-addressing index over contiguous records, hash-partitioned, every call
made with the GIL released and, for large calls with ``threads > 1``, split
over threads by partition. Calls on one store are serialized, so a loader
thread may take while the main thread puts.

Semantics, whatever ``threads``:

* every call acts as if its ids were processed one after another in order:
  a put with an id twice keeps the LAST occurrence's row; a take with an id
  twice returns the row at the first occurrence and a miss after it;
* ids are any int64 except the reserved ``ERASED_KEY`` (-2). ``PADDING_ID``
  (-1) cannot be stored; lookups (take, peek, contains, erase) skip it
  silently, as the device table does;
* a put that would grow the store past ``memory_limit_bytes`` raises
  :class:`HostTierFullError` and stores nothing (the caller keeps its rows);
* nothing leaves the store but by take, erase or ``evict_older_than`` (TTL),
  each counted: ``inserted == size + take_hits + erased + ttl_evicted``;
* the export order is a function of the calls made and of ``partitions``.

A :class:`HostStager` looks one batch up in the stores of several tables of
one row layout in one native call and packs the rows found for their owner
shards (ffi/include/hypereca/host_stage.h): what ``tiers.HostTier.stage``
sends to the devices.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from jax_hypereca._native import cpu as _cpu
from jax_hypereca.errors import EMPTY_KEY, ERASED_KEY, PADDING_ID, HyperecaError, ReservedIdError
from jax_hypereca.table import Rows

HOST_COUNTER_NAMES: tuple[str, ...] = tuple(
    sorted(_cpu.HOST_COUNTERS, key=_cpu.HOST_COUNTERS.__getitem__))
"""Counter names, in the native order (host_store.h, HostCounter)."""

_DTYPES = ("float32", "bfloat16", "float16")


# The chance that room made for n distinct new ids (make_room_for) is short in
# some partition: the store's hash spreads them like a uniform draw.
ROOM_SHORT_ODDS = 1e-12


def rows_per_partition(rows: int, partitions: int) -> int:
    """The most of `rows` distinct ids that any of `partitions` hash
    partitions receives, but for a chance below ROOM_SHORT_ODDS: Bernstein's
    bound on one partition's binomial count, over every partition; never
    more than `rows`. 12,288 ids over 16 partitions: 995 (the worst case,
    every id in one partition, is 12,288)."""
    rows, partitions = max(int(rows), 0), int(partitions)
    if rows == 0 or partitions == 1:
        return rows
    mean, c = rows / partitions, math.log(partitions / ROOM_SHORT_ODDS)
    # P(count >= mean + t) <= exp(-t^2 / (2 (mean + t / 3))) = ROOM_SHORT_ODDS / partitions
    t = (2 * c / 3 + math.sqrt((2 * c / 3) ** 2 + 8 * c * mean)) / 2
    return min(rows, math.ceil(mean + t))


class HostTierFullError(HyperecaError, MemoryError):
    """A put would have grown a host store past its ``memory_limit_bytes``;
    nothing was stored."""


def _dtype(dtype) -> np.dtype:
    if isinstance(dtype, str) and dtype == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    d = np.dtype(dtype)
    if d.name not in _DTYPES:
        raise TypeError(f"HostStore(dtype={d.name}): the values dtype must be one of {_DTYPES}")
    return d


def _keys(keys, *, store: str, op: str, allow_padding: bool, scan: bool = True) -> np.ndarray:
    """`keys` as contiguous int64, checked: integers, 1-D, and (unless not
    `scan`: the native call checks them itself) no reserved id."""
    arr = np.asarray(keys)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{store}.{op}: keys must be integers (int64 ids), got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{store}.{op}: keys must be 1-D, got shape {arr.shape}")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) >= 1 << 63:
        raise ValueError(f"{store}.{op}: uint64 ids >= 2**63 do not fit int64")
    arr = np.ascontiguousarray(arr, np.int64)
    if not scan:
        return arr
    bad = (arr == ERASED_KEY) if allow_padding else ((arr == ERASED_KEY) | (arr == PADDING_ID))
    where = np.flatnonzero(bad)
    if where.size:
        i = int(where[0])
        what = "ERASED_KEY" if arr[i] == ERASED_KEY else "PADDING_ID"
        raise ReservedIdError(
            f"{store}.{op}: keys[{i}] = {arr[i]} is the reserved {what} ({where.size} reserved "
            f"ids in all); nothing was applied. Ids may be any int64 except {ERASED_KEY}; "
            f"{PADDING_ID} is the padding id, skipped by lookups and never stored.")
    return arr


class HostStore:
    """The host tier of one table shard (see the module docstring).

    Args:
      dim: elements per row.
      state_width: float32 optimizer-state words per row
        (``optimizer.state_width(dim)``; 0 for SGD).
      dtype: the values' dtype (float32, bfloat16 or float16): the table's.
      memory_limit_bytes: the most the store may hold (``bytes``); 0 or None
        for no limit.
      partitions: fixed hash partitions (the export order depends on it).
      threads: threads per large call (1..partitions).
      parallel_min_keys: calls with fewer keys run on one thread (a thread
        start costs tens of microseconds).
      name: names the store in errors (e.g. the table).
    """

    def __init__(self, dim: int, state_width: int, *, dtype="float32",
                 memory_limit_bytes: int | None = None, partitions: int = 16,
                 threads: int = 1, parallel_min_keys: int = 32768, name: str = "host_tier"):
        self.name = str(name)
        self.dim, self.state_width = int(dim), int(state_width)
        self.dtype = _dtype(dtype)
        if self.dim < 1 or self.state_width < 0:
            raise ValueError(f"HostStore {self.name!r}: dim={dim} must be >= 1 and "
                             f"state_width={state_width} >= 0")
        if not 1 <= int(threads) <= int(partitions):
            raise ValueError(f"HostStore {self.name!r}: threads={threads} must be in "
                             f"1..partitions ({partitions})")
        limit = 0 if memory_limit_bytes is None else int(memory_limit_bytes)
        if limit < 0:
            raise ValueError(f"HostStore {self.name!r}: memory_limit_bytes={limit} must be "
                             f">= 0 (0 or None: no limit)")
        self._row_bytes = self.dim * self.dtype.itemsize
        if int(parallel_min_keys) < 1:
            raise ValueError(f"HostStore {self.name!r}: parallel_min_keys={parallel_min_keys} "
                             f"must be >= 1")
        self._native = _cpu.HostStore(self._row_bytes, self.state_width, limit,
                                      int(partitions), int(threads), int(parallel_min_keys))
        self.partitions, self.threads = int(partitions), int(threads)

    def __repr__(self) -> str:
        return (f"HostStore({self.name!r}, dim={self.dim}, state_width={self.state_width}, "
                f"dtype={self.dtype.name}, rows={len(self)}, bytes={self.bytes})")

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return self._native.size()

    @property
    def size(self) -> int:
        """Resident rows."""
        return self._native.size()

    @property
    def bytes(self) -> int:
        """Bytes the store holds (records, index, free lists at capacity)."""
        return self._native.bytes()

    @property
    def memory_limit_bytes(self) -> int:
        return self._native.memory_limit_bytes

    @memory_limit_bytes.setter
    def memory_limit_bytes(self, limit: int | None) -> None:
        limit = 0 if limit is None else int(limit)
        if limit < 0:
            raise ValueError(f"HostStore {self.name!r}: memory_limit_bytes={limit} must be "
                             f">= 0 (0 or None: no limit)")
        self._native.set_memory_limit_bytes(limit)

    def counters(self) -> dict[str, int]:
        """Cumulative counters by name (HOST_COUNTER_NAMES)."""
        return dict(zip(HOST_COUNTER_NAMES, self._native.counters()))

    # ------------------------------------------------------------------ rows
    def _rows_in(self, n: int, values, opt_state, last_step, freq):
        where = f"HostStore {self.name!r}.put"
        v = np.asarray(values)
        if v.dtype != self.dtype:
            raise TypeError(f"{where}: values have dtype {v.dtype}, the store holds "
                            f"{self.dtype.name} (HostStore(dtype=...), the table's dtype)")
        if v.shape != (n, self.dim):
            raise ValueError(f"{where}: values have shape {v.shape}, expected ({n}, {self.dim}) "
                             f"for {n} keys and dim={self.dim}")
        s = np.asarray(opt_state)
        if s.dtype != np.float32 or s.shape != (n, self.state_width):
            raise ValueError(f"{where}: opt_state is {s.dtype}{list(s.shape)}, expected "
                             f"float32[{n}, {self.state_width}] (state_width={self.state_width})")
        scores = []
        for label, x in (("last_step", last_step), ("freq", freq)):
            a = np.asarray(x)
            if a.dtype.kind not in "iu" or a.shape != (n,):
                raise ValueError(f"{where}: {label} is {a.dtype}{list(a.shape)}, expected "
                                 f"int64[{n}]")
            scores.append(np.ascontiguousarray(a, np.int64))
        raw = np.ascontiguousarray(v).view(np.uint8).reshape(n, self._row_bytes)
        return raw, np.ascontiguousarray(s), scores[0], scores[1]

    def put(self, keys, values, opt_state, last_step, freq) -> int:
        """Inserts or overwrites rows (the last occurrence of an id wins), all
        or nothing. Returns the number of ids that were not resident. Raises
        HostTierFullError (nothing stored) past ``memory_limit_bytes``."""
        k = _keys(keys, store=f"HostStore {self.name!r}", op="put", allow_padding=False)
        raw, s, last, freq = self._rows_in(k.shape[0], values, opt_state, last_step, freq)
        applied, new, before, after = self._native.put(k, raw, s, last, freq)
        if not applied:
            raise HostTierFullError(
                f"host tier {self.name!r}: a put of {k.shape[0]} rows ({new} new ids) needs "
                f"{after} bytes, over memory_limit_bytes={self.memory_limit_bytes} (the store "
                f"holds {len(self)} rows in {before} bytes); nothing was stored and the caller "
                f"still holds the rows. Raise HostStore(memory_limit_bytes=...), evict old rows "
                f"(evict_older_than), or give the device tier more room.")
        return int(new)

    def make_room(self, rows: int) -> int:
        """Grows the store now so that puts adding at most `rows` new ids to
        each of its ``partitions`` hash partitions -- so at most `rows` new
        ids in all, wherever they hash -- need no growth later. Returns the
        bytes held; raises HostTierFullError, changing nothing, past
        ``memory_limit_bytes``."""
        if int(rows) < 0:
            raise ValueError(f"HostStore {self.name!r}.make_room: rows={rows} must be >= 0")
        applied, before, after = self._native.make_room(int(rows))
        if not applied:
            error = HostTierFullError(
                f"host tier {self.name!r}: room for {int(rows)} more rows in each of its "
                f"{self.partitions} partitions needs {after} bytes, over memory_limit_bytes="
                f"{self.memory_limit_bytes} (the store holds {len(self)} rows in {before} "
                f"bytes); nothing was moved. Raise memory_limit_bytes, evict old rows "
                f"(evict_older_than, ttl_steps), or give the device tier more room.")
            error.needed_bytes, error.rows_per_partition = int(after), int(rows)
            raise error
        return int(after)

    def make_room_for(self, rows: int) -> int:
        """make_room for `rows` distinct new ids in all, spread by the hash:
        rows_per_partition(rows) in each partition (a put of them that needs
        growth anyway -- a chance below ROOM_SHORT_ODDS for ids not chosen
        to collide -- grows then, or is refused keeping the caller's rows).
        The host tier reserves room so for the rows steps in flight may
        demote: about rows / partitions + a margin per partition (995 of
        12,288 over 16) where make_room(rows), which holds for any spread,
        asks `rows` in each."""
        return self.make_room(rows_per_partition(rows, self.partitions))

    def put_rows(self, rows: Rows) -> int:
        """:meth:`put` of a :class:`Rows` (what export and eviction yield)."""
        return self.put(rows.keys, rows.values, rows.opt_state, rows.last_step, rows.freq)

    def _rows_out(self, keys: np.ndarray, found, values, state, last, freq) -> Rows:
        found = found.view(np.bool_)
        return Rows(np.where(found, keys, EMPTY_KEY),
                    values.view(self.dtype).reshape(keys.shape[0], self.dim),
                    state, last, freq)

    def take(self, keys) -> tuple[np.ndarray, Rows]:
        """Removes and returns the rows of `keys` (promotion to the device
        tier): (found (n,) bool, Rows with EMPTY_KEY and zeros where not found)."""
        k = _keys(keys, store=f"HostStore {self.name!r}", op="take", allow_padding=True)
        found, *rest = self._native.take(k)
        return found.view(np.bool_), self._rows_out(k, found, *rest)

    def peek(self, keys) -> tuple[np.ndarray, Rows]:
        """:meth:`take` without removing anything (nothing counted)."""
        k = _keys(keys, store=f"HostStore {self.name!r}", op="peek", allow_padding=True)
        found, *rest = self._native.peek(k)
        return found.view(np.bool_), self._rows_out(k, found, *rest)

    def contains(self, keys) -> np.ndarray:
        """(n,) bool: which of `keys` are resident."""
        k = _keys(keys, store=f"HostStore {self.name!r}", op="contains", allow_padding=True)
        return self._native.contains(k).view(np.bool_)

    def erase(self, keys) -> int:
        """Removes the rows of `keys`; returns how many were resident."""
        k = _keys(keys, store=f"HostStore {self.name!r}", op="erase", allow_padding=True)
        return int(self._native.erase(k))

    def evict_older_than(self, step: int) -> np.ndarray:
        """TTL: removes every row with ``last_step < step`` (counted as
        ttl_evicted, the only way a row leaves both tiers); returns their ids
        in export order."""
        return self._native.evict_older_than(int(step))

    def export(self, start: int = 0, max_rows: int = 1 << 16) -> tuple[Rows, int | None]:
        """Up to `max_rows` rows in export order from cursor `start` (0 first):
        (rows, the next chunk's start, or None after the last row). The store
        must not change between the chunks of one export."""
        if int(start) < 0 or int(max_rows) < 1:
            raise ValueError(f"HostStore {self.name!r}.export: start={start} must be >= 0 "
                             f"and max_rows={max_rows} >= 1")
        nxt, n, keys, values, state, last, freq = self._native.export(int(start), int(max_rows))
        rows = Rows(keys[:n], values[:n].view(self.dtype).reshape(n, self.dim), state[:n],
                    last[:n], freq[:n])
        return rows, (None if nxt < 0 else int(nxt))

    def export_chunks(self, max_rows: int = 1 << 16) -> Iterator[Rows]:
        """Every row, in export order, in chunks of at most `max_rows`."""
        start: int | None = 0
        while start is not None:
            rows, start = self.export(start, max_rows)
            if rows.keys.shape[0]:
                yield rows


class HostStager:
    """One batch's rows from the stores of T tables of one row layout,
    routed to their W owner shards and packed [W * T * S] (block (d, t) at
    rows [(d * T + t) * S, ...): table t's rows owned by shard d and padding,
    key PADDING_ID and zeros, S in all, sorted by key as signed int64) in two
    native calls with the GIL released: :meth:`collect` looks the ids up
    (take or peek) and returns the most rows of one block, :meth:`pack`
    writes the blocks for an S at least that large (several processes agree
    S in between). Tables are split over `threads`.

    The rows a take-collect removed from the stores live in the stager until
    packed: the caller packs them (and keeps the packed rows until they are
    back in a store or on a device). Not thread-safe: one collect and its
    pack at a time per stager (a second collect before the pack would drop
    the first one's rows); HostTier stages on one thread."""

    def __init__(self, dim: int, state_width: int, *, dtype, num_shards: int, threads: int = 1):
        self.dtype = _dtype(dtype)
        self.dim, self.state_width = int(dim), int(state_width)
        self._native = _cpu.HostStager(self.dim * self.dtype.itemsize, self.state_width,
                                       int(num_shards), max(1, int(threads)))
        self.num_shards = int(num_shards)

    def collect(self, stores: list[HostStore], keys: list[np.ndarray], *, take: bool,
                local: np.ndarray) -> int:
        """Looks each store's `keys` (unique ids, int64) up, skipping ids
        whose owner shard has ``local`` False; returns the most rows one
        (owner, table) block holds. Validates every table's ids before any
        store is touched (ReservedIdError: nothing was taken)."""
        ks = [_keys(k, store=f"HostStore {s.name!r}", op="stage", allow_padding=True, scan=False)
              for s, k in zip(stores, keys)]
        for s in stores:
            if (s.dim, s.state_width, s.dtype) != (self.dim, self.state_width, self.dtype):
                raise ValueError(f"HostStager: store {s.name!r} holds rows of dim={s.dim}, "
                                 f"state_width={s.state_width}, {s.dtype.name}; this stager "
                                 f"packs dim={self.dim}, state_width={self.state_width}, "
                                 f"{self.dtype.name} (one stager per row layout)")
        flags = np.ascontiguousarray(local, np.uint8)
        try:
            return int(self._native.collect([s._native for s in stores], ks, bool(take), flags))
        except ValueError:  # refused before any lookup: say which id, as a store would
            for s, k in zip(stores, ks):
                _keys(k, store=f"HostStore {s.name!r}", op="stage", allow_padding=True)
            raise

    def pack(self, rows_per_block: int) -> Rows:
        """The last collect's rows in blocks of `rows_per_block` (>= its result)."""
        keys, values, state, last, freq = self._native.pack(int(rows_per_block))
        return Rows(keys, values.view(self.dtype).reshape(keys.shape[0], self.dim), state,
                    last, freq)

    @property
    def looked_up(self) -> int:
        """Ids the last collect looked up (those of local owner shards)."""
        return int(self._native.looked_up)

    @property
    def found(self) -> int:
        """Rows the last collect found."""
        return int(self._native.found)


def packed_tables(keys: np.ndarray, num_shards: int, num_tables: int) -> np.ndarray:
    """The table index (int32) of each row of a stager's pack ([W * T * S]
    rows, block (d, t) at rows [(d * T + t) * S, ...)), -1 for its padding:
    the `table` argument of :func:`put_packed` that puts every packed row
    back."""
    t = np.broadcast_to(np.arange(num_tables, dtype=np.int32)[None, :, None],
                        (num_shards, num_tables, keys.shape[0] // (num_shards * num_tables)))
    return np.where(keys.reshape(t.shape) == PADDING_ID, -1, t).reshape(-1)


def put_packed(stores: list[HostStore], rows: Rows, table: np.ndarray, *,
               threads: int = 1) -> list[bool]:
    """Puts the rows of several tables of one row layout, packed in one
    Rows, into their stores in one native call (GIL released): row i goes
    to ``stores[table[i]]``, or nowhere where ``table[i]`` is -1 (padding).
    Per store, its rows in order with one :meth:`HostStore.put` (the last
    occurrence of an id wins), all or nothing on its own. Returns, per
    store, whether its put applied: False where its memory limit refused it
    (that store unchanged; the caller still holds the rows). A row of a
    table with a reserved id, a table index out of range or stores of
    different layouts raise ValueError before any store changes."""
    if not stores:
        return []
    first = stores[0]
    for s in stores[1:]:
        if (s.dim, s.state_width, s.dtype) != (first.dim, first.state_width, first.dtype):
            raise ValueError(f"put_packed: store {s.name!r} holds rows of dim={s.dim}, "
                             f"state_width={s.state_width}, {s.dtype.name}; {first.name!r} "
                             f"of dim={first.dim}, state_width={first.state_width}, "
                             f"{first.dtype.name} (one call per row layout)")
    keys = np.ascontiguousarray(rows.keys, np.int64)
    raw, state, last, freq = first._rows_in(keys.shape[0], rows.values, rows.opt_state,
                                            rows.last_step, rows.freq)
    results = _cpu.put_packed([s._native for s in stores], keys, raw, state, last, freq,
                              np.ascontiguousarray(table, np.int32), max(1, int(threads)))
    return [bool(r[0]) for r in results]
