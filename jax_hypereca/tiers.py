"""Rows between the two tiers of an EmbeddingCollection's tables: the device
tier (each table's sharded slots, what the step reads and updates) and the host
tier (one native HostStore per table in this process, host_tier.py).

Movement (DESIGN.md section 3.4):

* demotion: when a bucket is full, a train step's find_or_insert evicts its
  lowest-score row; the step returns every evicted row (key, values, optimizer
  state, scores; the count is in its statistics) and :meth:`HostTier.settle`
  puts them into the host store. Every attempt of a step is settled, applied
  or not (a step re-run after an overflow may have evicted already).
* promotion: before a step is dispatched, :meth:`HostTier.stage` takes the
  batch's ids that the host store holds out of it and sends each row to its
  owner device with the batch. On the owner, once find_or_insert has given the
  id its (fresh) slot, the step writes the staged row there: values,
  optimizer state and its frequency (the access is this step's), so the id
  trains on from its trained row, never from an initial one. The step
  reports which staged rows it wrote; settle puts the others back (a step
  whose exchange overflowed inserts nothing; an id its bucket refused has no
  slot).
* evaluation stages with ``take=False`` (a peek): the rows travel with the
  batch and serve the ids the device tier lacks; nothing moves.
* several processes: each process's host tier holds the rows of the owner
  shards on its own devices (settle stores only its devices' evictions; a
  restore keeps only the rows its shards own). Staging gathers every
  process's batch ids first (``everyones``: every process stages in step
  order, a collective), so each process stages, for its own owners, the ids
  any process's samples look up; the staged size is agreed the same way.
  Counts are per process; ``stats(total=True)`` sums them.

Why no row is lost (I3): a row leaves the host store only by ``stage``, which
holds it until ``settle`` of the same attempt; settle runs for every attempt
and puts back what the device did not write. A row leaves the device tier only
by eviction, and the step that evicts it returns it to settle.

Why no id lives in both tiers (I1), with steps in flight (I5): a batch is
staged when it is dispatched, while earlier steps may still be unsettled, so
a row one of them evicts is not in the store yet. Each step therefore gets
the evicted keys of every step dispatched before it and not yet settled
(``victims``); an id among them that find_or_insert had to insert afresh
(not found: its trained row is on its way to the host) cancels the step like
an overflow (``stale`` in the statistics), the steps behind it become
no-ops, and the host re-runs from it once the earlier steps are settled: the
row is then in the store, staged, and written over the fresh slot. An id
found on the device is its one home; a staged id was in the store, so it was
not on the device. At depth 1 nothing is ever unsettled.

Counted per table (``HostTier.stats``): rows promoted and demoted, staged
rows a step did not write and settle put back (``returned``), ids that
cancelled a step as stale, rows dropped by age (``ttl_evicted``), bytes moved
each way (key, values, optimizer state and both scores per row), and the
host store's own counters (host_tier.HOST_COUNTER_NAMES). Every id ever
inserted is on the device, in the store, dropped by age or erased: ``device
inserted - promoted == device resident + host resident + ttl_evicted +
erased + erased_on_host`` (tests/test_tiers.py and test_tiers_machine.py
check it).
"""

from __future__ import annotations

import functools
import os
import time
from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jax_hypereca.errors import PADDING_ID
from jax_hypereca.hashing import owner_of
from jax_hypereca.ids import distinct_ids
from jax_hypereca.host_tier import (HostStager, HostStore, HostTierFullError, packed_tables,
                                    put_packed)
from jax_hypereca.placement import (
    all_processes, from_pairs, local_get, local_shards, most_of_all, tree_to_mesh)
from jax_hypereca.table import Rows, TableSpec

# Staged rows per device are padded to one size for every table, a power of
# two at least this large that never shrinks: the step compiles again only
# when some table stages more rows than any before (a shape is a program),
# a handful of times while the host tier fills up.
MIN_STAGED = 16

# Threads of the host tier's native calls: two where there are two cores.
# On this project's 2-core machine at a 20% device budget (bench_tiers
# --quick shapes, two interleaved pairs of runs) two threads staged a batch
# in 2.1 ms instead of 2.5 and settled a step in 3.7 ms instead of 4.0
# (budgets that small run at depth 1: the device step mostly is not running
# then, so the second thread does not take a core from it).
DEFAULT_THREADS = min(2, os.cpu_count() or 1)


class Staged(NamedTuple):
    """One attempt's staged rows, packed per set of tables of one row layout
    (keyed by their names, in name order; host_tier.HostStager): ``host``
    [W * T * S] rows with block (d, t) -- device d's S rows of the set's
    t-th table, sorted by key, padding PADDING_ID -- at rows [(d * T + t) *
    S, ...); ``device`` the same on the mesh (tiers.unpack splits a device's
    block per table)."""

    host: dict[tuple[str, ...], Rows]
    device: dict[tuple[str, ...], Rows]
    taken: bool
    room: dict[str, int]  # per table, the demotions it made room for (settle releases them)

    @property
    def tables(self) -> list[str]:
        """The staged tables, in the order of ``host``'s sets."""
        return [name for names in self.host for name in names]


class HostTier:
    """The host tier of a collection's tables in this process (see the module
    docstring).

    Args:
      tables: the collection's TableSpecs by name.
      mesh, axis: the mesh the tables are sharded over.
      memory_limit_bytes: the most each table's store may hold (None: no
        limit). Before a train step is staged, each store makes room for
        every row the steps in flight and this one can demote (at most one
        per id they look up, spread over its hash partitions with a margin:
        ``HostStore.make_room_for``); where that does not fit, ``stage``
        raises HostTierFullError before any row moves: the step is not run
        (from the train step: ``.applied`` False, ``.state`` the state it
        was given). Raise the limit (``set_memory_limit_bytes``) and run the
        batch again. Should a settle still be refused (the margin short, a
        chance below ``host_tier.ROOM_SHORT_ODDS``, or rows put back by
        hand), it stores every table it can, then raises HostTierFullError
        holding the refused rows (``.rows``): ``put_back`` them once the
        limit is raised; nothing is dropped.
      threads: threads of the host tier's native calls (a batch's staging,
        a step's settling, large store calls); default DEFAULT_THREADS.
      ttl_steps: if set, a row in the host tier whose last access is more
        than this many steps old is dropped after each step (counted as
        ``ttl_evicted``: the one way a row leaves both tiers); its id, if it
        comes back, starts from its initial row. Rows on the device are
        never dropped by age (a full bucket demotes them first).
    """

    def __init__(self, tables: Mapping[str, TableSpec], mesh: Mesh, axis: str, *,
                 memory_limit_bytes: int | None = None, threads: int | None = None,
                 ttl_steps: int | None = None):
        self.specs = dict(tables)
        self.mesh, self.axis = mesh, axis
        self.num_shards = mesh.shape[axis]
        self.local = local_shards(mesh, axis)  # the owner shards whose rows this process holds
        self.is_local = np.zeros(self.num_shards, bool)
        self.is_local[self.local] = True
        self.memory_limit_bytes = memory_limit_bytes
        self.threads = DEFAULT_THREADS if threads is None else int(threads)
        if ttl_steps is not None and (isinstance(ttl_steps, bool) or int(ttl_steps) < 1):
            raise ValueError(f"host tier: ttl_steps must be a step count >= 1 (or None: rows "
                             f"stay), got {ttl_steps!r}")
        self.ttl_steps = None if ttl_steps is None else int(ttl_steps)
        self.stores = {n: self._store(s) for n, s in self.specs.items()}
        self._stagers: dict[tuple[str, ...], HostStager] = {}
        self.room = {n: 0 for n in self.specs}  # demotions reserved by unsettled stages
        self.moved = {n: dict(promoted=0, demoted=0, returned=0, stale=0, ttl_evicted=0,
                              erased_on_host=0, bytes_to_device=0, bytes_to_host=0)
                      for n in self.specs}
        self.staged_rows = MIN_STAGED  # per device and table; never shrinks
        self.demoted_rows = MIN_STAGED  # the same, for the evicted rows read back
        # host time in this tier (not in stats: evaluation adds to it); of
        # stage_s the native lookups (collect, pack), of settle_s the wait for
        # the step's arrays
        self.timing = dict(stage_s=0.0, stage_keys=0, stage_lookup_s=0.0, settle_s=0.0,
                           settle_wait_s=0.0)

    def _store(self, spec: TableSpec) -> HostStore:
        return HostStore(spec.dim, spec.state_width, dtype=np.dtype(spec.dtype).name,
                         memory_limit_bytes=self.memory_limit_bytes, threads=self.threads,
                         name=spec.name)

    # -------------------------------------------------------------- movement
    def stage(self, ids: Mapping[str, np.ndarray], *, take: bool) -> Staged:
        """Per table, the rows of `ids` (unique, no padding) the store holds,
        routed to their owners: removed from the store (``take``, a train
        step) or copied (an evaluation). If anything fails before the rows
        are on the mesh, the rows taken go back to the stores."""
        t0 = time.perf_counter()
        ids = everyones(ids)
        room = self._make_room(ids) if take else {}
        sets, most, collected, host = _layout_sets(self.specs, ids), 0, {}, None
        t_lookup = time.perf_counter()
        try:
            for names in sets:  # one native call per set: every table, owner routing, sorting
                stager = self._stager(names)
                collected[names] = stager.collect(
                    [self.stores[n] for n in names], [ids[n] for n in names], take=take,
                    local=self.is_local)
                most = max(most, collected[names])
                self.timing["stage_keys"] += stager.looked_up
            t1 = time.perf_counter()
            most = most_of_all(most)  # every process stages the same shape
            while self.staged_rows < most:
                self.staged_rows *= 2
            t2 = time.perf_counter()
            host = {names: self._stagers[names].pack(self.staged_rows) for names in sets}
            self.timing["stage_lookup_s"] += time.perf_counter() - t2 + t1 - t_lookup
            # every table at once, a few arrays; ids and frequencies stay int64
            device = tree_to_mesh(host, NamedSharding(self.mesh, P(self.axis)))
        except BaseException as original:
            if take:
                try:
                    self._unstage(host or {n: self._stagers[n].pack(m)
                                           for n, m in collected.items()})
                except HostTierFullError as full:  # holds the rows; says what failed first
                    raise full from original
                finally:
                    self._release(room)
            raise
        self.timing["stage_s"] += time.perf_counter() - t0
        return Staged(host, device, take, room)

    def unstage(self, staged: Staged) -> None:
        """Undoes `stage` for a step that never ran (its dispatch raised):
        the rows it took go back to their stores, its room is released."""
        if staged.taken:
            try:
                self._unstage(staged.host)
            finally:
                self._release(staged.room)

    def _make_room(self, ids: Mapping[str, np.ndarray]) -> dict[str, int]:
        """With a memory limit: each store makes room for the demotions of
        the unsettled steps and of this one (each inserts at most one row per
        id it looks up, and evicts at most one per insert), or -- in every
        process at once, before any row moves -- HostTierFullError."""
        if self.memory_limit_bytes is None:
            return {}
        need = {n: int((self.is_local[owner_of(k, self.num_shards)]).sum())
                for n, k in ids.items()}
        refused = []
        for name, n in need.items():
            try:
                self.stores[name].make_room_for(self.room[name] + n)
            except HostTierFullError as e:
                store = self.stores[name]
                refused.append(f"{name!r} needs {e.needed_bytes} bytes for room for "
                               f"{e.rows_per_partition} more rows in each of its "
                               f"{store.partitions} partitions (it holds {len(store)} rows "
                               f"in {store.bytes} bytes)")
        if most_of_all(int(bool(refused))):  # every process raises, or none
            error = HostTierFullError(
                f"host tier full: {'; '.join(refused or ['in another process'])}, over "
                f"memory_limit_bytes={self.memory_limit_bytes} per table. Room is made before "
                f"a step for every row it and the steps in flight may demote (at most one "
                f"per id they look up, spread over the store's hash partitions with a "
                f"margin, HostStore.make_room_for). The step was not run and no row "
                f"moved: raise the limit (HostTier.set_memory_limit_bytes), evict old rows "
                f"(ttl_steps) or give the device tier more room, and run its batch again.")
            error.rows = {}
            raise error
        for name, n in need.items():
            self.room[name] += n
        return need

    def _release(self, room: Mapping[str, int]) -> None:
        for name, n in room.items():
            self.room[name] -= n

    def _unstage(self, packed: Mapping[tuple[str, ...], Rows]) -> None:
        """Puts staged rows (packed as Staged.host) back into their stores;
        every table is tried, then rows a full store refused travel with one
        HostTierFullError (``put_back`` them once the limit is raised)."""
        refused: dict[str, list] = {}
        for names, rows in packed.items():
            self._put_packed(names, rows, packed_tables(rows.keys, self.num_shards, len(names)),
                             refused)
        if refused:
            raise self._full_error(refused)

    def _stager(self, names: tuple[str, ...]) -> HostStager:
        """The stager of a set of tables of one row layout (kept: its
        buffers are reused batch after batch)."""
        if names not in self._stagers:
            s = self.specs[names[0]]
            self._stagers[names] = HostStager(s.dim, s.state_width, dtype=np.dtype(s.dtype).name,
                                              num_shards=self.num_shards, threads=self.threads)
        return self._stagers[names]

    def read_back_at_least(self, rows: int) -> None:
        """Evicted rows read back per device and table (``demoted_rows``;
        on CPU also the size of a table's eviction outputs, steps.py) from
        now on: at least `rows`, doubling."""
        while self.demoted_rows < rows:
            self.demoted_rows *= 2

    def read_back(self, written: Mapping[str, jax.Array], demoted: Mapping[str, Rows],
                  rows: int):
        """What settle reads of a step, as few arrays (traceable: the train
        step computes it, so that reading it waits for that step only, not
        for a step dispatched after it): the written flags of every staged
        table stacked, and each device's first `rows` evicted rows packed
        per set of tables of one row layout."""
        return _settle_arrays(
            dict(written), {s: [demoted[n] for n in s] for s in _layout_sets(self.specs, demoted)},
            rows=rows, shards=self.num_shards)

    def settle(self, staged: Staged | None, written: Mapping[str, jax.Array],
               demoted: Mapping[str, Rows], evicted: Mapping[str, np.ndarray],
               stale: Mapping[str, int] | None = None, step: int | None = None,
               early: tuple[int, object] | None = None) -> None:
        """After one attempt of a train step: the staged rows the step did not
        write go back to the store, then the rows it evicted (`demoted`, [W *
        E] per table, device d's first ``evicted[t][d]`` at [d * E, ...])
        are stored; `stale` counts the ids that cancelled the attempt (see
        the module docstring); with ``ttl_steps``, rows older than `step` -
        ttl_steps leave the host tier (counted). At a store's memory limit
        every table is still settled, then one HostTierFullError holds every
        refused row (``.rows``; counted as moved) until ``put_back``.
        `early`: (rows, read_back's arrays) the step computed, if it did."""
        t0 = time.perf_counter()
        refused: dict[str, list] = {}
        if staged is not None:
            self._release(staged.room)
        for name, n in (stale or {}).items():
            self.moved[name]["stale"] += n
        counts = {n: np.asarray(evicted[n]) for n in demoted}
        most = max([int(c.max(initial=0)) for c in counts.values()] + [0])
        self.read_back_at_least(most)
        staged_names = sorted(staged.tables) if staged else []  # a jit's dict order
        # one transfer of a few arrays (read_back): the step's own, unless its
        # devices evicted more rows than it read back
        if early is None or early[0] < most:
            early = (most, self.read_back({n: written[n] for n in staged_names}, demoted,
                                          self.demoted_rows))
        t1 = time.perf_counter()
        done, host = local_get(early[1])  # waits for the step
        self.timing["settle_wait_s"] += time.perf_counter() - t1
        done = dict(zip(staged_names, done))
        for names, packed in (staged.host.items() if staged else ()):
            self._return(names, packed, done, refused)
        for names, packed in host.items():
            self._demote(names, packed, counts, refused)
        if self.ttl_steps is not None and step is not None:
            for name, store in self.stores.items():
                self.moved[name]["ttl_evicted"] += len(
                    store.evict_older_than(step - self.ttl_steps))
        self.timing["settle_s"] += time.perf_counter() - t0
        if refused:
            raise self._full_error(refused)

    def _full_error(self, refused: dict[str, list]) -> HostTierFullError:
        """One error for every table whose store refused rows in a settle; the
        rows travel with it (``.rows``, table -> Rows)."""
        rows = {n: Rows.concat(parts) for n, parts in refused.items()}
        full = "; ".join(f"{n!r}: {len(r.keys)} rows refused, the store holds "
                         f"{self.stores[n].bytes} bytes of memory_limit_bytes="
                         f"{self.stores[n].memory_limit_bytes}" for n, r in rows.items())
        error = HostTierFullError(
            f"host tier full ({full}). Nothing is "
            f"lost: the rows are held by this error (.rows) and the step's state by "
            f".state; raise the limit (HostTier.set_memory_limit_bytes), then "
            f"HostTier.put_back(error.rows) and go on from error.state.")
        error.rows = rows
        return error

    def put_back(self, rows: Mapping[str, Rows]) -> None:
        """Stores rows a full store refused (HostTierFullError.rows), once
        its limit has been raised; the tables whose rows still do not fit
        raise HostTierFullError again, their rows held by it."""
        refused: dict[str, list] = {}
        for name, r in rows.items():
            self._put(name, r, refused)
        if refused:
            raise self._full_error(refused)

    def set_memory_limit_bytes(self, limit: int | None) -> None:
        """The most each table's store may hold from now on (None: no limit)."""
        self.memory_limit_bytes = limit
        for store in self.stores.values():
            store.memory_limit_bytes = limit

    def erase(self, name: str, ids: np.ndarray) -> int:
        """Removes `ids` from the table's host store (erasure.py); returns how
        many were resident (counted as ``erased_on_host``, kept in checkpoints)."""
        n = self.stores[name].erase(ids) if len(ids) else 0
        self.moved[name]["erased_on_host"] += n
        return n

    def _return(self, names: tuple[str, ...], packed: Rows, done: Mapping[str, np.ndarray],
                refused: dict[str, list]) -> None:
        """A set's staged rows (packed [W, T, S] as Staged.host): those the
        step wrote (``done``, per table [W * S]) count as promoted, the
        others go back to their stores, in one native call."""
        T = len(names)
        table = packed_tables(packed.keys, self.num_shards, T)
        wrote = np.stack([done[n].reshape(self.num_shards, -1) for n in names],
                         axis=1).reshape(-1) & (table >= 0)
        promoted = np.bincount(table[wrote], minlength=T)
        table[wrote] = -1  # the rest goes back
        returned = np.bincount(table[table >= 0], minlength=T)
        for i, name in enumerate(names):
            moved = self.moved[name]
            moved["returned"] += int(returned[i])
            moved["promoted"] += int(promoted[i])
            moved["bytes_to_device"] += int(promoted[i]) * self.specs[name].row_bytes()
        self._put_packed(names, packed, table, refused)

    def _demote(self, names: tuple[str, ...], packed: Rows, counts: Mapping[str, np.ndarray],
                refused: dict[str, list]) -> None:
        """A set's evicted rows (read back [T, W, E] per field, device d's
        first ``counts[t][d]`` of table t real) into their stores, in one
        native call."""
        T, W, E = packed.keys.shape
        # [T, W]; other processes settle their own shards
        c = np.stack([counts[n] for n in names]).astype(np.int64) * self.is_local
        keep = np.arange(E)[None, None, :] < c[:, :, None]
        for name, n in zip(names, c.sum(axis=1)):
            self.moved[name]["demoted"] += int(n)
            self.moved[name]["bytes_to_host"] += int(n) * self.specs[name].row_bytes()
        table = np.where(keep, np.arange(T, dtype=np.int32)[:, None, None], -1)
        flat = Rows(*(a.reshape((T * W * E,) + a.shape[3:]) for a in packed))
        self._put_packed(names, flat, table.reshape(-1), refused)

    def _put_packed(self, names: tuple[str, ...], rows: Rows, table: np.ndarray,
                    refused: dict[str, list]) -> None:
        """Row i of `rows` into the store of ``names[table[i]]`` (-1: none);
        a full store's rows go to `refused` (the caller raises once every
        table is done)."""
        applied = put_packed([self.stores[n] for n in names], rows, table, threads=self.threads)
        for i, ok in enumerate(applied):
            if not ok:
                refused.setdefault(names[i], []).append(Rows(*(a[table == i] for a in rows)))

    def _put(self, name: str, rows: Rows, refused: dict[str, list] | None = None) -> None:
        """Stores `rows`; a full store's refusal goes to `refused` (the
        caller raises once every table is done), or raises with the rows."""
        if len(rows.keys) == 0:
            return
        try:
            self.stores[name].put_rows(rows)
        except HostTierFullError as e:
            if refused is None:
                e.rows = {name: rows}  # nothing dropped: the caller holds them
                raise
            refused.setdefault(name, []).append(rows)

    # ----------------------------------------------------------- inspection
    def stats(self, *, total: bool = False) -> dict[str, dict[str, int]]:
        """Per table: rows resident in the host store, rows promoted,
        demoted and returned so far, bytes moved each way, and the store's
        counters (``host_inserted == demoted + returned``, ``host_take_hits
        == promoted + returned``): this process's, or with `total` summed
        over the processes (a collective: every process calls it)."""
        out = {n: dict(host_rows=len(s), host_bytes=s.bytes, **self.moved[n],
                       **{f"host_{k}": v for k, v in s.counters().items()})
               for n, s in self.stores.items()}
        if total and jax.process_count() > 1:
            names = sorted(out)
            keys = list(out[names[0]]) if names else []
            every = all_processes(np.array([[out[n][k] for k in keys] for n in names],
                                           np.int64)).sum(axis=0)
            out = {n: {k: int(v) for k, v in zip(keys, every[i])} for i, n in enumerate(names)}
        return out

    def rows(self, name: str) -> Rows:
        """Every row of the table's host tier (host copies)."""
        parts = list(self.stores[name].export_chunks())
        return Rows.concat(parts) if parts else Rows.empty(self.specs[name])

    def load(self, rows: Mapping[str, Rows],
             moved: Mapping[str, Mapping[str, int] | None] | None = None) -> None:
        """Replaces the host tier's rows (a restore): new stores holding
        `rows` per table (their own counters start there), and the movement
        counts `moved` (saved with them; 0 where None)."""
        self.stores = {n: self._store(s) for n, s in self.specs.items()}
        self.room = {n: 0 for n in self.specs}  # no step is in flight across a restore
        if jax.process_index() != 0:
            moved = None  # the saved counts are totals: process 0 carries them on
        self.moved = {n: {k: int(((moved or {}).get(n) or {}).get(k, 0)) for k in self.moved[n]}
                      for n in self.specs}
        for name, r in rows.items():  # each process keeps the rows its shards own
            self._put(name, Rows(*(a[self.is_local[owner_of(r.keys, self.num_shards)]]
                                   for a in r)))


def everyones(ids: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per table, the unique ids of every process's batch (a collective
    with several processes: each holds the host rows its own shards own,
    whichever process's samples look them up)."""
    if jax.process_count() == 1:
        return dict(ids)
    names = sorted(ids)
    lengths = np.array([len(ids[n]) for n in names], np.int64)
    every_len = all_processes(lengths)  # [P, T]
    flat = np.full(int(every_len.sum(axis=1).max()), PADDING_ID, np.int64)
    if len(lengths):
        flat[:lengths.sum()] = np.concatenate([np.asarray(ids[n], np.int64) for n in names])
    every = all_processes(flat)
    out = {n: [] for n in names}
    for p, row in enumerate(every):
        ends = np.cumsum(every_len[p])
        for n, a, b in zip(names, ends - every_len[p], ends):
            out[n].append(row[a:b])
    return {n: distinct_ids(*parts) for n, parts in out.items()}


def unpack(packed: Mapping[tuple[str, ...], Rows]) -> dict[str, Rows]:
    """One device's block of the packed staged rows (tiers.Staged;
    inside shard_map): per table its S staged rows, 64-bit fields that
    crossed as int32 pairs (several processes, placement.tree_to_mesh)
    rebuilt."""
    out = {}
    for names, rows in packed.items():
        rows = Rows(*(from_pairs(a, np.int64) for a in rows))
        for i, name in enumerate(names):
            out[name] = Rows(*(a.reshape((len(names), -1) + a.shape[1:])[i] for a in rows))
    return out


def _layout_sets(specs: Mapping[str, TableSpec], names) -> list[tuple[str, ...]]:
    """`names` grouped into sets of tables with the same dim, dtype and
    optimizer-state width (rows of one set pack into one array per field),
    each in name order."""
    sets: dict[tuple, list[str]] = {}
    for name in sorted(names):
        s = specs[name]
        sets.setdefault((s.dim, np.dtype(s.dtype).name, s.state_width), []).append(name)
    return [tuple(v) for v in sets.values()]


@functools.partial(jax.jit, static_argnames=("rows", "shards"))
def _settle_arrays(written: dict, demoted: dict, *, rows: int, shards: int):
    """What settle reads back, as few arrays: the written flags of every
    table stacked [T, W * S] (in name order: jit sorts a dict), and per set of tables
    (`demoted`: names -> each table's [W * E] Rows) each device's first
    `rows` evicted rows, [T, W, rows, ...] per field."""
    flags = jnp.stack(list(written.values())) if written else jnp.zeros((0,), bool)
    first = lambda a: a.reshape((shards, -1) + a.shape[1:])[:, :rows]
    packed = {names: Rows(*(jnp.stack([first(a) for a in field]) for field in zip(*tables)))
              for names, tables in demoted.items()}
    return flags, packed
