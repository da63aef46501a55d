"""Admission: an id gets a device row only once it has been seen in
``TableSpec.admit_after`` train steps (issue 14's admission policy; the
occurrence threshold with a probabilistic filter that ByteDance's Monolith
paper describes serves the same purpose: ids seen once or twice -- most of
a long-tailed stream's distinct ids -- never take a row, so the budget holds
the ids that return).

How an id is counted. Each owner shard keeps, per table with
``admit_after > 1``, a count-min sketch of the ids it owns: ``DEPTH`` rows of
``width`` int8 counters (``sketch_width``), each id hashed to one counter
per row. A train step counts each of its unique ids once (the owner sees
every device's copy of an id deduplicated, so the count is in steps, like
the ``freq`` score): the estimate before the step is the smallest of the
id's counters, and every one of its counters is raised to at least that
plus one (conservative update), capped at ``admit_after``. The estimate never
falls below the true count (each counter of an id is at least its own
count: other ids only ever raise it), so an id is admitted in the step it
is seen for the ``admit_after``-th time or earlier, never later; earlier
only where ids share counters (a wider sketch makes that rarer). An id
already has a row, and is admitted whatever its count, if it is resident on
the device, staged from the host tier, or evicted by a step still in flight
(its row is on the way to the host tier: tiers.py cancels the step, as
without admission) -- so a trained row is never hidden by the filter, also
after a restore that reset the sketch.

What a filtered id gets. It is not trained: it is removed from the owner's
queries before ``find_or_insert`` (no row, no insert, no eviction), its
lookup returns a zero row (it adds nothing to a sum; a mean still counts it
in its bag, as an id with a zero row) and its gradient is dropped. It is not trained in the host
tier instead because that would mean a second optimizer path on the host
for rows no step reads from the device; an id that matters returns and is
admitted. Evaluation is consistent with that: with admission on, an id the
device tier does not hold gets a zero row, not its initial one. Each step
counts the ids it filtered (statistic ``filtered``, per table and device).

Hot-fold ids (replication.py) are always admitted: the planner chose them
because they are frequent. Erasing an id (erasure.py) removes its rows, not
its counts (counters are shared between ids, not per-id data): an erased id
seen again gets a row at once. Cost: one extra index probe (``find_slots``)
of the owner's unique ids per step and table, and 2 x ``width`` bytes of
counters per shard, outside ``max_shard_bytes``. The sketch lives in ``TrainState.admission``; a
step that is not applied (overflow, refused insert, a no-op behind one)
leaves it as it was, so re-runs count nothing twice. Checkpoints keep it for
a restore onto the same device count; onto another count the counts of ids
not yet admitted start again (each owner's sketch covers the ids that hash
to it), which the restore logs.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jax_hypereca.errors import PADDING_ID
from jax_hypereca.placement import host_gather
from jax_hypereca.table import MAX_ADMIT_AFTER, TableSpec  # noqa: F401 (int8 counters' cap)

DEPTH = 2
"""Hash rows of each sketch."""
MIN_WIDTH, MAX_WIDTH = 1 << 10, 1 << 26
_SALTS = (0x61646D69745F3031, 0x61646D69745F3032)  # "admit_01", "admit_02"
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB  # splitmix64's finalizer


def sketch_width(spec: TableSpec, num_shards: int) -> int:
    """Counters per hash row on each shard: ``spec.admission_counters``, or
    by default the power of two at or above the shard's rows (clamped to
    [MIN_WIDTH, MAX_WIDTH]): 2 bytes per row beside rows of tens of bytes."""
    if spec.admission_counters:
        return spec.admission_counters
    rows, _ = spec.shard_geometry(num_shards)
    return min(MAX_WIDTH, max(MIN_WIDTH, 1 << max(0, math.ceil(math.log2(rows)))))


def admits(spec: TableSpec) -> bool:
    """Whether the table filters ids (``admit_after`` > 1)."""
    return spec.admit_after > 1


def _zeros(n: int, dtype, sharding) -> jax.Array:
    return jax.make_array_from_callback(
        (n,), sharding, lambda idx: np.zeros(len(range(n)[idx[0]]), dtype))


def init_sketches(specs, mesh: Mesh, axis: str) -> dict[str, dict[str, jax.Array]]:
    """The admission state of the tables that filter, per table:
    ``sketch`` int8 [W * DEPTH * width] (each shard's DEPTH * width counters
    on its device) and ``filtered`` int64 [W] (ids each shard has filtered in
    applied steps, cumulative), all zero."""
    W = mesh.shape[axis]
    sharding = NamedSharding(mesh, P(axis))
    return {spec.name: {"sketch": _zeros(W * DEPTH * sketch_width(spec, W), np.int8, sharding),
                        "filtered": _zeros(W, np.int64, sharding)}
            for spec in specs if admits(spec)}


def filtered_totals(admission: dict[str, dict[str, jax.Array]]) -> dict[str, int]:
    """Ids filtered so far per table (summed over the shards)."""
    return {n: int(host_gather(a["filtered"]).sum()) for n, a in admission.items()}


def _counter_index(keys: jax.Array, width: int) -> jax.Array:
    """[DEPTH, n] int32: each key's counter in each hash row of the flat
    [DEPTH * width] sketch."""
    rows = []
    for d, salt in enumerate(_SALTS[:DEPTH]):
        x = keys.astype(jnp.uint64) ^ jnp.uint64(salt)
        x = (x ^ (x >> 30)) * jnp.uint64(_M1)
        x = (x ^ (x >> 27)) * jnp.uint64(_M2)
        x = x ^ (x >> 31)
        rows.append((x & jnp.uint64(width - 1)).astype(jnp.int32) + d * width)
    return jnp.stack(rows)


def admit(spec: TableSpec, state: dict[str, jax.Array], keys: jax.Array, known: jax.Array):
    """One step of one owner shard (inside shard_map). `state`: the shard's
    ``sketch`` and ``filtered``; `keys` (n,): the table's unique ids on this
    owner, PADDING_ID padding; `known` (n,): ids that have a row already (see
    the module docstring). Returns (the state with this step counted,
    admitted (n,) bool, ids filtered this step)."""
    sketch = state["sketch"]
    width = sketch.shape[0] // DEPTH
    valid = keys != PADDING_ID
    at = _counter_index(keys, width)
    before = jnp.min(sketch[at], axis=0).astype(jnp.int32)
    seen = jnp.minimum(before + 1, spec.admit_after)
    drop = jnp.where(valid[None, :], at, sketch.shape[0])  # out of range: not written
    sketch = sketch.at[drop.reshape(-1)].max(
        jnp.broadcast_to(seen.astype(jnp.int8), at.shape).reshape(-1), mode="drop")
    admitted = valid & (known | (seen >= spec.admit_after))
    filtered = (valid & ~admitted).sum()
    return {"sketch": sketch, "filtered": state["filtered"] + filtered}, admitted, filtered


def member(keys: jax.Array, sorted_set: jax.Array) -> jax.Array:
    """(n,) bool: which `keys` are in `sorted_set` (sorted ascending)."""
    if sorted_set.shape[0] == 0:
        return jnp.zeros(keys.shape, bool)
    at = jnp.clip(jnp.searchsorted(sorted_set, keys), 0, sorted_set.shape[0] - 1)
    return sorted_set[at] == keys
