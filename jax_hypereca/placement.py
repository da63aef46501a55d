"""Placement: the one place that knows how a table's rows, optimizer state,
scores and counters sit on a device mesh.

A sharded table (the cold fold) is a TableState of global arrays split along
axis 0 over one mesh axis: device d holds rows [d R, (d+1) R) and counter
vector d; id k lives on shard ``owner_of(k, W)``. A replicated table (a hot
fold, see replication.py) holds the same R rows on every device. Rows move
between host and mesh only through this module (`place_rows`, `host_gather`,
`tree_to_mesh`), counters are totalled only by `counter_totals`, and values
cross processes here (`host_gather`, `host_sum`, `all_processes`, `local_get`).
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import jax.experimental.multihost_utils
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jax_hypereca.errors import ERASED_KEY, PADDING_ID, TableFullError
from jax_hypereca.hashing import owner_of
from jax_hypereca.table import (
    COUNTER_NAMES, NUM_COUNTERS, Rows, TableSpec, TableState, _grow_import, import_rows,
    init_table)

log = logging.getLogger("jax_hypereca")


def make_mesh(devices=None, axis_name: str = "shard") -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every process)."""
    devs = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devs.reshape(-1), (axis_name,))


def sharded_specs(axis: str) -> TableState:
    """Partition specs of a table sharded along `axis` (every array on axis 0)."""
    return TableState(*([P(axis)] * len(TableState._fields)))


def replicated_specs() -> TableState:
    """Partition specs of a table replicated on every device (a hot fold)."""
    return TableState(*([P()] * len(TableState._fields)))


def init_sharded_table(spec: TableSpec, mesh: Mesh, axis: str) -> TableState:
    """An empty table split over the mesh axis: each device holds a shard of
    spec.shard_geometry(W) rows (global arrays sharded along axis 0)."""
    w = mesh.shape[axis]
    rows, _ = spec.shard_geometry(w)
    return TableState.empty(spec, w * rows, NamedSharding(mesh, P(axis)), shards=w)


def counter_totals(tables, hot=None) -> dict[str, np.ndarray]:
    """Each table's counters summed over its shards and, where it has one, its
    hot fold (counted once: every device holds the same replica)."""
    out = {}
    for name, st in tables.items():
        total = host_gather(st.counters).reshape(-1, NUM_COUNTERS).sum(axis=0)
        if hot and name in hot:
            total = total + np.asarray(hot[name].counters.addressable_shards[0].data)
        out[name] = total
    return out


def counters_by_name(totals: np.ndarray) -> dict[str, int]:
    """A counter vector as {counter name: value}."""
    return {k: int(totals[i]) for k, i in COUNTER_NAMES.items()}


def grow_sharded_table(spec: TableSpec, state: TableState, mesh: Mesh, axis: str,
                       rows_per_shard: int) -> TableState:
    """Rehashes every shard into `rows_per_shard` rows, keeping every row, its
    optimizer state, scores and the counters; ids stay on their owners.
    Raises TableFullError (the old state intact) if a row found no room."""
    _, bucket = dataclasses.replace(spec, capacity=rows_per_shard).shard_geometry(1)

    def local(old: TableState):
        new = init_table(spec, rows=rows_per_shard)
        new = new._replace(counters=old.counters.at[0].set(0))
        new, _, status = _grow_import(new, old, bucket_size=bucket)
        return new, status[None, 3]

    specs = sharded_specs(axis)
    new, refused = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(specs,),
                                         out_specs=(specs, P(axis))))(state)
    refused = int(host_gather(refused).sum())
    if refused:
        raise TableFullError(f"table {spec.name!r}: growing to {rows_per_shard} rows per shard "
                             f"left {refused} rows without room; the table was not changed")
    return new


def fullest_shard(state: TableState) -> jax.Array:
    """The resident rows of a sharded table's fullest shard (a traced scalar;
    the counters hold one vector per shard)."""
    return lax.reduce_max(state.counters.reshape(-1, NUM_COUNTERS)[:, COUNTER_NAMES["size"]], (0,))


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
    return int(all_processes(np.array([value], np.int64)).sum())


def local_shards(mesh: Mesh, axis: str) -> np.ndarray:
    """The positions along `axis` of the shards this process's devices hold."""
    devices = np.moveaxis(mesh.devices, mesh.axis_names.index(axis), 0)
    devices = devices.reshape(mesh.shape[axis], -1)
    me = jax.process_index()
    return np.array([i for i in range(devices.shape[0])
                     if any(d.process_index == me for d in devices[i])], np.int64)


def all_processes(x: np.ndarray) -> np.ndarray:
    """[P, ...]: `x` (int64, the same shape on every process) of every
    process; a collective (int64 crosses as int32 pairs: process_allgather
    would narrow it)."""
    x = np.ascontiguousarray(x, np.int64)
    if jax.process_count() == 1:
        return x[None]
    pairs = np.asarray(jax.experimental.multihost_utils.process_allgather(x.view(np.int32)))
    return np.ascontiguousarray(pairs).view(np.int64).reshape((-1,) + x.shape)


def most_of_all(n: int) -> int:
    """The largest `n` over the processes (a collective)."""
    return int(all_processes(np.array([n], np.int64)).max())


def local_get(tree):
    """Host copies of a tree of arrays, each full-size, holding the shards
    this process can address (zeros elsewhere): device_get where every
    shard is here."""
    def get(x):
        if x.is_fully_addressable:
            return np.asarray(x)
        out = np.zeros(x.shape, x.dtype)
        for shard in x.addressable_shards:
            out[shard.index] = np.asarray(shard.data)
        return out
    return jax.tree.map(get, tree)


def to_device(a: np.ndarray, device) -> jax.Array:
    """A host array on `device`, its dtype kept (int64 stays int64)."""
    return jax.device_put(jnp.asarray(a, a.dtype), device)


def _put_x64(arrays: list[np.ndarray], sharding: NamedSharding) -> list[jax.Array] | None:
    """One process: `arrays` onto `sharding` in one transfer, every dtype
    kept -- jax.device_put under the thread-local ``jax.enable_x64`` (without
    it, it narrows int64 ids to int32). None where that is not available
    (several processes, a jax without it, a dtype changed anyway)."""
    enable_x64 = getattr(jax, "enable_x64", None)
    if jax.process_count() != 1 or enable_x64 is None:
        return None
    with enable_x64(True):
        placed = jax.device_put(list(arrays), sharding)
    return placed if all(p.dtype == a.dtype for p, a in zip(placed, arrays)) else None


def batch_to_mesh(arrays: list[np.ndarray], sharding: NamedSharding, *,
                  local: bool = False) -> list[jax.Array]:
    """A batch's host arrays on the mesh, split along axis 0, dtypes kept
    (int64 ids stay int64). One process, the whole batch: one transfer
    (_put_x64: ~1.9 ms for 28 arrays of 2048 rows on 8 CPU devices, where one
    transfer per array and device took 20 ms). Otherwise one transfer per
    array and device: ``local``, each process passes its own rows of the
    global batch (multi-host); else every process has the whole batch and
    places its own devices' blocks."""
    placed = None if local else _put_x64(arrays, sharding)
    if placed is not None:
        return placed
    return [_local_to_mesh(a, sharding) if local else jax.make_array_from_callback(
        a.shape, sharding, lambda index, a=a: jnp.asarray(a[index], a.dtype)) for a in arrays]


def _local_to_mesh(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """This process's rows of a global batch, one block per local device
    (built by hand: make_array_from_process_local_data narrows int64)."""
    shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
    rows = {dev: idx[0].indices(shape[0])[:2] for dev, idx in
            sharding.addressable_devices_indices_map(shape).items()}
    first = min(start for start, _ in rows.values())
    blocks = [jax.device_put(jnp.asarray(x[start - first:stop - first], x.dtype), dev)
              for dev, (start, stop) in rows.items()]
    return jax.make_array_from_single_device_arrays(shape, sharding, blocks)


def tree_to_mesh(tree, sharding: NamedSharding):
    """Host arrays (rank >= 1) onto `sharding`. One process: one transfer,
    every dtype kept (_put_x64). Otherwise (several processes, each placing
    the blocks of its own devices from its copy, or a jax without
    ``jax.enable_x64``) one transfer per array, 64-bit integer arrays as
    int32 pairs [..., 2] that the program they feed rebuilds with
    ``from_pairs`` (a separate program would, on XLA:CPU, run inline on the
    calling thread, waiting for the step in flight)."""
    leaves, treedef = jax.tree.flatten(tree)
    placed = _put_x64(leaves, sharding)
    if placed is None:
        wide = [np.dtype(a.dtype).itemsize == 8 and np.dtype(a.dtype).kind in "iu"
                for a in leaves]
        sent = [np.ascontiguousarray(a).view(np.int32).reshape(np.shape(a) + (2,)) if w
                else a for a, w in zip(leaves, wide)]
        placed = [jax.make_array_from_callback(a.shape, sharding, lambda idx, a=a: a[idx])
                  for a in sent]
    return jax.tree.unflatten(treedef, placed)


def from_pairs(a: jax.Array, dtype) -> jax.Array:
    """A 64-bit integer array that crossed as int32 pairs (tree_to_mesh with
    several processes), bit for bit; any other array unchanged. Traceable."""
    dtype = np.dtype(dtype)
    if a.dtype == jnp.int32 and dtype.itemsize == 8 and a.ndim and a.shape[-1] == 2:
        return lax.bitcast_convert_type(a, dtype)
    return a


def place_rows(spec: TableSpec, rows: Rows, counters: np.ndarray, mesh: Mesh, axis: str, *,
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


def place_replicated(spec: TableSpec, rows: Rows, counters: np.ndarray, mesh: Mesh,
                     slots: int) -> TableState:
    """A table of `slots` slots holding `rows`, replicated on every device of
    `mesh`, with these counters (size recounted by the inserts)."""
    base = _without_size(counters)
    return _build(spec, NamedSharding(mesh, P()), 1, slots, lambda _: (rows, base))


def replica_rows(state: TableState) -> tuple[Rows, np.ndarray]:
    """The rows and counters of a replicated table (a hot fold), from this
    process's first replica (host copies)."""
    first = [np.array(getattr(state, f).addressable_shards[0].data, copy=True)
             for f in TableState._fields]
    return live_rows(first[:len(Rows._fields)]), first[-1]


def _host_shards(x: jax.Array) -> list[np.ndarray]:
    """Host copies of the shards of `x` this process holds, in shard order."""
    shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
    return [np.array(s.data, copy=True) for s in shards]


def local_rows(state: TableState) -> list[Rows]:
    """The resident rows of each shard of a sharded table this process
    holds (host copies), in shard order; empty and erased slots left out."""
    return [live_rows(arrays)
            for arrays in zip(*(_host_shards(getattr(state, f)) for f in Rows._fields))]


def rows_on_mesh(blocks: list[Rows], mesh: Mesh, axis: str, *, min_rows: int = 0) -> Rows:
    """Host rows onto the mesh, split like a table: the i-th device of this
    process (mesh order) gets blocks[i], padded to the longest block of any
    process, at least `min_rows` (keys PADDING_ID, zeros). Returns Rows of
    global arrays."""
    longest = most_of_all(max([len(r.keys) for r in blocks] + [min_rows]))
    sharding = NamedSharding(mesh, P(axis))
    devices = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    out = []
    for i in range(len(Rows._fields)):
        parts = []
        for r, dev in zip(blocks, devices):
            a = r[i]
            pad = np.full((longest - len(a),) + a.shape[1:], PADDING_ID if i == 0 else 0, a.dtype)
            parts.append(to_device(np.concatenate([a, pad]), dev))
        shape = (mesh.shape[axis] * longest,) + blocks[0][i].shape[1:]
        out.append(jax.make_array_from_single_device_arrays(shape, sharding, parts))
    return Rows(*out)


def rows_to_owners(rows: Rows, mesh: Mesh, axis: str) -> Rows:
    """Host rows (keyed by id, every process holding all of them) onto the
    mesh, each on its owner shard ``owner_of(id, W)`` (see rows_on_mesh)."""
    owner = owner_of(rows.keys, mesh.shape[axis])
    index = {d: i for i, d in enumerate(mesh.devices.flat)}
    local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    return rows_on_mesh([Rows(*(x[owner == index[d]] for x in rows)) for d in local],
                        mesh, axis)


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
