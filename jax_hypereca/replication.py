"""Two-fold parallelism: a replicated hot fold beside the sharded cold fold.

Per table, the R ids that take most of the exchange live in a small table
replicated on every device (the hot fold): they are looked up locally, their
gradients are summed over all devices by one all-reduce, and every replica
applies the identical update. Every other id stays on its owner shard (the
cold fold). An id is in exactly one fold (I1); moving it carries its row,
optimizer state and scores, so training is unchanged (I2).

    stats = peek(collection, batches)                      # exact counts, 100 batches
    profile = measure_profile(collection)                 # C_ar, C_a2a on this mesh
    plan = plan(collection, stats, profile, memory_budget_bytes=1 << 28)
    state = apply_plan(collection, state, plan)           # at a step boundary

``Replicator`` re-plans during training from an online decayed count, every
N steps or when the hot set's coverage drops.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Iterable, Mapping, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from jax import lax

from jax_hypereca.errors import ERASED_KEY, PADDING_ID, TableFullError
from jax_hypereca.hashing import owner_of
from jax_hypereca.hot_exchange import compact_sizes, group_sums, touched_sums
from jax_hypereca.initializers import init_rows
from jax_hypereca.planner import (
    CostProfile, DecayedCounter, Measurement, ProfileCache, ReplicationPlan, TableStats,
    collect_table_stats, plan_replication)
from jax_hypereca.layout import Layout
from jax_hypereca.placement import (
    counter_totals, counters_by_name, host_gather, place_replicated, replica_rows,
    rows_to_owners, sharded_specs)
from jax_hypereca.state import TrainState
from jax_hypereca.table import (
    COUNTER_NAMES, NUM_COUNTERS, Rows, TableSpec, TableState, apply_gradients, erase,
    export_keys, find_slots, gather, import_rows)

log = logging.getLogger("jax_hypereca")
_C = COUNTER_NAMES


class Sharded(Protocol):
    """What the moves and the planning need of a collection (which sits above
    this module): its mesh, axis, tables and exchange groups, and how it puts
    a batch's ids on the devices."""

    mesh: Mesh
    axis: str
    num_shards: int
    tables: Mapping[str, TableSpec]
    features: Mapping

    @property
    def groups(self) -> tuple[tuple[str, ...], ...]: ...

    def prepare_batch(self, batch: Mapping, *, local: bool = False) -> dict: ...


# ---------------------------------------------------- the hot fold in a step
def hot_capacity(hot_rows: int, bucket_size: int = 128) -> int:
    """Slots of a hot fold holding `hot_rows` ids: 1.5 R rounded up to whole
    buckets (a bucket of 128 then overflows with odds below 1e-6; a refused
    row would raise, never vanish), at least 16. Every step all-reduces a
    buffer of this many rows, so it is kept tight."""
    want = max(16, math.ceil(1.5 * hot_rows))
    if want <= bucket_size:
        return 1 << (want - 1).bit_length()
    return math.ceil(want / bucket_size) * bucket_size


def replicate_rows(spec: TableSpec, rows: Rows, counters: np.ndarray, mesh: Mesh
                   ) -> TableState:
    """A hot fold: a table holding `rows` replicated on every device of
    `mesh` (``hot_capacity`` slots), with these counters."""
    return place_replicated(spec, rows, counters, mesh,
                            hot_capacity(len(rows.keys), spec.bucket_size))


def split_hot(spec: TableSpec, hot: TableState | None, uniq: jax.Array
              ) -> tuple[jax.Array, jax.Array]:
    """(the ids not in the hot fold, with hot ones turned to padding; each id's
    slot in the local replica, -1 when cold)."""
    if hot is None:
        return uniq, jnp.full(uniq.shape, -1, jnp.int32)
    slots = find_slots(spec, hot, uniq)[0]
    return jnp.where(slots >= 0, PADDING_ID, uniq), slots


def with_hot_rows(layout: Layout, group, hot, hot_slots, cold, batch: int):
    """The group's unique rows: the local replica's for hot ids, else `cold`.
    Each hot table's segment is replaced in place (a static slice), so the
    group's other rows are neither copied nor selected (a concatenation of
    every table's part and a select over all rows summed 2x the pool
    stage's op time of a 26-table step with 64 hot rows per table on 8 CPU
    devices; the step's wall time did not change measurably there)."""
    out = cold
    for t, start, n in layout.segments(group, batch):
        if t in hot:  # seg: find_slots of this very fold, so in range or -1
            seg = hot_slots[start:start + n]
            rows = gather(hot[t], seg).astype(jnp.float32)
            out = out.at[start:start + n].set(
                jnp.where((seg >= 0)[:, None], rows, out[start:start + n]))
    return out


def apply_hot(layout: Layout, group, hot, hot_slots, g_unique, batch: int, step, ok):
    """Data-parallel update of the group's hot folds: per hot row, the sum of
    every device's gradient, applied where some device touched the row (its
    scores set as the cold fold's lookup sets them: last step = this step,
    freq + 1). Small folds: one all-reduce of all their rows for the group;
    large ones: only the touched rows (hot_exchange.py). Returns (hot, per
    table (non-finite rows skipped, bad slots))."""
    segs = [(t, lax.dynamic_slice_in_dim(hot_slots, start, n),
             lax.dynamic_slice_in_dim(g_unique, start, n), n)
            for t, start, n in layout.segments(group, batch) if t in hot]
    if not segs:
        return hot, {}
    big = {t for t, _, _, n in segs if compact_sizes(hot[t].capacity, layout.num_shards * n)}
    sums, counts = group_sums([(hot[t].capacity, s, g) for t, s, g, _ in segs if t not in big],
                              [(hot[t].capacity, s) for t, s, _, _ in segs if t in big],
                              layout.axis)
    order = [t for t, *_ in segs if t not in big] + [t for t, *_ in segs if t in big]
    count_of, sum_of = dict(zip(order, counts)), dict(zip(order, sums))
    hot, skipped = dict(hot), {}
    for t, s, g, n in segs:
        rows = hot[t].capacity
        touched = ok & (count_of[t] > 0)
        if t in big:
            sum_of[t] = touched_sums(s, g, count_of[t], capacity=rows,
                                     bound=layout.num_shards * n, axis=layout.axis)
        slot = jnp.where(touched, jnp.arange(rows, dtype=jnp.int32), -1)
        hot[t], status = apply_gradients(layout.spec(t), hot[t], slot, sum_of[t], step=step)
        hot[t] = hot[t]._replace(last_step=jnp.where(touched, step + 1, hot[t].last_step),
                                 freq=hot[t].freq + touched)
        skipped[t] = status[1:3]
    return hot, skipped


# ----------------------------------------------------------------- statistics
def device_ids(collection: Sharded, batch: Mapping, table: str,
               num_devices: int | None = None) -> list[np.ndarray]:
    """The ids of `table` each device looks up for a host (global) batch: the
    batch split evenly over the devices (default: the mesh's), every feature
    of the table."""
    feats = [f for f in collection.features.values() if f.table == table]
    w = num_devices or collection.num_shards
    parts = [np.asarray(batch["ids"][f.name], np.int64).reshape(len(batch["ids"][f.name]), -1)
             for f in feats]
    ids = np.concatenate(parts, axis=1)
    return [chunk.reshape(-1) for chunk in np.split(ids, w)]


def peek(collection: Sharded, batches: Iterable[Mapping], *,
         max_batches: int = 100, num_devices: int | None = None) -> list[TableStats]:
    """Exact per-table counts of the ids the exchange would carry (per-device
    dedup, remote ids only) over up to `max_batches` host batches, on this
    mesh or, with `num_devices`, as a mesh of that many devices would see the
    same global batches (to plan for another cluster's profile)."""
    batches = list(b for _, b in zip(range(max_batches), batches))
    w = num_devices or collection.num_shards
    out = []
    for t in (t for g in collection.groups for t in g):
        out.append(collect_table_stats(
            (device_ids(collection, b, t, w) for b in batches), name=t,
            dim=collection.tables[t].dim, num_devices=w, max_batches=max_batches,
            owner_fn=lambda ids: owner_of(ids, w)))
    return out


# ------------------------------------------------------------- cost profile
def measure_profile(collection: Sharded, *, dim: int = 64, repeats: int = 5,
                    cache_dir: str | None = None) -> CostProfile:
    """C_ar and C_a2a of this mesh, measured with the real step: a one-table
    collection is timed with n cold lookups per device (the whole cold path:
    dedup, routing, owner index, rows and gradients both ways, the fused
    update) and with R hot rows beside a fixed small batch (the whole hot
    path: local lookup, gradient buffer, all-reduce, replica update). Least
    squares fits give per-byte costs and r^2. Cached per mesh shape and dim
    when `cache_dir` is given."""
    w = collection.num_shards
    cache = ProfileCache(cache_dir) if cache_dir else None
    key = dict(mesh_shape=(w,), dim=dim, dtype="float32")
    if cache is not None:
        hit = cache.get(**key)
        if hit is not None:
            return hit
    base_n = 256
    ms: list[Measurement] = []
    for n in (base_n, 1024, 4096, 16384):
        seconds = _time_probe(collection, dim, n, 0, repeats)
        ms.append(Measurement(kind="all_to_all", rows=n * (w - 1) // w, dim=dim,
                              bytes=n * (w - 1) // w * (8 + 2 * dim * 4), seconds=seconds,
                              num_devices=w, repeats=repeats))
        if n == base_n:
            base = seconds
    # the smallest R shows the fixed cost of having a hot fold at all
    for r in (16, 1024, 4096, 16384):
        extra = _time_probe(collection, dim, base_n, r, repeats) - base
        ms.append(Measurement(kind="all_reduce", rows=r, dim=dim, bytes=r * dim * 4,
                              seconds=max(extra, 1e-7), num_devices=w, repeats=repeats))
    dev = jax.devices()[0]
    profile = CostProfile.from_measurements(
        ms, name=f"live-{w}x{dev.platform}",
        source=f"one-table train steps on {w} {dev.device_kind} devices, "
               f"{time.strftime('%Y-%m-%d')}")
    if cache is not None:
        cache.put(profile=profile, **key)
    return profile


def _time_probe(collection: Sharded, dim: int, lookups: int, hot_rows: int,
                repeats: int) -> float:
    """Median seconds of a train step of a one-table collection on the same
    mesh: `lookups` distinct cold ids per device, plus `hot_rows` replicated
    rows that every device looks up (hot ids are the frequent ones): the
    local lookups, gradient buffers, all-reduce and replicated updates."""
    import optax

    w = collection.num_shards
    spec = TableSpec(name="probe", dim=dim, capacity=4 * lookups * w)
    feature = dataclasses.replace(next(iter(collection.features.values())), name="probe",
                                  table="probe", max_ids=1, pooling="sum", weighted=False)
    # a collection of the caller's class (this module sits below it)
    probe = type(collection)([spec], [feature], mesh=collection.mesh, axis=collection.axis,
                             retune_every=0)
    tx = optax.set_to_zero()
    step = probe.make_train_step(lambda p, emb, b: (emb["probe"] ** 2).mean(), tx)
    state = probe.init_train_state({}, tx)
    hot = np.arange(hot_rows, dtype=np.int64) + (1 << 40)
    if hot_rows:
        state = apply_plan(probe, state, {"probe": hot})
    cold = np.arange(lookups * w, dtype=np.int64).reshape(w, lookups)
    batch = {"ids": {"probe": np.concatenate(
        [np.concatenate([c, hot]) for c in cold])}}
    times = []
    for i in range(repeats + 2):
        t0 = time.perf_counter()
        state, _ = step(state, batch)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def plan(collection: Sharded, stats: Sequence[TableStats], profile: CostProfile, *,
         memory_budget_bytes: int, **kw) -> ReplicationPlan:
    """The planner's choice of R per table for this collection's tables, with
    the cost of the hot exchange its steps run (touched rows only)."""
    floats = {t.name: t.state_width for t in collection.tables.values()}
    value_bytes = {np.dtype(t.dtype).itemsize for t in collection.tables.values()}
    return plan_replication(stats, profile, memory_budget_bytes=memory_budget_bytes,
                            value_bytes=max(value_bytes), optimizer_state_floats_per_row=floats,
                            **{"hot_exchange": "touched", **kw})


# ---------------------------------------------------------------- the moves
def apply_plan(collection: Sharded, state: TrainState,
               plan: ReplicationPlan | Mapping[str, np.ndarray]) -> TrainState:
    """Moves rows between the folds so that each table's hot fold holds
    exactly the plan's hot ids (a plan, or {table: hot ids}; none removes the
    fold), at a step boundary. Rows keep their values, optimizer state and
    scores; ids no fold holds yet start hot with the row an insert would
    create. Tables the plan does not name are left as they are."""
    tables, hot = dict(state.tables), dict(state.hot)
    wanted = ({tp.name: tp.hot_ids for tp in plan.tables}
              if isinstance(plan, ReplicationPlan) else dict(plan))
    for name, hot_ids in wanted.items():
        spec = collection.tables[name]
        want = np.unique(np.asarray(hot_ids, np.int64))
        want = want[(want != PADDING_ID) & (want != ERASED_KEY)]
        old_hot = replica_rows(hot[name])[0] if name in hot else Rows.empty(spec)
        stay = np.isin(old_hot.keys, want)
        leaving = Rows(*(x[~stay] for x in old_hot))
        arriving = want[~np.isin(want, old_hot.keys)]
        moved_cold, tables[name] = _take_from_cold(collection, spec, tables[name], arriving)
        fresh = arriving[~np.isin(arriving, moved_cold.keys)]
        if len(leaving.keys):
            tables[name] = _put_into_cold(collection, spec, tables[name], leaving)
        counters = np.zeros((NUM_COUNTERS,), np.int64)
        if name in hot:
            counters = np.asarray(hot[name].counters.addressable_shards[0].data).copy()
        counters[_C["size"]] = 0
        counters[_C["inserted"]] += len(fresh)
        counters[_C["moved_in"]] += len(moved_cold.keys)
        counters[_C["moved_out"]] += len(leaving.keys)
        if not len(want):
            # no hot fold any more: its history joins the cold fold's counters
            hot.pop(name, None)
            tables[name] = tables[name]._replace(
                counters=tables[name].counters.at[:NUM_COUNTERS].add(jnp.asarray(counters)))
            continue
        rows = Rows.concat([Rows(*(x[stay] for x in old_hot)), moved_cold,
                            _fresh_rows(spec, fresh)])
        hot[name] = replicate_rows(spec, rows, counters, collection.mesh)
        log.info("table %r: hot fold of %d ids (%d stayed, %d from the cold fold, %d new, "
                 "%d back to the cold fold)", name, len(want), int(stay.sum()),
                 len(moved_cold.keys), len(fresh), len(leaving.keys))
    return state._replace(tables=tables, hot=hot)


def _fresh_rows(spec: TableSpec, ids: np.ndarray) -> Rows:
    """Rows exactly as find_or_insert would create them (never accessed)."""
    n = len(ids)
    return Rows(ids.astype(np.int64), init_rows(spec.seed, ids, spec.dim, spec.initializer,
                                                dtype=np.dtype(spec.dtype)),
                np.tile(spec.optimizer.initial_state(spec.dim), (n, 1)).astype(np.float32),
                np.zeros((n,), np.int64), np.zeros((n,), np.int64))


def _per_shard(collection, fn, state: TableState, *inputs, out):
    """shard_map of fn(local state, *inputs) over the collection's axis;
    inputs are replicated, outputs sharded like `out` specs."""
    ax = collection.axis
    specs = sharded_specs(ax)
    return jax.jit(jax.shard_map(fn, mesh=collection.mesh,
                                 in_specs=(specs,) + tuple(P() for _ in inputs),
                                 out_specs=out))(state, *inputs)


def _take_from_cold(collection, spec: TableSpec, state: TableState, ids: np.ndarray
                    ) -> tuple[Rows, TableState]:
    """Removes `ids` from the cold fold, returning the rows that were there
    (with their state and scores); counted as moved out, not erased."""
    if not len(ids):
        return Rows.empty(spec), state
    w, ax = collection.num_shards, collection.axis
    q = jnp.asarray(ids, jnp.int64)

    def local(st: TableState, q):
        rows, found = export_keys(spec, st, q)
        st, erased = erase(spec, st, q)
        moved = erased.sum()
        counters = st.counters.at[_C["erased"]].add(-moved).at[_C["moved_out"]].add(moved)
        return st._replace(counters=counters), (found,) + tuple(rows[1:])

    new, (found, values, opt, last, freq) = _per_shard(
        collection, local, state, q,
        out=(sharded_specs(ax), (P(ax),) * 5))
    found, values, opt, last, freq = (host_gather(x).reshape((w, len(ids)) + x.shape[1:])
                                      for x in (found, values, opt, last, freq))
    shard, idx = np.nonzero(found)
    return Rows(ids[idx], values[shard, idx], opt[shard, idx], last[shard, idx],
                freq[shard, idx]), new


def _put_into_cold(collection, spec: TableSpec, state: TableState, rows: Rows) -> TableState:
    """Inserts whole rows into their owner shards of the cold fold (counted as
    moved in); raises TableFullError, the state unchanged, if some found no room."""
    ax = collection.axis
    args = rows_to_owners(rows, collection.mesh, ax)

    def local(st: TableState, k, v, o, ls, f):
        st, _, status = import_rows(spec, st, Rows(k, v, o, ls, f))
        st = st._replace(counters=st.counters.at[_C["moved_in"]].add(status[1]))
        return st, status[None, 3]

    specs = sharded_specs(ax)
    new, refused = jax.jit(jax.shard_map(
        local, mesh=collection.mesh, in_specs=(specs,) + (P(ax),) * 5,
        out_specs=(specs, P(ax))))(state, *args)
    refused = int(host_gather(refused).sum())
    if refused:
        raise TableFullError(f"table {spec.name!r}: {refused} rows leaving the hot fold found "
                             f"no room in their cold shards; grow the table first")
    return new


# ------------------------------------------------------------- re-planning
@dataclasses.dataclass
class Replicator:
    """Keeps the hot folds planned during training.

    Counts the exchanged ids of every step online (decayed, bounded memory)
    and re-plans every `every` steps, or earlier when a table's hot set covers
    less than `min_coverage` of its exchanged lookups. Re-plans move rows at a
    step boundary, so the model is unchanged (I2)."""

    collection: Sharded
    profile: CostProfile
    memory_budget_bytes: int
    every: int = 1000
    min_coverage: float | None = None
    decay: float = 0.99
    counter_capacity: int = 1 << 16
    plan: ReplicationPlan | None = None
    replans: int = 0

    def __post_init__(self):
        w = self.collection.num_shards
        self._counters = {t: DecayedCounter(capacity=self.counter_capacity, decay=self.decay,
                                            num_devices=w, owner_fn=lambda ids: owner_of(ids, w))
                          for g in self.collection.groups for t in g}
        self._steps = 0

    def start(self, state: TrainState, sample: Iterable[Mapping]) -> TrainState:
        """Plans from an exact peek at `sample` (e.g. the first 100 batches)."""
        stats = peek(self.collection, sample)
        self.plan = plan(self.collection, stats, self.profile,
                         memory_budget_bytes=self.memory_budget_bytes)
        return apply_plan(self.collection, state, self.plan)

    def observe(self, state: TrainState, batch: Mapping) -> TrainState:
        """Counts a (host) batch just trained on; re-plans when due."""
        for t, counter in self._counters.items():
            counter.update(device_ids(self.collection, batch, t))
        self._steps += 1
        due = self._steps % self.every == 0
        if not due and self.min_coverage is not None and self.plan is not None:
            due = any(self._counters[tp.name].coverage_of(tp.hot_ids) < self.min_coverage
                      for tp in self.plan.tables if tp.hot_rows)
        if not due:
            return state
        stats = []
        for t, counter in self._counters.items():
            ids, est = counter.top(self.counter_capacity)
            stats.append(TableStats.from_counts(
                name=t, dim=self.collection.tables[t].dim, ids=ids,
                counts=np.maximum(np.round(est), 1).astype(np.int64),
                num_batches=max(1, int(round(1 / (1 - self.decay)))),
                num_devices=self.collection.num_shards))
        self.plan = plan(self.collection, stats, self.profile,
                         memory_budget_bytes=self.memory_budget_bytes)
        self.replans += 1
        return apply_plan(self.collection, state, self.plan)


def fold_counters(state: TrainState) -> dict[str, dict[str, int]]:
    """Counters of each table summed over shards and both folds."""
    return {name: counters_by_name(c)
            for name, c in counter_totals(state.tables, state.hot).items()}


__all__ = ["peek", "measure_profile", "plan", "apply_plan", "Replicator",
           "fold_counters", "device_ids"]
