"""Hot-set replication planner of jax_hypereca (numpy only; never imports jax).

Two-fold parallelism: the R most frequently exchanged ids of each table are
replicated on every device (gradients all-reduced each step), all other ids
are owned by ``hash(id) mod W`` and fetched through an all-to-all.  Per
table and step the planner minimises

    L(R) = R * C_ar + N * (1 - rho(R)) * C_a2a   (+ fixed per-call costs)

under a per-device memory budget shared by all tables.

Typical use::

    from jax_hypereca.planner import collect_table_stats, paper_profile, plan_replication
    stats = collect_table_stats(batches, name="item", dim=128, num_devices=32,
                                owner_fn=lambda ids: ids % 32)
    plan = plan_replication([stats], paper_profile(), memory_budget_bytes=2**30,
                            optimizer_state_floats_per_row=128)
    print(plan.summary())
"""

from __future__ import annotations

from .cache import ProfileCache, dtype_name, load_profile, profile_cache_key, profile_cache_path, store_profile
from .cost_model import (
    CollectiveModel,
    LinearFit,
    TableCostModel,
    fit_line,
    fit_profile,
    hierarchical_ring_allreduce,
    paper_collectives,
    paper_derivation,
    paper_profile,
    two_level_alltoall,
)
from .replication import best_hot_rows, greedy_allocation, plan_replication, search_min
from .stats import DecayedCounter, ExactCounter, collect_table_stats, coverage, dedup_step
from .types import (
    CostProfile,
    Measurement,
    PlannerError,
    ReplicationPlan,
    TablePlan,
    TableStats,
    format_bytes,
)

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
    "collect_table_stats",
    "coverage",
    "dedup_step",
    "dtype_name",
    "fit_line",
    "fit_profile",
    "format_bytes",
    "greedy_allocation",
    "hierarchical_ring_allreduce",
    "load_profile",
    "paper_collectives",
    "paper_derivation",
    "paper_profile",
    "plan_replication",
    "profile_cache_key",
    "profile_cache_path",
    "search_min",
    "store_profile",
    "two_level_alltoall",
]
