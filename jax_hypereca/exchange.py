"""How blocks move between the W ranks of one mesh axis (inside shard_map).

The routed exchange of a step moves three buffers, each split into W
per-destination blocks of `capacity` entries (padding included):

  send_ids     (W, cap, 2) int64   (id, table tag) from the looker-up to the owner
  return_rows  (W, cap, dim) rows  from the owner back to the looker-up
  send_grads   (W, cap, dim) f32   gradients from the looker-up to the owner

Contract of every strategy, on each rank `me` of the axis:
  in   blocks[w]  is what `me` sends rank w (blocks[me] is kept by `me`).
  out  result[w]  is what rank w sent `me` (result[me] = blocks[me]).
So over the axis the exchange is a block transpose: result_r[w] = blocks_w[r].
A strategy only chooses the schedule (which collectives, in what order); the
result is bit-identical for every strategy, any dtype.

Strategies:
  AllToAll  one lax.all_to_all (tiled) moving every block at once.
  Ring      W-1 lax.ppermute steps: at step s (1..W-1) rank r sends
            blocks[(r+s) % W] to rank (r+s) % W and receives the block rank
            (r-s) % W holds for it, written at result[(r-s) % W]; each step
            every rank sends one block and receives one.

Strategies are frozen dataclasses (hashable: a strategy is part of a jit
cache key). This module imports only jax and numpy.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

ID_ENTRY_BYTES = 16  # one sent id: int64 key + table tag widened to int64


def bytes_per_step(num_shards: int, capacity: int, dim: int, row_itemsize: int
                   ) -> dict[str, int]:
    """Bytes one device sends to other devices per training step for one
    exchange group, padding included; the self block stays on the device.
    The same for every strategy: each block crosses the axis exactly once.

      ids    (W-1) * cap * 16             (key + table tag, both int64)
      rows   (W-1) * cap * dim * row_itemsize
      grads  (W-1) * cap * dim * 4        (float32)
    """
    others = num_shards - 1
    return {"ids": others * capacity * ID_ENTRY_BYTES,
            "rows": others * capacity * dim * int(row_itemsize),
            "grads": others * capacity * dim * 4}


@dataclasses.dataclass(frozen=True)
class Exchange:
    """A schedule for the block transpose over one mesh axis (see the module
    docstring for the contract). Subclasses implement `exchange`; call every
    method inside shard_map over `axis`, with num_shards = the axis size."""

    name: ClassVar[str] = "abstract"

    def exchange(self, blocks: jax.Array, axis: str, num_shards: int) -> jax.Array:
        """blocks (W, ...): blocks[w] goes to rank w. Returns (W, ...) whose
        block w is what rank w sent this rank. Same shape and dtype."""
        raise NotImplementedError

    # The three uses in a step: the same primitive, named for the call sites.
    def send_ids(self, payload: jax.Array, axis: str, num_shards: int) -> jax.Array:
        """(W, cap, 2) int64 (id, tag) per owner -> (W, cap, 2) queries, block w
        from rank w. Run by every rank in the forward pass, before the lookup."""
        return self.exchange(payload, axis, num_shards)

    def return_rows(self, rows: jax.Array, axis: str, num_shards: int) -> jax.Array:
        """(W, cap, dim) rows answering the queries of send_ids (block w for
        rank w) -> (W, cap, dim), block w the rows owner w returned."""
        return self.exchange(rows, axis, num_shards)

    def send_grads(self, grads: jax.Array, axis: str, num_shards: int) -> jax.Array:
        """(W, cap, dim) float32 gradients at the send_ids positions (block w
        for owner w) -> (W, cap, dim), block w rank w's gradients for my rows."""
        return self.exchange(grads, axis, num_shards)

    def bytes_per_step(self, num_shards: int, capacity: int, dim: int, row_itemsize: int
                       ) -> dict[str, int]:
        """See the module-level bytes_per_step (the same for every strategy)."""
        return bytes_per_step(num_shards, capacity, dim, row_itemsize)


def _check_blocks(blocks, num_shards: int, strategy: str):
    if blocks.ndim < 1 or blocks.shape[0] != num_shards:
        raise ValueError(
            f"exchange {strategy!r}: blocks have shape {tuple(blocks.shape)}, but the leading "
            f"dimension must be num_shards={num_shards} (one block per rank of the axis); "
            f"reshape the buffer to (num_shards, capacity, ...).")


@dataclasses.dataclass(frozen=True)
class AllToAll(Exchange):
    """One tiled lax.all_to_all: every rank sends all W-1 blocks in one
    collective (one `all-to-all` in the compiled HLO)."""

    name: ClassVar[str] = "all_to_all"

    def exchange(self, blocks, axis, num_shards):
        _check_blocks(blocks, num_shards, self.name)
        if num_shards == 1:
            return blocks
        return lax.all_to_all(blocks, axis, 0, 0, tiled=True)


@dataclasses.dataclass(frozen=True)
class Ring(Exchange):
    """W-1 lax.ppermute steps (W-1 `collective-permute`s in the HLO).

    Step s = 1..W-1, on rank r: send blocks[(r+s) % W] to rank (r+s) % W;
    receive from rank (r-s) % W its block for r, stored at result[(r-s) % W].
    result[r] = blocks[r] is never sent. Each step is a fixed shift of the
    ring, so every rank sends and receives exactly one block per step."""

    name: ClassVar[str] = "ring"

    def exchange(self, blocks, axis, num_shards):
        _check_blocks(blocks, num_shards, self.name)
        w = num_shards
        if w == 1:
            return blocks
        me = lax.axis_index(axis)
        out = blocks  # out[me] is already the self block; the rest are overwritten
        for s in range(1, w):
            perm = [(r, (r + s) % w) for r in range(w)]
            send = lax.dynamic_index_in_dim(blocks, (me + s) % w, axis=0, keepdims=False)
            recv = lax.ppermute(send, axis, perm)
            out = lax.dynamic_update_index_in_dim(out, recv, (me - s) % w, axis=0)
        return out


EXCHANGES: dict[str, type[Exchange]] = {"all_to_all": AllToAll, "ring": Ring}


def get_exchange(name: str) -> Exchange:
    """The strategy called `name` ("all_to_all" or "ring")."""
    try:
        return EXCHANGES[name]()
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown exchange strategy {name!r}; set exchange to one of "
            f"{', '.join(repr(k) for k in EXCHANGES)} (or pick it by measurement with "
            f"pick_exchange).") from None


def _three_exchanges(strategy: Exchange, mesh: Mesh, axis: str):
    """A jitted shard_map running the step's three exchanges with `strategy`:
    (ids (W*W, cap, 2), rows (W*W, cap, dim), grads (W*W, cap, dim)), sharded
    along axis 0, each rank holding its (W, cap, ...) send buffers."""
    w = mesh.shape[axis]

    def body(ids, rows, grads):
        return (strategy.send_ids(ids, axis, w), strategy.return_rows(rows, axis, w),
                strategy.send_grads(grads, axis, w))

    spec = P(axis)
    return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(spec,) * 3,
                                 out_specs=(spec,) * 3))


def _buffers(mesh: Mesh, axis: str, capacity: int, dim: int, dtype):
    """Send buffers of every rank, made on the devices (no host transfer, so
    it also works with several processes)."""
    w = mesh.shape[axis]
    sharding = NamedSharding(mesh, P(axis))

    def make():
        n = w * w * capacity
        ids = jnp.arange(n * 2, dtype=jnp.int64).reshape(w * w, capacity, 2)
        rows = jnp.arange(n * dim, dtype=jnp.float32).reshape(w * w, capacity, dim)
        return ids, rows.astype(dtype), rows

    return jax.jit(make, out_shardings=(sharding,) * 3)()


def _median_seconds(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # warm-up (and compile)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def pick_exchange(mesh: Mesh, axis: str, capacity: int, dim: int, dtype, *, repeats: int = 5
                  ) -> tuple[Exchange, dict[str, float]]:
    """The faster strategy on this mesh axis for one exchange group, by
    measurement: each strategy's three exchanges (ids (W, cap, 2) int64, rows
    (W, cap, dim) `dtype`, grads (W, cap, dim) float32 per rank) compiled into
    one shard_map, run once to warm up, then `repeats` times; the median wall
    time in seconds per strategy name. Ties go to AllToAll.

    With several processes every process takes the maximum of the processes'
    timings, so all of them pick the same strategy (a different program per
    process would hang the collectives). With W == 1 nothing moves: AllToAll,
    timings 0.0, nothing compiled."""
    if repeats < 1:
        raise ValueError(f"pick_exchange: repeats={repeats}; set repeats to at least 1")
    if mesh.shape[axis] == 1:
        return AllToAll(), {name: 0.0 for name in EXCHANGES}
    args = _buffers(mesh, axis, capacity, dim, dtype)
    names = list(EXCHANGES)
    secs = np.array([_median_seconds(_three_exchanges(EXCHANGES[n](), mesh, axis), args, repeats)
                     for n in names], np.float64)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        gathered = multihost_utils.process_allgather(secs.astype(np.float32))
        secs = np.asarray(gathered, np.float64).reshape(-1, len(names)).max(axis=0)
    timings = {n: float(t) for n, t in zip(names, secs)}
    best = min(names, key=lambda n: (timings[n], n != "all_to_all"))
    return EXCHANGES[best](), timings
