"""Human-readable text of replication plans (numpy-free)."""

from __future__ import annotations

import math

from .types import ReplicationPlan


def format_bytes(n: float) -> str:
    """Human-readable binary size, e.g. ``1.0 MiB``."""
    n = float(n)
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def plan_speedup(plan: ReplicationPlan) -> float:
    """L(0) / L(R) summed over tables (inf if the plan costs nothing)."""
    return plan.unreplicated_step_s / plan.predicted_step_s if plan.predicted_step_s > 0 else math.inf


def plan_summary(plan: ReplicationPlan) -> str:
    """A fixed-width text table of the plan."""
    lines = [
        f"ReplicationPlan (profile {plan.profile_name!r}, budget "
        f"{format_bytes(plan.memory_budget_bytes)}/device, used "
        f"{format_bytes(plan.memory_used_bytes)})",
        f"{'table':<20} {'R':>10} {'rho(R)':>8} {'mem/dev':>10} "
        f"{'a2a B/step':>12} {'AR B/step':>12} {'L(R) ms':>9} {'L(0) ms':>9}",
    ]
    for t in plan.tables:
        lines.append(
            f"{t.name[:20]:<20} {t.hot_rows:>10,} {t.coverage:>8.4f} "
            f"{format_bytes(t.memory_bytes_per_device):>10} "
            f"{t.alltoall_bytes_per_step:>12.4g} {t.allreduce_bytes_sent_per_device:>12.4g} "
            f"{t.predicted_step_s * 1e3:>9.3f} {t.unreplicated_step_s * 1e3:>9.3f}"
        )
    lines.append(
        f"total predicted {plan.predicted_step_s * 1e3:.3f} ms/step vs "
        f"{plan.unreplicated_step_s * 1e3:.3f} ms/step unreplicated "
        f"(x{plan_speedup(plan):.2f})"
    )
    return "\n".join(lines)
