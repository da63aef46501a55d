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
from typing import ClassVar

import jax
import numpy as np
from jax import lax

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
            f"{', '.join(repr(k) for k in EXCHANGES)} (or \"auto\" in an "
            f"EmbeddingCollection, which times both on its first steps).") from None


# "auto" keeps the ring only when its steps are faster by more than this
# share: within it the two are indistinguishable from timing noise, and one
# collective is the simpler program.
RING_MARGIN = 0.05


class ExchangeTrial:
    """How exchange="auto" picks: the strategies take turns on the real train
    steps (their results are bit-identical, so a turn costs nothing but one
    compile per strategy), each for `rounds` timed steps; then the one whose
    median step wall time is lower is kept (the ring only when faster by more
    than RING_MARGIN). Calls that compiled or were re-run are not timed.

    With several processes the decision takes, per strategy, the largest
    median over the processes, so every process keeps the same strategy (a
    different program per process would hang the collectives); all processes
    record the same calls, since compiles and re-runs happen on all alike."""

    def __init__(self, rounds: int = 3):
        if rounds < 1:
            raise ValueError(f"ExchangeTrial: rounds={rounds}; set rounds to at least 1")
        self.rounds = rounds
        self.seconds: dict[str, list[float]] = {n: [] for n in EXCHANGES}
        self.chosen: Exchange | None = None
        self.timings: dict[str, float] = {}

    def current(self) -> Exchange:
        """The strategy the next step runs with."""
        if self.chosen is not None:
            return self.chosen
        names = list(EXCHANGES)
        return EXCHANGES[names[sum(map(len, self.seconds.values())) % len(names)]]()

    def record(self, name: str, seconds: float) -> None:
        """One timed step of strategy `name`; decides after the last turn."""
        if self.chosen is not None:
            return
        self.seconds[name].append(seconds)
        if all(len(t) >= self.rounds for t in self.seconds.values()):
            self._decide()

    def _decide(self) -> None:
        names = list(EXCHANGES)
        secs = np.array([statistics.median(self.seconds[n]) for n in names], np.float64)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            gathered = multihost_utils.process_allgather(secs.astype(np.float32))
            secs = np.asarray(gathered, np.float64).reshape(-1, len(names)).max(axis=0)
        self.timings = {n: float(t) for n, t in zip(names, secs)}
        faster = min(names, key=lambda n: (self.timings[n], n != "all_to_all"))
        if self.timings[faster] >= (1 - RING_MARGIN) * self.timings["all_to_all"]:
            faster = "all_to_all"
        self.chosen = EXCHANGES[faster]()
