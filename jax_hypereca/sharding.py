"""Tables sharded over a device mesh: the decentralized index and the routed
exchange (the model-parallel fold).

Every device owns the ids that hash to it (``owner_of``, the one owner hash).
Inside ``shard_map``, per exchange group (tables of one dim and dtype):

forward   dedup the local ids per table (unique) -> bucketize by owner into
          static per-destination buffers -> all_to_all ids -> find_or_insert
          (or find, for evaluation) + gather on the owner -> all_to_all rows
          back -> expand by the inverse and pool per feature.
backward  d loss / d pooled -> per unique id (the pooling's transpose) ->
          scattered into the same buffers -> all_to_all -> the owner sums the
          senders' gradients of a slot and applies the fused optimizer.

Per-destination capacities are static. A batch that needs more is detected
before anything is updated: every device learns it through one max-reduction,
the exchange then carries only padding (no insert, no update) and the host
re-runs the step with larger capacities (see collection.py).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jax_hypereca import _ops
from jax_hypereca.errors import PADDING_ID
from jax_hypereca.features import FeatureSpec
from jax_hypereca.table import (
    NUM_COUNTERS, TableSpec, TableState, apply_gradients, find_or_insert, gather)
from jax_hypereca.table import find as table_find

# Per-device statistics, one int64 vector per table (see Layout.stat_names).
STAT_NAMES = ("ids", "unique", "remote_unique", "max_count", "queries", "hits", "inserted",
              "evicted", "reserved", "failed", "apply_nonfinite")
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
    groups and per-destination capacities. Hashable (a jit cache key)."""

    tables: tuple[TableSpec, ...]
    features: tuple[FeatureSpec, ...]
    num_shards: int
    axis: str
    capacities: tuple[int, ...]  # per table, ids per destination per step

    @property
    def table_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tables)

    def spec(self, name: str) -> TableSpec:
        return self.tables[self.table_names.index(name)]

    def cap(self, name: str) -> int:
        return self.capacities[self.table_names.index(name)]

    def features_of(self, table: str) -> tuple[FeatureSpec, ...]:
        return tuple(f for f in self.features if f.table == table)

    @property
    def groups(self) -> tuple[tuple[str, ...], ...]:
        """Tables that share one exchange: same dim and storage dtype."""
        out: dict[tuple, list[str]] = {}
        for t in self.tables:
            if self.features_of(t.name):
                out.setdefault((t.dim, np.dtype(t.dtype).name), []).append(t.name)
        return tuple(tuple(v) for v in out.values())

    def bytes_per_step(self) -> dict[str, int]:
        """Bytes one device sends to other devices per training step, padding
        included (the self block of each all_to_all stays on the device)."""
        ids = rows = grads = 0
        for g in self.groups:
            cap = sum(self.cap(t) for t in g)
            spec = self.spec(g[0])
            ids += (self.num_shards - 1) * cap * 8
            rows += (self.num_shards - 1) * cap * spec.dim * np.dtype(spec.dtype).itemsize
            grads += (self.num_shards - 1) * cap * spec.dim * 4
        return {"ids": ids, "rows": rows, "grads": grads}


class TableContext(NamedTuple):
    """What the backward pass of one table needs from its forward pass."""

    inverse: jax.Array  # (n,) int32 local id -> unique index, -1 padding
    position: jax.Array  # (n_unique,) int32 into the send buffer, -1 padding
    slots: jax.Array     # (W * cap,) int32 owner slots of the received ids


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


def _table_ids(layout: Layout, table: str, ids: Mapping[str, jax.Array]):
    feats = layout.features_of(table)
    return jnp.concatenate([ids[f.name].reshape(-1) for f in feats]), feats


def _pool_table(layout: Layout, table: str, urows, inverse, weights, batch: int):
    """All features of `table` from its unique rows (linear in urows)."""
    out, start = {}, 0
    for f in layout.features_of(table):
        n = batch * f.max_ids
        w = weights.get(f.name) if f.weighted else None
        out[f.name] = _pool(f, urows, lax.dynamic_slice_in_dim(inverse, start, n), w, batch)
        start += n
    return out


def forward_local(layout: Layout, tables: dict[str, TableState], ids: dict, weights: dict,
                  step, *, train: bool):
    """Per-device forward exchange (call inside shard_map over layout.axis).

    Returns (tables, outputs per feature, contexts per table, stats (T, S))."""
    W, ax = layout.num_shards, layout.axis
    me = lax.axis_index(ax)
    batch = next(iter(ids.values())).shape[0]
    local: dict[str, tuple] = {}
    too_big = jnp.zeros((), jnp.int32)
    stats = {}
    for t in layout.table_names:
        if not layout.features_of(t):
            continue
        flat, _ = _table_ids(layout, t, ids)
        uniq, inverse, count = _ops.unique(flat)
        send, counts, position = _ops.bucketize(uniq, num_shards=W, capacity=layout.cap(t))
        too_big = jnp.maximum(too_big, (counts > layout.cap(t)).any().astype(jnp.int32))
        local[t] = (inverse, position, send)
        st = jnp.zeros((len(STAT_NAMES),), jnp.int64)
        st = st.at[_ST["ids"]].set((flat != PADDING_ID).sum())
        st = st.at[_ST["unique"]].set(count)
        remote = jnp.where(jnp.arange(W) == me, 0, jnp.minimum(counts, layout.cap(t)))
        st = st.at[_ST["remote_unique"]].set(remote.sum())
        stats[t] = st.at[_ST["max_count"]].set(counts.max())
    # One max-reduction tells every device whether some buffer would overflow;
    # then nothing is exchanged, inserted or updated this step.
    ok = lax.pmax(too_big, ax) == 0

    urows, slots = {}, {}
    for group in layout.groups:
        caps = [layout.cap(t) for t in group]
        send = jnp.concatenate([local[t][2] for t in group], axis=1)
        send = jnp.where(ok, send, PADDING_ID)
        recv = lax.all_to_all(send, ax, 0, 0, tiled=True)
        parts, off = [], 0
        for t, cap in zip(group, caps):
            spec = layout.spec(t)
            q = recv[:, off:off + cap].reshape(-1)
            if train:
                tables[t], res = find_or_insert(spec, tables[t], q, step=step)
                rows = gather(tables[t], res.slots)
                slots[t] = res.slots
                status = res.status
                stats[t] = stats[t].at[_ST["queries"]:_ST["failed"] + 1].set(status[:6])
            else:
                rows, _ = table_find(spec, tables[t], q, miss_init=True)
            parts.append(rows.reshape(W, cap, spec.dim))
            off += cap
        back = lax.all_to_all(jnp.concatenate(parts, axis=1), ax, 0, 0, tiled=True)
        off = 0
        for t, cap in zip(group, caps):
            b = back[:, off:off + cap].reshape(W * cap, -1).astype(jnp.float32)
            pos = local[t][1]
            urows[t] = jnp.where((pos >= 0)[:, None], jnp.take(b, jnp.maximum(pos, 0), axis=0),
                                 0.0)
            off += cap

    outputs, contexts = {}, {}
    for t, u in urows.items():
        outputs.update(_pool_table(layout, t, u, local[t][0], weights, batch))
        if train:
            contexts[t] = TableContext(local[t][0], local[t][1], slots[t])
    stat_matrix = jnp.stack([stats[t] for t in layout.table_names if t in stats])
    return tables, outputs, contexts, stat_matrix, ok


def backward_local(layout: Layout, tables: dict[str, TableState], grads: dict,
                   contexts: dict[str, TableContext], weights: dict, step, ok):
    """Per-device backward exchange: routes d loss / d outputs to the owners
    and applies the fused optimizer there. Returns (tables, nonfinite (T,))."""
    W, ax = layout.num_shards, layout.axis
    batch = next(iter(grads.values())).shape[0]
    nonfinite = {}
    for group in layout.groups:
        parts = []
        for t in group:
            spec, cap, ctx = layout.spec(t), layout.cap(t), contexts[t]
            n_unique = ctx.position.shape[0]

            def pooled(u, t=t, ctx=ctx):
                return _pool_table(layout, t, u, ctx.inverse, weights, batch)

            # The linearization point must vary over the axis like the data:
            # an axis-invariant one would make the transpose psum the gradients.
            zero = lax.pcast(jnp.zeros((n_unique, spec.dim), jnp.float32), ax, to="varying")
            _, vjp = jax.vjp(pooled, zero)
            (g_unique,) = vjp({f.name: grads[f.name] for f in layout.features_of(t)})
            target = jnp.where(ctx.position >= 0, ctx.position, W * cap)
            buf = jnp.zeros((W * cap, spec.dim), jnp.float32).at[target].set(g_unique,
                                                                             mode="drop")
            parts.append(buf.reshape(W, cap, spec.dim))
        recv = lax.all_to_all(jnp.concatenate(parts, axis=1), ax, 0, 0, tiled=True)
        off = 0
        for t in group:
            cap = layout.cap(t)
            g = recv[:, off:off + cap].reshape(W * cap, -1)
            slot = jnp.where(ok, contexts[t].slots, -1)
            tables[t], status = apply_gradients(layout.spec(t), tables[t], slot, g, step=step)
            nonfinite[t] = status[1]
            off += cap
    return tables, jnp.stack([nonfinite[t] for t in layout.table_names if t in nonfinite])


def initial_capacity(ids_per_device: int, num_shards: int, slack: float = 2.0) -> int:
    """A first per-destination capacity for a table whose local batch holds
    `ids_per_device` ids (the collection raises it from observed counts)."""
    if num_shards == 1:
        return max(8, _round8(ids_per_device))
    return max(8, min(_round8(ids_per_device), _round8(math.ceil(ids_per_device / num_shards
                                                                   * slack))))


def _round8(x: float) -> int:
    return int(math.ceil(x / 8)) * 8
