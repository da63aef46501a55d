"""Shared by the planner tests (test_planner.py, test_planner_stats.py):
jax_hypereca.planner imported without jax where the package cannot load,
its names, the hypothesis settings and small reference helpers."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow `pytest tests/...` without an install
    sys.path.insert(0, str(ROOT))


def _import_planner():
    """Import jax_hypereca.planner; if the package __init__ cannot be
    imported here (it loads jax and the compiled extension, which the
    planner needs neither of), load the planner sub-package on its own and
    leave ``jax_hypereca`` itself unimported for other test modules."""
    try:
        import jax_hypereca.planner as planner

        return planner
    except ImportError as err:
        if "jax_hypereca.planner" in sys.modules:
            raise
        reason = err
    stub = types.ModuleType("jax_hypereca")
    stub.__path__ = [str(ROOT / "jax_hypereca")]
    sys.modules["jax_hypereca"] = stub
    try:
        import jax_hypereca.planner as planner
    finally:
        del sys.modules["jax_hypereca"]
    planner.__import_fallback_reason__ = repr(reason)
    return planner


_planner = _import_planner()
CostProfile = _planner.CostProfile
DecayedCounter = _planner.DecayedCounter
ExactCounter = _planner.ExactCounter
Measurement = _planner.Measurement
PlannerError = _planner.PlannerError
ProfileCache = _planner.ProfileCache
ReplicationPlan = _planner.ReplicationPlan
TableCostModel = _planner.TableCostModel
TableStats = _planner.TableStats
collect_table_stats = _planner.collect_table_stats
coverage = _planner.coverage
exchanged_lookups = _planner.exchanged_lookups
lookups_per_step = _planner.lookups_per_step
plan_summary = _planner.plan_summary
# the profile's per-row costs (make_profile's keyword names shadow the short names)
ar_row_cost = _planner.c_ar_row
a2a_lookup_cost = _planner.c_a2a_lookup
dedup_step = _planner.dedup_step
fit_line = _planner.fit_line
paper_profile = _planner.paper_profile
plan_replication = _planner.plan_replication
search_min = _planner.search_min
K = sys.modules["jax_hypereca.planner.constants"]

HYP = settings(max_examples=int(os.environ.get("PLANNER_HYPOTHESIS_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def make_profile(
    *,
    c_ar_row: float,
    c_a2a_lookup: float,
    dim: int = 1,
    value_bytes: int = 4,
    num_devices: int = 4,
    ar_fixed_s: float = 0.0,
    a2a_fixed_s: float = 0.0,
) -> CostProfile:
    """Profile with the given per-row costs for rows of ``dim`` x ``value_bytes``."""
    row = dim * value_bytes
    lookup = 2 * row + K.KEY_BYTES
    return CostProfile(
        name="synthetic",
        num_devices=num_devices,
        c_ar_per_byte=c_ar_row / row,
        c_a2a_per_byte=c_a2a_lookup / lookup,
        latency_s=0.0,
        ar_fixed_s=ar_fixed_s,
        a2a_fixed_s=a2a_fixed_s,
        ar_bytes_sent_per_payload_byte=2.0 * (num_devices - 1) / num_devices,
        source="test",
    )


def zipf_counts(n: int, s: float, scale: float = 1e5) -> np.ndarray:
    return np.maximum(1, (scale / np.arange(1, n + 1) ** s)).astype(np.int64)


def brute_force_latency(counts, r_values, *, steps_x_devices, c_ar, c_a2a, f_ar=0.0, f_a2a=0.0):
    """L(R) computed independently of the planner, straight from the counts."""
    c = np.sort(np.asarray(counts, np.int64))[::-1]
    total = int(c.sum())
    out = []
    for r in r_values:
        left = total - int(c[:r].sum())
        n = left / steps_x_devices
        out.append((f_ar if r > 0 else 0.0) + r * c_ar + (f_a2a if left > 0 else 0.0) + n * c_a2a)
    return np.array(out)
