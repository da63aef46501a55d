"""The most any eviction policy could hit: Belady's MIN on a stream of batches.

    python -m experiments.cache_bound [--steps 60] [--share 0.2] [--window 20]

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
Run as a command, it simulates the synthetic Criteo-like stream (criteo-kaggle
preset, batch 2048) for --steps steps with --share of each table's distinct
ids as rows, one pool per table: LRU, LFU, MIN and unbounded rows, hit rates
over the last --window steps, one JSON line -- per distinct id a step looks
up (``hit_rate_*``, the bound above) and per lookup (``lookup_hit_rate_*``:
an id a batch looks up n times counts n times, as a cache's hit rate
usually does; there only the unbounded rate bounds every policy).
"""

from __future__ import annotations

import argparse
import collections
import heapq
import json
from typing import Iterable, Sequence

import numpy as np

NEVER = 1 << 62  # the next use of an id the stream does not look up again


def step_lookups(batches: Iterable[dict], tables: Sequence[str], steps: int
                 ) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Per table (feature of the same name), each of the first `steps`
    batches' (unique ids, how often the batch looks each up), padding
    dropped."""
    from jax_hypereca import PADDING_ID

    out: dict[str, list] = {t: [] for t in tables}
    for _, batch in zip(range(steps), batches):
        for t in tables:
            ids = np.asarray(batch["ids"][t]).reshape(-1)
            out[t].append(np.unique(ids[ids != PADDING_ID], return_counts=True))
    return out


def step_ids(batches: Iterable[dict], tables: Sequence[str], steps: int
             ) -> dict[str, list[np.ndarray]]:
    """Per table, each of the first `steps` batches' unique ids (step_lookups
    without the counts)."""
    return {t: [ids for ids, _ in s] for t, s in step_lookups(batches, tables, steps).items()}


def _tally(now: list, held, weights: np.ndarray | None) -> tuple[int, int]:
    """(hits, lookups) of one step: ids, or with `weights` lookups."""
    if weights is None:
        return sum(i in held for i in now), len(now)
    return (int(sum(w for i, w in zip(now, weights.tolist()) if i in held)),
            int(weights.sum()))


def belady_hits(steps: Sequence[np.ndarray], capacity: int, counted: range,
                weights: Sequence[np.ndarray] | None = None) -> tuple[int, int]:
    """(hits, lookups) over the steps in `counted` of MIN with `capacity`
    rows, starting empty at step 0 (`capacity` must hold any one step's ids).
    With `weights` (per step, each id's lookups) hits and lookups count
    lookups instead of ids; MIN is then a policy, not a bound (a miss of a
    popular id costs more), except with unbounded rows: only ids seen for
    the first time miss, the ceiling of every policy."""
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
            h, n = _tally(now, held, None if weights is None else weights[t])
            hits, lookups = hits + h, lookups + n
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


def policy_hits(steps: Sequence[np.ndarray], capacity: int, counted: range, policy: str,
                weights: Sequence[np.ndarray] | None = None) -> tuple[int, int]:
    """(hits, lookups) of LRU or LFU (fewest lookups, then least recent;
    ties: the smaller id) with `capacity` rows, one pool, the current step's
    ids never evicted; `weights` as belady_hits'. LFU counts the steps an id
    is looked up in, as the tables' frequency score does."""
    held: dict[int, tuple[int, int]] = {}  # id -> (lookups, last step)
    heap: list[tuple[int, int, int]] = []  # the score when pushed, id
    hits = lookups = 0
    for t, ids in enumerate(steps):
        now = ids.tolist()
        if t in counted:
            h, n = _tally(now, held, None if weights is None else weights[t])
            hits, lookups = hits + h, lookups + n
        for i in now:
            count = held[i][0] + 1 if i in held else 1
            held[i] = (count, t)
            heapq.heappush(heap, (count if policy == "lfu" else 0, t, i))
        kept, current = [], set(now)
        while len(held) > capacity:
            entry = heapq.heappop(heap)
            i = entry[2]
            if held.get(i, (None, None))[1] != entry[1] or (
                    policy == "lfu" and held[i][0] != entry[0]):
                continue  # an older entry of an id looked up again since
            if i in current:
                kept.append(entry)
                continue
            del held[i]
        for entry in kept:
            heapq.heappush(heap, entry)
    return hits, lookups


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--share", type=float, default=0.2)
    p.add_argument("--window", type=int, default=20, help="counted: the last WINDOW steps")
    p.add_argument("--batch", type=int, default=2048)
    args = p.parse_args(argv)
    from models.config import PRESETS, SPARSE_NAMES
    from models.data import SyntheticSource

    preset = PRESETS["criteo-kaggle"]
    names = list(SPARSE_NAMES[:len(preset.vocab_sizes)])
    source = SyntheticSource(names=names, multi_hot=preset.multi_hot, local_batch=args.batch)
    looked_up = step_lookups(source.train_batches(0), names, args.steps)
    counted = range(args.steps - args.window, args.steps)
    sums = collections.Counter()
    for pairs in looked_up.values():
        steps, counts = [u for u, _ in pairs], [c for _, c in pairs]
        distinct = len(np.unique(np.concatenate(steps)))
        cap = max(int(args.share * distinct), max(len(s) for s in steps))
        for w, prefix in ((None, ""), (counts, "lookup_")):
            for name, (h, n) in (("lru", policy_hits(steps, cap, counted, "lru", w)),
                                 ("lfu", policy_hits(steps, cap, counted, "lfu", w)),
                                 ("belady", belady_hits(steps, cap, counted, w)),
                                 ("unbounded", belady_hits(steps, 1 << 40, counted, w))):
                sums[prefix + name] += h
                sums[prefix + "n"] += n if name == "lru" else 0
    out = {"bench": "cache_bound", "steps": args.steps, "window": args.window,
           "share": args.share, "batch": args.batch, "ids": sums["n"],
           "lookups": sums["lookup_n"],
           **{f"{p}hit_rate_{k}": sums[p + k] / sums[p + "n"]
              for p in ("", "lookup_") for k in ("lru", "lfu", "belady", "unbounded")}}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
