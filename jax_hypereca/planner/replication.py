"""Choosing the hot-set size R of every table under one memory budget.

Method (per request):

1. **Requirements.**  Per table the smallest allowed R is
   ``max(min_hot_rows, rows needed for min_coverage)``; the largest is
   ``min(distinct exchanged ids, max_hot_rows)``.  Conflicts raise
   :class:`PlannerError`, as does a budget that cannot hold the required rows.
2. **Allocation (greedy by marginal gain per byte).**  Replicating the r-th
   most frequent id of table t saves ``g_t(r) = count_r/(steps*W) * C_a2a
   - C_ar`` seconds per step and costs ``b_t`` bytes per device.  Because
   counts are sorted, g_t is non-increasing in r, so taking rows of all
   tables in decreasing order of ``g_t(r) / b_t`` while the gain is
   positive and the row fits is optimal for the fractional relaxation (and
   for the integer problem when all tables have the same row size); a table
   whose next row does not fit is closed, smaller rows of other tables may
   still be taken.
3. **Refinement (ternary search + local enumeration).**  Each table's L(R),
   fixed per-collective costs included, is minimised over
   ``[required, allocation + unallocated budget]``: ternary search on the
   range where L is unimodal (convex once R >= 1, since rho is a prefix sum
   of descending counts), then exhaustive evaluation of a window around the
   found point, compared with R = required, the cap, and "all ids" (which
   removes the exchange's fixed cost).  Smallest R wins ties.
4. If a table gives memory back in step 3 (a fixed cost made replication
   not worth it) while another table was budget-limited, that table is
   frozen and steps 2-3 rerun for the others.
5. **Fixed-cost moves.**  The fixed terms make the multi-table problem
   non-convex at R = 0 and R = all ids.  For every table i and R_i in
   {required, all ids, current, best R_i with the whole free budget}, steps
   2-4 are rerun for the other tables with R_i pinned; the best total is
   kept; repeated until no move improves (at most T rounds).

Guarantees: a single table gets the exact argmin over its allowed range.
Several tables without fixed costs: exact when all rows have the same size;
otherwise the total is within sum over tables of one row's gain of the
optimum (integer rounding of the knapsack).  With fixed costs the result is
never worse than R = required everywhere and, in randomised comparisons
with brute force (2 tables, equal row sizes), was optimal in all cases
tried; it is a heuristic there.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from . import constants as K
from .cost_model import TableCostModel, check_profile_matches
from .errors import PlannerError
from .report import format_bytes
from .stats import hot_ids
from .types import CostProfile, ReplicationPlan, TablePlan, TableStats

PerTable = int | Mapping[str, int] | None

METHOD = (
    "greedy marginal-gain-per-byte allocation across tables, then per-table "
    "ternary search over R with local enumeration (window {w}) and candidates "
    "R=required, R=cap, R=all ids; fixed per-collective costs included via "
    "pin-one-table re-allocation moves"
)


# --------------------------------------------------------------------------
# One-dimensional search.
# --------------------------------------------------------------------------


def search_min(
    cost: Callable[[np.ndarray], np.ndarray],
    lo: int,
    hi: int,
    *,
    extra: Iterable[int] = (),
    window: int = 16,
) -> int:
    """Integer argmin of ``cost`` over [lo, hi] (smallest on ties).

    ``cost`` must be vectorised.  It is assumed unimodal (e.g. convex) on
    [lo, hi]; a ternary search narrows the range, then every point within
    ``window`` of it and every point of ``extra`` inside [lo, hi] is
    evaluated, which absorbs flat stretches and rounding at the minimum.
    """
    lo, hi = int(lo), int(hi)
    if hi < lo:
        raise ValueError("empty search range")
    a, b = lo, hi
    while b - a > 2:
        third = (b - a) // 3
        m1, m2 = a + third, b - third
        f1, f2 = cost(np.array([m1, m2]))
        if f1 < f2:
            b = m2 - 1
        elif f1 > f2:
            a = m1 + 1
        else:
            a, b = m1, m2
    cand = np.arange(max(lo, a - window), min(hi, b + window) + 1)
    ext = np.array([e for e in extra if lo <= e <= hi], dtype=np.int64)
    cand = np.unique(np.concatenate((cand, ext, [lo, hi])).astype(np.int64))
    vals = np.asarray(cost(cand), dtype=np.float64)
    return int(cand[int(np.argmin(vals))])


def best_hot_rows(model: TableCostModel, lo: int, hi: int, *, window: int = 16) -> int:
    """argmin of L(R) over R in [lo, hi] for one table.

    L is convex on [1, num_ids - 1] (descending counts); the jump of the
    all-reduce's fixed cost at R = 1 and the exchange's fixed cost vanishing
    at R = num_ids are handled by evaluating lo, hi and num_ids directly.
    """
    lo, hi = int(lo), min(int(hi), model.num_ids)
    if hi <= lo:
        return lo
    t_lo = max(lo, 1)
    t_hi = max(t_lo, min(hi, model.num_ids - 1))
    r = search_min(model.latency, t_lo, t_hi, window=window)
    cand = np.array(sorted({lo, r, hi}), dtype=np.int64)
    vals = model.latency(cand)
    return int(cand[int(np.argmin(vals))])


# --------------------------------------------------------------------------
# Greedy allocation.
# --------------------------------------------------------------------------


def greedy_allocation(
    models: Sequence[TableCostModel],
    lower: Sequence[int],
    upper: Sequence[int],
    budget_bytes: int,
) -> tuple[list[int], int]:
    """Rows per table beyond ``lower`` (up to ``upper``) taken in decreasing
    order of marginal gain per byte while positive and within
    ``budget_bytes``.  Returns (R per table, unallocated bytes)."""
    gains, tables, sizes = [], [], []
    for i, m in enumerate(models):
        hi = min(upper[i], m.positive_gain_rows)  # gains are non-increasing
        if hi <= lower[i]:
            continue
        g = m.marginal_gain(lower[i] + 1, hi)
        n_pos = int(np.count_nonzero(g > 0))  # non-increasing: positives first
        if n_pos == 0:
            continue
        gains.append(g[:n_pos] / m.bytes_per_hot_row)
        tables.append(np.full(n_pos, i, dtype=np.int64))
        sizes.append(np.full(n_pos, m.bytes_per_hot_row, dtype=np.int64))
    rows = list(int(x) for x in lower)
    left = int(budget_bytes)
    if not gains:
        return rows, left
    gpb = np.concatenate(gains)
    order = np.argsort(-gpb, kind="stable")  # keeps each table's rows in order
    tbl = np.concatenate(tables)[order]
    size = np.concatenate(sizes)[order]
    while tbl.size:
        cum = np.cumsum(size)
        k = int(np.searchsorted(cum, left, side="right"))
        if k:
            taken = np.bincount(tbl[:k], minlength=len(models))
            for i in np.flatnonzero(taken):
                rows[i] += int(taken[i])
            left -= int(cum[k - 1])
        if k == tbl.size:
            break
        blocked = tbl[k]  # its rows never fit again: the budget only shrinks
        keep = tbl[k:] != blocked
        tbl, size = tbl[k:][keep], size[k:][keep]
    return rows, left


# --------------------------------------------------------------------------
# Public entry point.
# --------------------------------------------------------------------------


def _per_table(value: PerTable, names: Sequence[str], setting: str, default: int | None) -> list[int | None]:
    if value is None:
        return [default] * len(names)
    if isinstance(value, Mapping):
        unknown = set(value) - set(names)
        if unknown:
            raise PlannerError(
                f"`{setting}` names unknown tables {sorted(unknown)}; known: {list(names)}"
            )
        out = [value.get(n, default) for n in names]
    else:
        out = [value] * len(names)
    for n, v in zip(names, out):
        if v is not None and (int(v) != v or v < 0):
            raise PlannerError(f"`{setting}` for table '{n}' must be an integer >= 0, got {v}")
    return [None if v is None else int(v) for v in out]


def _best_reachable_coverage(
    models: Sequence[TableCostModel], floor_rows: Sequence[int], upper: Sequence[int], budget: int
) -> float:
    """Largest c such that every table reaching min(c, its max) fits."""
    def need(c: float) -> int:
        return sum(
            max(f, min(m.rows_for_coverage(c), u)) * m.bytes_per_hot_row
            for m, f, u in zip(models, floor_rows, upper)
        )

    if need(0.0) > budget:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if need(mid) <= budget:
            lo = mid
        else:
            hi = mid
    return math.floor(lo * 1e4) / 1e4


def plan_replication(
    stats: Sequence[TableStats],
    profile: CostProfile,
    *,
    memory_budget_bytes: int,
    value_bytes: int = 4,
    optimizer_state_floats_per_row: int | Mapping[str, int],
    max_hot_rows: PerTable = None,
    min_hot_rows: PerTable = None,
    min_coverage: float | None = None,
    optimizer_state_bytes_per_float: int = K.OPTIMIZER_STATE_BYTES_PER_FLOAT,
    index_overhead_bytes: int = K.HOT_INDEX_OVERHEAD_BYTES,
    search_window: int = 16,
    hot_exchange: str = "dense",
) -> ReplicationPlan:
    """Choose R per table minimising the sum of L(R) within the budget.

    Args:
      stats: one :class:`TableStats` per table (unique names), sampled on
        ``profile.num_devices`` devices.
      profile: communication costs of the mesh.
      memory_budget_bytes: bytes per device for the replicas of all tables
        (each hot row costs ``dim*value_bytes + optimizer state + key +
        index overhead`` on every device).
      value_bytes: bytes per embedding element (and gradient element).
      optimizer_state_floats_per_row: optimizer elements per row (e.g. 0 for
        SGD, 1 for row-wise Adagrad, dim for Adagrad, 2*dim for Adam); an
        int or a mapping table name -> int.
      max_hot_rows: cap on R (int for every table, or per-table mapping).
      min_hot_rows: floor on R (int or mapping).
      min_coverage: every table's hot set must absorb at least this share
        of its exchanged lookups.
      optimizer_state_bytes_per_float, index_overhead_bytes: memory model.
      search_window: points enumerated each side of the ternary result.
      hot_exchange: "dense" (the paper: every hot row all-reduced each step)
        or "touched" (only the rows some device touched; what
        ``EmbeddingCollection`` steps do): see :class:`TableCostModel`.

    Raises:
      PlannerError: inconsistent inputs or unsatisfiable floors; the message
        names the setting to change and the value that would work.
    """
    stats = list(stats)
    budget = _check_request(stats, profile, memory_budget_bytes, value_bytes, min_coverage)
    names = [s.name for s in stats]
    opt = _per_table(optimizer_state_floats_per_row, names, "optimizer_state_floats_per_row", None)
    if any(o is None for o in opt):
        missing = [n for n, o in zip(names, opt) if o is None]
        raise PlannerError(
            f"`optimizer_state_floats_per_row` has no entry for tables {missing}; "
            "give an int or a value for every table"
        )
    caps = _per_table(max_hot_rows, names, "max_hot_rows", None)
    floors = _per_table(min_hot_rows, names, "min_hot_rows", 0)
    models = [TableCostModel(s, profile, value_bytes=int(value_bytes), optimizer_state_floats_per_row=o,
                             optimizer_state_bytes_per_float=optimizer_state_bytes_per_float,
                             index_overhead_bytes=index_overhead_bytes,
                             hot_exchange=hot_exchange)
              for s, o in zip(stats, opt)]
    # 1. requirements
    upper = [m.num_ids if c is None else min(c, m.num_ids) for m, c in zip(models, caps)]
    lower = _required_rows(models, floors, caps, upper, min_coverage)
    _check_budget_holds(models, lower, floors, upper, budget, min_coverage)
    # 2-5. allocate and refine, then try the fixed-cost jumps
    chosen, search_cap = _allocate_with_moves(models, lower, upper, budget, search_window)
    tables = [_table_plan(m, r, cap) for m, r, cap in zip(models, chosen, search_cap)]
    used = sum(t.memory_bytes_per_device for t in tables)
    assert used <= budget, (used, budget)
    return ReplicationPlan(
        tables=tuple(tables), profile_name=profile.name, memory_budget_bytes=budget,
        memory_used_bytes=used, value_bytes=int(value_bytes),
        optimizer_state_floats_per_row=(
            int(optimizer_state_floats_per_row)
            if not isinstance(optimizer_state_floats_per_row, Mapping)
            else {n: int(o) for n, o in zip(names, opt)}
        ),
        predicted_step_s=float(sum(t.predicted_step_s for t in tables)),
        unreplicated_step_s=float(sum(t.unreplicated_step_s for t in tables)),
        method=METHOD.format(w=search_window),
    )


def _check_request(
    stats: Sequence[TableStats],
    profile: CostProfile,
    memory_budget_bytes: int,
    value_bytes: int,
    min_coverage: float | None,
) -> int:
    """Raise on a malformed request; return the budget as an int."""
    if not stats:
        raise PlannerError("plan_replication needs stats for at least one table")
    names = [s.name for s in stats]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PlannerError(f"table names must be unique; repeated: {dup}")
    if not (isinstance(memory_budget_bytes, (int, float, np.integer, np.floating))
            and math.isfinite(memory_budget_bytes) and memory_budget_bytes >= 0):
        raise PlannerError(
            f"`memory_budget_bytes` must be a finite number >= 0, got {memory_budget_bytes!r}"
        )
    if int(value_bytes) != value_bytes or value_bytes < 1:
        raise PlannerError(f"`value_bytes` must be an integer >= 1, got {value_bytes!r}")
    if min_coverage is not None and not (0.0 <= min_coverage <= 1.0):
        raise PlannerError(f"`min_coverage` must be in [0, 1], got {min_coverage}")
    for s in stats:
        check_profile_matches(s, profile)
    return int(memory_budget_bytes)


def _required_rows(
    models: Sequence[TableCostModel],
    floors: Sequence[int],
    caps: Sequence[int | None],
    upper: Sequence[int],
    min_coverage: float | None,
) -> list[int]:
    """Step 1: the smallest R each table may have; raise on conflicts."""
    lower = []
    for m, f, c, u in zip(models, floors, caps, upper):
        name = m.stats.name
        if f > m.num_ids:
            raise PlannerError(
                f"`min_hot_rows`={f:,} for table '{name}' exceeds the {m.num_ids:,} distinct "
                f"exchanged ids in its sample; lower `min_hot_rows` to <= {m.num_ids:,} "
                "or sample more batches"
            )
        need_cov = m.rows_for_coverage(min_coverage) if min_coverage else 0
        req = max(f, need_cov)
        if req > u:
            if need_cov > u:
                reach = float(m.coverage(u))
                raise PlannerError(
                    f"table '{name}': `min_coverage`={min_coverage} needs {need_cov:,} hot rows "
                    f"but `max_hot_rows`={c:,}; raise `max_hot_rows` to >= {need_cov:,} or lower "
                    f"`min_coverage` to <= {math.floor(reach * 1e4) / 1e4} (rho at {c:,} rows)"
                )
            raise PlannerError(
                f"table '{name}': `min_hot_rows`={f:,} exceeds `max_hot_rows`={c:,}; "
                f"raise `max_hot_rows` to >= {f:,} or lower `min_hot_rows` to <= {c:,}"
            )
        lower.append(req)
    return lower


def _check_budget_holds(
    models: Sequence[TableCostModel],
    lower: Sequence[int],
    floors: Sequence[int],
    upper: Sequence[int],
    budget: int,
    min_coverage: float | None,
) -> None:
    """Raise if the budget cannot hold the required rows, naming what would fit."""
    required_bytes = sum(r * m.bytes_per_hot_row for r, m in zip(lower, models))
    if required_bytes <= budget:
        return
    parts = ", ".join(
        f"'{m.stats.name}' {r:,} rows x {m.bytes_per_hot_row} B"
        for r, m in zip(lower, models) if r
    )
    what = []
    if min_coverage:
        best = _best_reachable_coverage(models, floors, upper, budget)
        what.append(f"lower `min_coverage` to <= {best} (the most this budget reaches)")
    if any(floors):
        fits = [
            f"'{m.stats.name}' <= {budget // m.bytes_per_hot_row:,}"
            for m, f in zip(models, floors) if f
        ]
        what.append("lower `min_hot_rows` (alone in the budget: " + ", ".join(fits) + ")")
    raise PlannerError(
        f"budget {format_bytes(budget)} per device cannot hold the required hot rows "
        f"({format_bytes(required_bytes)}: {parts}); raise `memory_budget_bytes` to at "
        f"least {required_bytes:,} or " + " or ".join(what)
    )


def _allocate_with_moves(
    models: Sequence[TableCostModel],
    lower: Sequence[int],
    upper: Sequence[int],
    budget: int,
    window: int,
) -> tuple[list[int], list[int]]:
    """Steps 2-5: allocate and refine, then pin one table at a time to each of
    its fixed-cost candidates and keep the best total.  Returns (R per table,
    search cap per table)."""
    chosen, search_cap = _allocate(models, lower, upper, budget, {}, window)
    best_cost = _total(models, chosen)
    required = [lo * m.bytes_per_hot_row for lo, m in zip(lower, models)]
    for _ in range(len(models)):
        improved = False
        for i, m in enumerate(models):
            room = (budget - (sum(required) - required[i])) // m.bytes_per_hot_row
            alone = best_hot_rows(m, lower[i], min(upper[i], room), window=window)
            for c in sorted({lower[i], upper[i], chosen[i], alone}):
                if c > room:
                    continue
                trial, caps = _allocate(models, lower, upper, budget, {i: c}, window)
                cost = _total(models, trial)
                if cost < best_cost * (1 - 1e-12) - 1e-18:
                    chosen, search_cap, best_cost, improved = trial, caps, cost, True
        if not improved:
            break
    return chosen, search_cap


def _total(models: Sequence[TableCostModel], rows: Sequence[int]) -> float:
    return float(sum(float(m.latency(r)) for m, r in zip(models, rows)))


def _allocate(
    models: Sequence[TableCostModel],
    lower: Sequence[int],
    upper: Sequence[int],
    budget: int,
    pinned: Mapping[int, int],
    window: int,
) -> tuple[list[int], list[int]]:
    """Steps 2-4 of the module docstring for the tables not in ``pinned``
    (index -> fixed R).  Returns (R per table, search cap per table)."""
    frozen: dict[int, int] = dict(pinned)
    chosen: list[int] = [frozen.get(i, lower[i]) for i in range(len(models))]
    search_cap: list[int] = list(chosen)
    for _ in range(len(models) + 1):
        active = [i for i in range(len(models)) if i not in frozen]
        if not active:
            break
        free = budget - sum(frozen[i] * models[i].bytes_per_hot_row for i in frozen)
        free -= sum(lower[i] * models[i].bytes_per_hot_row for i in active)
        alloc, left = greedy_allocation(
            [models[i] for i in active],
            [lower[i] for i in active],
            [upper[i] for i in active],
            free,
        )
        budget_limited = any(
            alloc[j] < upper[i] and models[i].marginal_gain(alloc[j] + 1, alloc[j] + 1)[0] > 0
            for j, i in enumerate(active)
        )
        gave_back = []
        for j, i in enumerate(active):
            m = models[i]
            cap = min(upper[i], alloc[j] + left // m.bytes_per_hot_row)
            r = best_hot_rows(m, lower[i], cap, window=window)
            left -= (r - alloc[j]) * m.bytes_per_hot_row
            chosen[i] = r
            search_cap[i] = cap
            if r < alloc[j]:
                gave_back.append(i)
        if not (gave_back and budget_limited and len(active) > 1):
            break
        for i in gave_back:
            frozen[i] = chosen[i]
    return chosen, search_cap


def _table_plan(m: TableCostModel, r: int, cap: int) -> TablePlan:
    s = m.stats
    left_sampled = float(m.remote_lookups_sampled(r))
    left_int = int(round(left_sampled))
    per_step = float(m.remote_lookups_per_step(r))
    ar_s = float(m.allreduce_seconds(r))
    a2a_s = float(m.alltoall_seconds(r))
    return TablePlan(
        name=s.name,
        dim=s.dim,
        hot_rows=int(r),
        hot_ids=hot_ids(s, r),
        coverage=float(m.coverage(r)),
        bytes_per_hot_row=m.bytes_per_hot_row,
        memory_bytes_per_device=int(m.memory_bytes(r)),
        max_hot_rows=int(cap),
        remote_lookups_per_step=per_step,
        remote_lookups_per_step_unreplicated=m.lookups_per_step,
        remote_lookups_sampled=left_int,
        allreduce_payload_bytes=int(m.allreduce_payload_bytes(r)),
        allreduce_bytes_sent_per_device=float(m.allreduce_bytes_sent(r)),
        alltoall_bytes_per_lookup=int(m.lookup_bytes),
        alltoall_bytes_per_step=per_step * m.lookup_bytes,
        alltoall_bytes_sampled=left_int * int(m.lookup_bytes),
        predicted_allreduce_s=ar_s,
        predicted_alltoall_s=a2a_s,
        predicted_step_s=ar_s + a2a_s,
        unreplicated_step_s=float(m.latency(0)),
    )
