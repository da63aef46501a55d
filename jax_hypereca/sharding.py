"""Tables sharded over a device mesh: the decentralized index and the routed
exchange (the model-parallel fold).

Every device owns the ids that hash to it (``owner_of``, the one owner hash).
Inside ``shard_map``, per exchange group (tables of one dim and dtype):

forward   dedup the local ids per table (unique) -> one tagged list per group
          -> bucketize by owner into one static per-destination buffer ->
          all_to_all (id, table tag) -> find_or_insert per table (or find, for
          evaluation) + one tagged gather on the owner -> all_to_all rows back
          -> expand by the inverse and pool per feature.
backward  d loss / d pooled -> per unique id (the pooling's transpose) ->
          scattered into the same buffers -> all_to_all -> the owner sums the
          senders' gradients of a slot and applies the fused optimizer.

Per-destination capacities are static. A batch that needs more is detected
before anything is updated: every device learns it through one max-reduction,
the exchange then carries only padding (no insert, no update) and the host
re-runs the step with larger capacities (see collection.py). Likewise, when an
owner must refuse an id a row (its bucket is full of rows this very step
uses), a second max-reduction cancels the step's updates and the host grows
the table before re-running it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import NamedTuple

import jax
import jax.experimental.multihost_utils
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jax_hypereca import _ops
from jax_hypereca.errors import ERASED_KEY, PADDING_ID
from jax_hypereca.hashing import owner_of
from jax_hypereca.features import FeatureSpec
from jax_hypereca.table import (
    COUNTER_NAMES, NUM_COUNTERS, Rows, TableSpec, TableState, apply_gradients, find_or_insert,
    find_slots, gather, import_rows, init_table)
from jax_hypereca.table import find as table_find

log = logging.getLogger("jax_hypereca")

# Per-device statistics, one int64 vector per table (see Layout.stat_names).
STAT_NAMES = ("ids", "unique", "remote_unique", "max_count", "queries", "hits", "inserted",
              "evicted", "reserved", "failed", "resident", "hot_unique", "apply_nonfinite")
_ST = {n: i for i, n in enumerate(STAT_NAMES)}


def make_mesh(devices=None, axis_name: str = "shard") -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every process)."""
    devs = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devs.reshape(-1), (axis_name,))


def init_sharded_table(spec: TableSpec, mesh: Mesh, axis: str) -> TableState:
    """An empty table split over the mesh axis: each device holds a shard of
    spec.shard_geometry(W) rows (global arrays sharded along axis 0)."""
    w = mesh.shape[axis]
    rows, _ = spec.shard_geometry(w)
    sharding = NamedSharding(mesh, P(axis))

    def make():
        return TableState(
            keys=jnp.full((w * rows,), PADDING_ID, jnp.int64),
            values=jnp.zeros((w * rows, spec.dim), spec.dtype),
            opt_state=jnp.zeros((w * rows, spec.state_width), jnp.float32),
            last_step=jnp.zeros((w * rows,), jnp.int64),
            freq=jnp.zeros((w * rows,), jnp.int64),
            counters=jnp.zeros((w * NUM_COUNTERS,), jnp.int64))

    return jax.jit(make, out_shardings=TableState(*([sharding] * 6)))()


@dataclasses.dataclass(frozen=True)
class Layout:
    """Static description of one compiled exchange: features, tables, exchange
    groups and their per-destination capacities. Hashable (a jit cache key)."""

    tables: tuple[TableSpec, ...]
    features: tuple[FeatureSpec, ...]
    num_shards: int
    axis: str
    capacities: tuple[int, ...]  # per group: ids one device sends one owner per step
    evict: bool = True            # False: every row is pinned; full buckets grow the table
    hot: tuple[str, ...] = ()     # tables with a replicated hot fold

    @property
    def table_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tables)

    def spec(self, name: str) -> TableSpec:
        return self.tables[self.table_names.index(name)]

    def features_of(self, table: str) -> tuple[FeatureSpec, ...]:
        return tuple(f for f in self.features if f.table == table)

    @property
    def groups(self) -> tuple[tuple[str, ...], ...]:
        """Tables that share one exchange (one buffer, one capacity): same dim
        and storage dtype, in table order."""
        return exchange_groups(self.tables, self.features)

    @property
    def looked_up(self) -> tuple[str, ...]:
        """Tables some feature looks up, in stats order."""
        return tuple(t for g in self.groups for t in g)

    def bytes_per_step(self) -> dict[str, int]:
        """Bytes one device sends to other devices per training step, padding
        included (the self block of each all_to_all stays on the device)."""
        ids = rows = grads = 0
        for g, cap in zip(self.groups, self.capacities):
            spec = self.spec(g[0])
            ids += (self.num_shards - 1) * cap * 16  # key + table tag
            rows += (self.num_shards - 1) * cap * spec.dim * np.dtype(spec.dtype).itemsize
            grads += (self.num_shards - 1) * cap * spec.dim * 4
        return {"ids": ids, "rows": rows, "grads": grads}


def exchange_groups(tables, features) -> tuple[tuple[str, ...], ...]:
    """Looked-up tables grouped by (dim, storage dtype)."""
    used = {f.table for f in features}
    out: dict[tuple, list[str]] = {}
    for t in tables:
        if t.name in used:
            out.setdefault((t.dim, np.dtype(t.dtype).name), []).append(t.name)
    return tuple(tuple(v) for v in out.values())


class TableContext(NamedTuple):
    """What the backward pass of one exchange group needs from its forward."""

    inverse: jax.Array    # (n,) int32 local id -> index into the group's unique list
    position: jax.Array   # (N,) int32 unique id -> send-buffer position, -1 padding/hot
    slots: jax.Array      # (T, W * cap) int32 owner slots per table, -1 elsewhere
    hot_slots: jax.Array  # (N,) int32 slot in the table's hot fold, -1 when cold


def _pool(feature: FeatureSpec, rows, inverse, weights, batch: int):
    """Rows of the unique ids -> the feature's output ([b, D] or [b, L, D])."""
    L = feature.max_ids
    valid = (inverse >= 0).reshape(batch, L)
    r = jnp.take(rows, jnp.maximum(inverse, 0), axis=0).reshape(batch, L, -1)
    w = valid.astype(jnp.float32)
    if weights is not None:
        w = w * weights.reshape(batch, L)
    r = r * w[..., None]
    if feature.pooling == "none":
        return r
    s = r.sum(axis=1)
    if feature.pooling == "sum":
        return s
    den = w.sum(axis=1, keepdims=True)
    return jnp.where(den > 0, s / jnp.where(den > 0, den, 1.0), 0.0)


def _group_features(layout: Layout, group) -> list[FeatureSpec]:
    return [f for t in group for f in layout.features_of(t)]


def _pool_group(layout: Layout, group, urows, inverse, weights, batch: int):
    """Every feature of the group from its unique rows (linear in urows)."""
    out, start = {}, 0
    for f in _group_features(layout, group):
        n = batch * f.max_ids
        w = weights.get(f.name) if f.weighted else None
        out[f.name] = _pool(f, urows, lax.dynamic_slice_in_dim(inverse, start, n), w, batch)
        start += n
    return out


def _dedup_group(layout: Layout, group, ids, hot):
    """Per table: unique ids, split into the hot fold (found in the local
    replica) and the cold rest; concatenated over the group with table tags.
    Returns (cold keys (N,), tags (N,), hot slots (N,), inverse (n,), stats)."""
    keys, tags, hot_slots, inverse, stats, offset = [], [], [], [], [], 0
    for i, t in enumerate(group):
        flat = jnp.concatenate([ids[f.name].reshape(-1) for f in layout.features_of(t)])
        uniq, inv, count = _ops.unique(flat)
        if t in hot:
            hs = find_slots(layout.spec(t), hot[t], uniq)[0]
            uniq = jnp.where(hs >= 0, PADDING_ID, uniq)
        else:
            hs = jnp.full(uniq.shape, -1, jnp.int32)
        keys.append(uniq)
        hot_slots.append(hs)
        tags.append(jnp.where(uniq != PADDING_ID, i, -1).astype(jnp.int32))
        inverse.append(jnp.where(inv >= 0, inv + offset, -1))
        stats.append(((flat != PADDING_ID).sum(), count, (hs >= 0).sum()))
        offset += flat.shape[0]
    return (jnp.concatenate(keys), jnp.concatenate(tags), jnp.concatenate(hot_slots),
            jnp.concatenate(inverse), stats)


def _group_segments(layout: Layout, group, batch: int):
    """(table, start, length) of each table's unique list in the group's."""
    out, start = [], 0
    for t in group:
        n = batch * sum(f.max_ids for f in layout.features_of(t))
        out.append((t, start, n))
        start += n
    return out


def forward_local(layout: Layout, tables: dict[str, TableState], hot: dict[str, TableState],
                  ids: dict, weights: dict, step, *, train: bool):
    """Per-device forward exchange (call inside shard_map over layout.axis).
    `hot` holds the replicated hot folds (every device has all of them).

    Returns (tables, outputs per feature, contexts per group, stats (T, S), ok)."""
    W, ax = layout.num_shards, layout.axis
    me = lax.axis_index(ax)
    batch = next(iter(ids.values())).shape[0]
    local, stats = [], {}
    too_big = jnp.zeros((), jnp.int32)
    for group, cap in zip(layout.groups, layout.capacities):
        keys, tags, hot_slots, inverse, tstats = _dedup_group(layout, group, ids, hot)
        send, counts, position = _ops.bucketize(keys, num_shards=W, capacity=cap)
        too_big = jnp.maximum(too_big, (counts > cap).any().astype(jnp.int32))
        tag_send = jnp.full((W * cap + 1,), -1, jnp.int32).at[
            jnp.where(position >= 0, position, W * cap)].set(tags)[:-1].reshape(W, cap)
        local.append((inverse, position, send, tag_send, hot_slots))
        remote = (position >= 0) & (position // cap != me)
        for i, t in enumerate(group):
            st = jnp.zeros((len(STAT_NAMES),), jnp.int64)
            st = st.at[_ST["ids"]].set(tstats[i][0]).at[_ST["unique"]].set(tstats[i][1])
            st = st.at[_ST["hot_unique"]].set(tstats[i][2])
            st = st.at[_ST["remote_unique"]].set((remote & (tags == i)).sum())
            stats[t] = st.at[_ST["max_count"]].set(counts.max())
    # One max-reduction tells every device whether some buffer would overflow;
    # then nothing is exchanged, inserted or updated this step.
    ok = lax.pmax(too_big, ax) == 0

    urows, contexts = [], []
    refused = jnp.zeros((), jnp.int32)
    for gi, (group, cap) in enumerate(zip(layout.groups, layout.capacities)):
        inverse, position, send, tag_send, hot_slots = local[gi]
        send = jnp.where(ok, send, PADDING_ID)
        payload = jnp.stack([send, tag_send.astype(jnp.int64)], axis=-1)
        recv = lax.all_to_all(payload, ax, 0, 0, tiled=True).reshape(W * cap, 2)
        q_keys, q_tags = recv[:, 0], recv[:, 1].astype(jnp.int32)
        if train:
            slots = []
            for i, t in enumerate(group):
                # An id arrives once from each device that looked it up: the owner
                # looks it up once, so its scores count steps whatever the mesh.
                q, inv, _ = _ops.unique(jnp.where(q_tags == i, q_keys, PADDING_ID))
                tables[t], res = find_or_insert(layout.spec(t), tables[t], q, step=step,
                                                pin_from=None if layout.evict else 0)
                slots.append(jnp.where(inv >= 0, res.slots[jnp.maximum(inv, 0)], -1))
                stats[t] = stats[t].at[_ST["queries"]:_ST["failed"] + 1].set(res.status[:6])
                stats[t] = stats[t].at[_ST["resident"]].set(tables[t].counters[0])
                refused = jnp.maximum(refused, (res.status[5] > 0).astype(jnp.int32))
            # each entry has a slot in its own table only (-1 in the others)
            rows = _ops.gather_tagged(q_tags, jnp.max(jnp.stack(slots), axis=0),
                                      [tables[t].values for t in group])
            contexts.append(TableContext(inverse, position, jnp.stack(slots), hot_slots))
        else:
            rows = _rows_or_init(layout, group, tables, q_keys, q_tags)
            for i, t in enumerate(group):  # find gives a reserved id no row: reported
                reserved = ((q_tags == i) & (q_keys == ERASED_KEY)).sum()
                stats[t] = stats[t].at[_ST["reserved"]].set(reserved)
        back = lax.all_to_all(rows.reshape(W, cap, -1), ax, 0, 0, tiled=True)
        b = back.reshape(W * cap, -1).astype(jnp.float32)
        cold = jnp.where((position >= 0)[:, None],
                         jnp.take(b, jnp.maximum(position, 0), axis=0), 0.0)
        urows.append(_with_hot_rows(layout, group, hot, hot_slots, cold, batch))
    if train:
        # An id refused a row (its bucket is full of this step's rows): nothing
        # is updated this step; the host grows the table and re-runs it.
        ok = ok & (lax.pmax(refused, ax) == 0)
    outputs = {}
    for gi, group in enumerate(layout.groups):
        outputs.update(_pool_group(layout, group, urows[gi], local[gi][0], weights, batch))
    stat_matrix = jnp.stack([stats[t] for t in layout.looked_up])
    return tables, outputs, tuple(contexts) if train else (), stat_matrix, ok


def _with_hot_rows(layout: Layout, group, hot, hot_slots, cold, batch: int):
    """The group's unique rows: the local replica's for hot ids, else `cold`."""
    if not any(t in hot for t in group):
        return cold
    parts = []
    for t, start, n in _group_segments(layout, group, batch):
        seg = lax.dynamic_slice_in_dim(hot_slots, start, n)
        if t in hot:
            parts.append(gather(hot[t], seg).astype(jnp.float32))
        else:
            parts.append(jnp.zeros((n, cold.shape[1]), jnp.float32))
    return jnp.where((hot_slots >= 0)[:, None], jnp.concatenate(parts), cold)


def _rows_or_init(layout: Layout, group, tables, keys, tags):
    """Evaluation rows: the resident row, else the row an insert would create
    (one find per table of the group; the others' entries come back zero)."""
    rows = None
    for i, t in enumerate(group):
        spec = layout.spec(t)
        r, _ = table_find(spec, tables[t], jnp.where(tags == i, keys, PADDING_ID),
                          miss_init=True)
        rows = r if rows is None else rows + r  # other tables' entries are zero rows
    return rows


def backward_local(layout: Layout, tables: dict[str, TableState], hot: dict[str, TableState],
                   grads: dict, contexts, weights: dict, step, ok):
    """Per-device backward exchange: routes d loss / d outputs of cold ids to
    their owners, which apply the fused optimizer; sums the hot ids' gradients
    over all devices (one all-reduce per group) and applies them identically
    on every replica. Returns (tables, hot, apply problems (T, 2): gradient
    rows skipped as non-finite, slots outside the table)."""
    W, ax = layout.num_shards, layout.axis
    batch = next(iter(grads.values())).shape[0]
    problems = {}
    for group, cap, ctx in zip(layout.groups, layout.capacities, contexts):
        dim = layout.spec(group[0]).dim
        n_unique = ctx.position.shape[0]

        def pooled(u, group=group, ctx=ctx):
            return _pool_group(layout, group, u, ctx.inverse, weights, batch)

        # The linearization point must vary over the axis like the data: an
        # axis-invariant one would make the transpose psum the gradients.
        zero = lax.pcast(jnp.zeros((n_unique, dim), jnp.float32), ax, to="varying")
        _, vjp = jax.vjp(pooled, zero)
        (g_unique,) = vjp({f.name: grads[f.name] for f in _group_features(layout, group)})
        target = jnp.where(ctx.position >= 0, ctx.position, W * cap)
        buf = jnp.zeros((W * cap, dim), jnp.float32).at[target].set(g_unique, mode="drop")
        recv = lax.all_to_all(buf.reshape(W, cap, dim), ax, 0, 0, tiled=True)
        g = recv.reshape(W * cap, dim)
        for i, t in enumerate(group):
            slot = jnp.where(ok, ctx.slots[i], -1)
            tables[t], status = apply_gradients(layout.spec(t), tables[t], slot, g, step=step)
            problems[t] = status[1:3]
        hot, hot_problems = _apply_hot(layout, group, hot, ctx.hot_slots, g_unique, batch,
                                       step, ok)
        for t, p in hot_problems.items():
            problems[t] = problems[t] + p
    return tables, hot, jnp.stack([problems[t] for t in layout.looked_up])


def _apply_hot(layout: Layout, group, hot, hot_slots, g_unique, batch: int, step, ok):
    """Data-parallel update of the group's hot folds: per hot row, the sum of
    every device's gradient (and a touch count, so only rows some device used
    are updated, and their scores set as the cold fold's lookup sets them:
    last step = this step, freq + 1), one psum for the whole group. Returns
    (hot, per table (non-finite rows skipped, bad slots))."""
    tables = [(t, start, n) for t, start, n in _group_segments(layout, group, batch) if t in hot]
    if not tables:
        return hot, {}
    bufs = []
    for t, start, n in tables:
        rows = hot[t].capacity
        seg = lax.dynamic_slice_in_dim(hot_slots, start, n)
        g = lax.dynamic_slice_in_dim(g_unique, start, n)
        g1 = jnp.concatenate([g, (seg >= 0).astype(jnp.float32)[:, None]], axis=1)
        bufs.append(jnp.zeros((rows, g.shape[1] + 1), jnp.float32).at[
            jnp.where(seg >= 0, seg, rows)].add(g1, mode="drop"))
    summed = lax.psum(jnp.concatenate(bufs), layout.axis)
    hot, skipped, off = dict(hot), {}, 0
    for t, _, _ in tables:
        rows = hot[t].capacity
        part = summed[off:off + rows]
        touched = ok & (part[:, -1] > 0)
        slot = jnp.where(touched, jnp.arange(rows, dtype=jnp.int32), -1)
        hot[t], status = apply_gradients(layout.spec(t), hot[t], slot, part[:, :-1], step=step)
        hot[t] = hot[t]._replace(last_step=jnp.where(touched, step + 1, hot[t].last_step),
                                 freq=hot[t].freq + touched)
        skipped[t] = status[1:3]
        off += rows
    return hot, skipped


def grow_sharded_table(spec: TableSpec, state: TableState, mesh: Mesh, axis: str,
                       rows_per_shard: int) -> TableState:
    """Rehashes every shard into `rows_per_shard` rows, keeping every row, its
    optimizer state, scores and the counters; ids stay on their owners.
    Raises TableFullError (the old state intact) if a row found no room."""
    from jax_hypereca.errors import TableFullError
    from jax_hypereca.table import _grow_import

    _, bucket = dataclasses.replace(spec, capacity=rows_per_shard).shard_geometry(1)

    def local(old: TableState):
        new = init_table(spec, rows=rows_per_shard)
        new = new._replace(counters=old.counters.at[0].set(0))
        new, _, status = _grow_import(new, old, bucket_size=bucket)
        return new, status[None, 3]

    specs = TableState(*([P(axis)] * 6))
    new, refused = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(specs,),
                                         out_specs=(specs, P(axis))))(state)
    refused = int(host_gather(refused).sum())
    if refused:
        raise TableFullError(f"table {spec.name!r}: growing to {rows_per_shard} rows per shard "
                             f"left {refused} rows without room; the table was not changed")
    return new


# ---------------------------------------------------------------- placement
def host_gather(x: jax.Array) -> np.ndarray:
    """Every process's shards of `x` concatenated on the host (tiled along
    axis 0), dtype kept: int64 goes through as int32 pairs, since
    process_allgather would narrow it."""
    if jax.process_count() == 1:
        return np.asarray(x)
    if x.dtype == jnp.int64:
        pairs = lax.bitcast_convert_type(x, jnp.int32)
        gathered = np.asarray(jax.experimental.multihost_utils.process_allgather(pairs, tiled=True))
        return np.ascontiguousarray(gathered).view(np.int64)[..., 0]
    return np.asarray(jax.experimental.multihost_utils.process_allgather(x, tiled=True))


def host_sum(value: int) -> int:
    """The sum over processes of a host integer."""
    if jax.process_count() == 1:
        return int(value)
    arr = jax.experimental.multihost_utils.process_allgather(np.int32(value))
    return int(np.sum(np.asarray(arr, np.int64)))


def to_device(a: np.ndarray, device) -> jax.Array:
    """A host array on `device`, its dtype kept (int64 stays int64)."""
    return jax.device_put(jnp.asarray(a, a.dtype), device)


def hot_capacity(hot_rows: int, bucket_size: int = 128) -> int:
    """Slots of a hot fold holding `hot_rows` ids: 1.5 R rounded up to whole
    buckets (a bucket of 128 then overflows with odds below 1e-6; a refused
    row would raise, never vanish), at least 16. Every step all-reduces a
    buffer of this many rows, so it is kept tight."""
    want = max(16, math.ceil(1.5 * hot_rows))
    if want <= bucket_size:
        return 1 << (want - 1).bit_length()
    return math.ceil(want / bucket_size) * bucket_size


def replica_rows(state: TableState) -> tuple[Rows, np.ndarray]:
    """The rows and counters of a replicated table (a hot fold), from this
    process's first replica (host copies)."""
    first = [np.array(getattr(state, f).addressable_shards[0].data, copy=True)
             for f in TableState._fields]
    return live_rows(first[:len(Rows._fields)]), first[-1]


def insert_rows(spec: TableSpec, rows: Rows, counters: np.ndarray, mesh: Mesh, axis: str, *,
                min_capacity: int = 0) -> TableState:
    """A table sharded over `mesh` holding `rows` (host arrays, keyed by id),
    each on its owner ``owner_of(id, W)``: every process builds its own
    shards with ``import_rows``. Capacity: the spec's, or `min_capacity` rows
    in total if larger (doubled while some bucket refuses a row). `counters`
    (totals) go to shard 0; each shard's size counts its rows."""
    w = mesh.shape[axis]
    rows_per_shard, _ = dataclasses.replace(
        spec, capacity=max(spec.capacity, min_capacity)).shard_geometry(w)
    owners = owner_of(rows.keys, w)
    base = _without_size(counters)

    def shard(s: int) -> tuple[Rows, np.ndarray]:
        return Rows(*(a[owners == s] for a in rows)), base if s == 0 else np.zeros_like(base)

    return _build(spec, NamedSharding(mesh, P(axis)), w, rows_per_shard, shard)


def replicate_rows(spec: TableSpec, rows: Rows, counters: np.ndarray, mesh: Mesh
                   ) -> TableState:
    """A hot fold: a table holding `rows` replicated on every device of
    `mesh` (``hot_capacity`` slots), with these counters."""
    base = _without_size(counters)
    return _build(spec, NamedSharding(mesh, P()), 1, hot_capacity(len(rows.keys),
                                                                 spec.bucket_size),
                  lambda _: (rows, base))


def _without_size(counters: np.ndarray) -> np.ndarray:
    """Counters with size 0 (the inserts count the rows again)."""
    out = np.array(counters, np.int64, copy=True)
    out[COUNTER_NAMES["size"]] = 0
    return out


def _build(spec: TableSpec, sharding: NamedSharding, blocks: int, rows_per_block: int,
           content) -> TableState:
    """A table of `blocks` x R rows laid out by `sharding`, block b (rows
    [bR, (b+1)R)) on the devices that hold it: an empty table into which
    ``content(b) = (rows, counters)`` is imported, on each device this
    process has. R doubles while some bucket refuses a row."""
    r = rows_per_block
    while True:
        shards, refused = {}, 0
        for dev, idx in sharding.addressable_devices_indices_map((blocks * r,)).items():
            rows, counters = content(idx[0].indices(blocks * r)[0] // r)
            with jax.default_device(dev):
                empty = init_table(spec, rows=r)
            state, _, status = import_rows(spec, empty._replace(counters=to_device(counters, dev)),
                                           Rows(*(to_device(a, dev) for a in rows)))
            shards[dev] = state
            refused += int(np.asarray(status)[3])
        refused = host_sum(refused)
        if not refused:
            break
        log.info("table %r: %d rows found no room in %d rows per device; doubling",
                 spec.name, refused, r)
        r *= 2
    fields = []
    for name in TableState._fields:
        arrays = [getattr(shards[d], name) for d in shards]
        shape = (blocks * arrays[0].shape[0],) + arrays[0].shape[1:]
        fields.append(jax.make_array_from_single_device_arrays(shape, sharding, arrays))
    return TableState(*fields)


def live_rows(arrays) -> Rows:
    """The occupied slots of one table's arrays (keys first, Rows order)."""
    live = (arrays[0] != PADDING_ID) & (arrays[0] != ERASED_KEY)
    return Rows(*(a[live] for a in arrays))
