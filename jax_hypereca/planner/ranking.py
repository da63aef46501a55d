"""Per-id counts ranked into the order :class:`~.types.TableStats` holds them.

Below :mod:`.types` (it imports only :mod:`.errors`), so that
``TableStats.from_counts`` can stay a one-line constructor.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .errors import PlannerError


def ranked_stats_fields(
    *,
    name: str,
    dim: int,
    counts: Sequence[int] | np.ndarray,
    ids: Sequence[int] | np.ndarray | None = None,
    num_batches: int = 1,
    num_devices: int,
    total_lookups: int | None = None,
    deduplicated_lookups: int | None = None,
    remote_only: bool = True,
) -> dict[str, Any]:
    """The fields of a ``TableStats`` built from unsorted per-id counts.

    Zero counts are dropped; the rest are ranked most frequent first, ties by
    ascending id.  ``ids`` defaults to ``0..len(counts)-1``; the totals
    default to the sum of the counts.
    """
    counts = np.asarray(counts, dtype=np.int64).reshape(-1)
    ids = (
        np.arange(counts.size, dtype=np.int64)
        if ids is None
        else np.asarray(ids, dtype=np.int64).reshape(-1)
    )
    if ids.shape != counts.shape:
        raise PlannerError(
            f"TableStats '{name}': ids ({ids.size}) and counts ({counts.size}) differ in "
            "length; pass one count per id"
        )
    if counts.size and counts.min() < 0:
        raise PlannerError(
            f"TableStats '{name}': counts must be >= 0, got {int(counts.min())}; pass "
            "lookup counts"
        )
    keep = counts > 0
    ids, counts = ids[keep], counts[keep]
    order = np.lexsort((ids, -counts))
    total = int(counts.sum())
    return dict(
        name=name,
        dim=dim,
        ids=ids[order],
        counts=counts[order],
        total_lookups=total if total_lookups is None else int(total_lookups),
        deduplicated_lookups=total if deduplicated_lookups is None else int(deduplicated_lookups),
        num_batches=num_batches,
        num_devices=num_devices,
        remote_only=remote_only,
    )
