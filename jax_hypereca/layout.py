"""Layout: the static description of one compiled exchange (features,
tables, exchange groups, their per-destination capacities and the exchange
strategy), and the per-device statistics each step reports."""

from __future__ import annotations

import dataclasses

import numpy as np

from jax_hypereca.exchange import AllToAll, Exchange
from jax_hypereca.features import FeatureSpec
from jax_hypereca.table import TableSpec

# Per-device statistics, one int64 vector per table (see Layout.looked_up).
STAT_NAMES = ("ids", "unique", "remote_unique", "max_count", "queries", "hits", "inserted",
              "evicted", "reserved", "failed", "resident", "hot_unique", "apply_nonfinite",
              "stale",  # stale: ids a step in flight evicted before the host tier saw it
              "filtered",  # ids admission kept from a row this step (admission.py)
              # positions of the batch looking up cold ids / those served by a
              # row resident before the step (queries and hits count ids once)
              "lookups", "lookup_hits")
STAT_INDEX = {n: i for i, n in enumerate(STAT_NAMES)}


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
    exchange: Exchange = AllToAll()  # how the blocks move (exchange.py)
    host_tier: bool = False       # evicted rows come back from the step (tiers.py)

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

    def group_features(self, group) -> list[FeatureSpec]:
        """The features of a group's tables, in the order their ids are listed."""
        return [f for t in group for f in self.features_of(t)]

    def segments(self, group, batch: int) -> list[tuple[str, int, int]]:
        """(table, start, length) of each table's unique list in the group's."""
        out, start = [], 0
        for t in group:
            n = batch * sum(f.max_ids for f in self.features_of(t))
            out.append((t, start, n))
            start += n
        return out

    @property
    def looked_up(self) -> tuple[str, ...]:
        """Tables some feature looks up, in stats order."""
        return tuple(t for g in self.groups for t in g)

    def bytes_per_step(self) -> dict[str, int]:
        """Bytes one device sends to other devices per training step, padding
        included (the self block stays on the device), summed over groups."""
        total = {"ids": 0, "rows": 0, "grads": 0}
        for g, cap in zip(self.groups, self.capacities):
            spec = self.spec(g[0])
            b = self.exchange.bytes_per_step(self.num_shards, cap, spec.dim,
                                             np.dtype(spec.dtype).itemsize)
            total = {k: total[k] + b[k] for k in total}
        return total


def exchange_groups(tables, features) -> tuple[tuple[str, ...], ...]:
    """Looked-up tables grouped by (dim, storage dtype)."""
    used = {f.table for f in features}
    out: dict[tuple, list[str]] = {}
    for t in tables:
        if t.name in used:
            out.setdefault((t.dim, np.dtype(t.dtype).name), []).append(t.name)
    return tuple(tuple(v) for v in out.values())
