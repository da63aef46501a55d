"""Distinct ids on the host: what a batch's staging and the capacity checks
count, per table, every step.

``np.unique`` on numpy 2.x spends ~120 us on 2,048 int64 ids (it hashes, then
sorts); one sort and a comparison of neighbours gives the same sorted array
in ~14 us, which is 3-4 ms per step for 26 tables. numpy only, no JAX.
"""

from __future__ import annotations

import numpy as np

from jax_hypereca.errors import PADDING_ID


def distinct_ids(*arrays) -> np.ndarray:
    """The distinct int64 values of `arrays` (any shapes, flattened), sorted
    ascending, PADDING_ID dropped: ``np.unique`` of their concatenation
    without the padding."""
    parts = [np.asarray(a).reshape(-1) for a in arrays]
    flat = (np.concatenate(parts) if len(parts) != 1 else parts[0]).astype(np.int64)
    s = np.sort(flat)
    if s.size == 0:
        return s
    keep = np.empty(s.size, bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    keep &= s != PADDING_ID
    return s[keep]
