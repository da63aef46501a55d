"""Hot-set replication planner of jax_hypereca (numpy only; never imports jax).

Two-fold parallelism: the R most frequently exchanged ids of each table are
replicated on every device (gradients all-reduced each step), all other ids
are owned by ``hash(id) mod W`` and fetched through an all-to-all.  Per
table and step the planner minimises

    L(R) = R * C_ar + N * (1 - rho(R)) * C_a2a   (+ fixed per-call costs)

under a per-device memory budget shared by all tables.

Typical use::

    from jax_hypereca.planner import collect_table_stats, paper_profile, plan_replication, plan_summary
    stats = collect_table_stats(batches, name="item", dim=128, num_devices=32,
                                owner_fn=lambda ids: ids % 32)
    plan = plan_replication([stats], paper_profile(), memory_budget_bytes=2**30,
                            optimizer_state_floats_per_row=128)
    print(plan_summary(plan))
"""

from __future__ import annotations

from .cache import ProfileCache, dtype_name, load_profile, profile_cache_key, profile_cache_path, store_profile
from .cost_model import (
    CollectiveModel,
    TableCostModel,
    c_a2a_lookup,
    c_ar_row,
    cluster_collectives,
    cluster_profile,
    fit_profile,
    hierarchical_ring_allreduce,
    lookup_bytes,
    paper_collectives,
    paper_derivation,
    paper_profile,
    two_level_alltoall,
)
from .errors import PlannerError
from .fit import LinearFit, fit_line
from .replication import best_hot_rows, greedy_allocation, plan_replication, search_min
from .report import format_bytes, plan_speedup, plan_summary
from .stats import (
    DecayedCounter,
    ExactCounter,
    collect_table_stats,
    covered_lookups,
    coverage,
    dedup_step,
    exchanged_lookups,
    hot_ids,
    lookups_per_step,
)
from .types import CostProfile, Measurement, ReplicationPlan, TablePlan, TableStats

__all__ = [
    "CollectiveModel",
    "CostProfile",
    "DecayedCounter",
    "ExactCounter",
    "LinearFit",
    "Measurement",
    "PlannerError",
    "ProfileCache",
    "ReplicationPlan",
    "TableCostModel",
    "TablePlan",
    "TableStats",
    "best_hot_rows",
    "c_a2a_lookup",
    "c_ar_row",
    "collect_table_stats",
    "covered_lookups",
    "coverage",
    "dedup_step",
    "dtype_name",
    "exchanged_lookups",
    "fit_line",
    "fit_profile",
    "format_bytes",
    "greedy_allocation",
    "hierarchical_ring_allreduce",
    "hot_ids",
    "load_profile",
    "lookup_bytes",
    "lookups_per_step",
    "cluster_collectives",
    "cluster_profile",
    "paper_collectives",
    "paper_derivation",
    "paper_profile",
    "plan_replication",
    "plan_speedup",
    "plan_summary",
    "profile_cache_key",
    "profile_cache_path",
    "search_min",
    "store_profile",
    "two_level_alltoall",
]
