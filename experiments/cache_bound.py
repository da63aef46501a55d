"""The most any eviction policy could hit: Belady's MIN on a stream of batches.

A device tier of C rows per table serves a step's unique ids from the rows it
holds; the rest are misses (new ids, or ids whose rows went to the host
tier). Belady's MIN -- on a miss, evict the row whose id is next looked up
farthest in the future -- hits at least as often as any policy with C rows
that cannot see the future, here relaxed further: one pool of C rows per
table (no owner shards, no buckets), and the ids of the current step never
evicted (a step needs all its rows at once). Ids seen for the first time are
misses for every policy, so over a short stream the bound is well below 1.

bench_tiers reports it beside the measured hit rate: how much of the gap to
the issue's goal a better policy could close, and how much is the stream.
"""

from __future__ import annotations

import collections
import heapq
from typing import Iterable, Sequence

import numpy as np

NEVER = 1 << 62  # the next use of an id the stream does not look up again


def step_ids(batches: Iterable[dict], tables: Sequence[str], steps: int
             ) -> dict[str, list[np.ndarray]]:
    """Per table (feature of the same name), each of the first `steps`
    batches' unique ids, padding dropped."""
    from jax_hypereca import PADDING_ID

    out: dict[str, list[np.ndarray]] = {t: [] for t in tables}
    for _, batch in zip(range(steps), batches):
        for t in tables:
            ids = np.unique(np.asarray(batch["ids"][t]).reshape(-1))
            out[t].append(ids[ids != PADDING_ID])
    return out


def belady_hits(steps: Sequence[np.ndarray], capacity: int, counted: range
                ) -> tuple[int, int]:
    """(hits, lookups) over the steps in `counted` of MIN with `capacity`
    rows, starting empty at step 0 (`capacity` must hold any one step's ids)."""
    uses: dict[int, collections.deque] = collections.defaultdict(collections.deque)
    for t, ids in enumerate(steps):
        for i in ids.tolist():
            uses[i].append(t)
    held: set[int] = set()
    heap: list[tuple[int, int]] = []  # (-next use, id), stale entries skipped
    hits = lookups = 0
    for t, ids in enumerate(steps):
        now = ids.tolist()
        if len(now) > capacity:
            raise ValueError(f"step {t} looks up {len(now)} ids, more than capacity={capacity}")
        if t in counted:
            lookups += len(now)
            hits += sum(i in held for i in now)
        for i in now:
            uses[i].popleft()
            held.add(i)
            heapq.heappush(heap, (-(uses[i][0] if uses[i] else NEVER), i))
        _evict(held, heap, uses, capacity, set(now))
    return hits, lookups


def _evict(held: set, heap: list, uses: dict, capacity: int, now: set) -> None:
    """Drops the ids used farthest ahead until `capacity` remain, never one
    of `now` (they go back on the heap)."""
    kept = []
    while len(held) > capacity:
        neg, i = heapq.heappop(heap)
        nxt = uses[i][0] if uses[i] else NEVER
        if i not in held or -neg != nxt:
            continue  # an older entry of an id looked up again since
        if i in now:
            kept.append((neg, i))
            continue
        held.remove(i)
    for entry in kept:
        heapq.heappush(heap, entry)
