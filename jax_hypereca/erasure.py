"""Erasing ids from every place a collection's table keeps them.

A row can live in one of three places (I1): its owner shard (the cold fold),
the hot fold replicated on every device, or the host tier. ``erase`` removes
the given ids from all three and counts each removal as ``erased`` where it
happened (``erased``: the shard's or the hot fold's counters;
``erased_on_host``: the host tier's, kept in checkpoints), so the
accounting still closes (I3)::

    device inserted - promoted == device resident + host resident
                                  + ttl_evicted + erased + erased_on_host

An erased id that comes back starts again from its initial row; a hot id
erased from the hot fold stays in the plan's hot set only until it is next
seen (then it is inserted into its owner shard, as any cold id). Call it
between steps: with a pipeline, after ``TrainPipeline.flush`` (an in-flight
step may have staged or evicted the row).
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from jax_hypereca.errors import PADDING_ID, HyperecaError, check_ids
from jax_hypereca.placement import host_gather
from jax_hypereca.state import TrainState
from jax_hypereca.table import TableSpec, TableState, erase


def _flat(ids) -> np.ndarray:
    arr = np.ravel(np.asarray(ids))
    return arr.astype(np.int64) if arr.size == 0 else arr  # [] is float64 to numpy


def _padded(ids: np.ndarray) -> np.ndarray:
    """`ids` padded with PADDING_ID to a power of two (at least 16): erase
    compiles once per size, not once per call."""
    n = max(16, 1 << max(0, len(ids) - 1).bit_length())
    return np.concatenate([ids, np.full(n - len(ids), PADDING_ID, np.int64)])


def _erase_on_mesh(collection, spec: TableSpec, table: TableState, q: np.ndarray, *,
                   replicated: bool) -> tuple[TableState, int]:
    """Erases `q` on every device: from each shard of a sharded table (only
    the owner holds an id), or from every replica of a hot fold alike.
    Returns (table, rows erased)."""
    spec_of = P() if replicated else P(collection.axis)
    fn = jax.shard_map(lambda st, q: erase(spec, st, q), mesh=collection.mesh,
                       in_specs=(spec_of, P()), out_specs=(spec_of, spec_of), check_vma=False)
    table, erased = jax.jit(fn)(table, jnp.asarray(q, jnp.int64))
    return table, int((np.asarray(jax.device_get(erased)) if replicated
                       else host_gather(erased)).sum())


def erase_ids(collection, state: TrainState, ids: Mapping[str, object]
              ) -> tuple[TrainState, dict[str, int]]:
    """Removes `ids` (table name -> int64 ids) from the cold fold, the hot
    fold and the host tier of each table. Returns (state, rows erased per
    table: an id held nowhere counts 0; with a host tier, the host count is
    this process's store). Raises before changing anything on an unknown
    table or a reserved id."""
    unknown = sorted(set(ids) - set(collection.tables))
    if unknown:
        raise HyperecaError(f"erase: no table {unknown}; the collection's tables are "
                            f"{sorted(collection.tables)}")
    checked = {t: np.unique(check_ids(_flat(v), where=f"erase: ids of {t!r}"))
               for t, v in ids.items()}
    tables, hot, counts = dict(state.tables), dict(state.hot), {}
    for name, q in checked.items():
        q = q[q != PADDING_ID]
        spec, padded = collection.tables[name], _padded(q)
        tables[name], n = _erase_on_mesh(collection, spec, tables[name], padded,
                                         replicated=False)
        if name in hot:
            hot[name], k = _erase_on_mesh(collection, spec, hot[name], padded, replicated=True)
            n += k
        if collection.host_tier is not None:
            n += collection.host_tier.erase(name, q)
        counts[name] = n
    return state._replace(tables=tables, hot=hot), counts
