"""experiments.cache_bound: Belady's MIN on batched streams against an
exhaustive search of every eviction choice (small streams), and against the
trivial bounds (no capacity limit: every id seen before hits)."""

from __future__ import annotations

import functools
import itertools
import json

import numpy as np
import pytest

from experiments.cache_bound import belady_hits, main, policy_hits, step_ids, step_lookups


def best_possible(steps, capacity):
    """The most hits any sequence of evictions gets (exhaustive, memoized)."""
    @functools.lru_cache(maxsize=None)
    def go(t, held):
        if t == len(steps):
            return 0
        now = frozenset(steps[t].tolist())
        hits = len(now & held)
        pool = sorted(held - now)
        room = capacity - len(now)
        best = 0
        for k in range(min(room, len(pool)) + 1):
            for keep in itertools.combinations(pool, k):
                best = max(best, go(t + 1, now | frozenset(keep)))
        return hits + best
    return go(0, frozenset())


@pytest.mark.parametrize("seed", range(40))
def test_min_hits_as_often_as_the_best_eviction_sequence(seed):
    rng = np.random.default_rng(seed)
    capacity = int(rng.integers(2, 5))
    steps = [np.unique(rng.integers(0, 7, int(rng.integers(1, capacity + 1))))
             for _ in range(int(rng.integers(3, 8)))]
    hits, lookups = belady_hits(steps, capacity, range(len(steps)))
    assert lookups == sum(len(s) for s in steps)
    assert hits == best_possible(steps, capacity)


def test_without_a_capacity_limit_every_id_seen_before_hits():
    rng = np.random.default_rng(0)
    steps = [np.unique(rng.zipf(1.2, 50) % 1000) for _ in range(20)]
    seen, want = set(), 0
    for t, s in enumerate(steps):
        if t >= 10:
            want += sum(i in seen for i in s.tolist())
        seen |= set(s.tolist())
    assert belady_hits(steps, 10**6, range(10, 20)) == (want, sum(len(s) for s in steps[10:]))
    with pytest.raises(ValueError, match="more than capacity=3"):
        belady_hits(steps, 3, range(20))


def test_step_ids_are_each_steps_unique_ids_without_padding():
    batches = [{"ids": {"a": np.array([[3, -1], [3, 5]]), "b": np.array([7, 7, -1])}}] * 2
    got = step_ids(iter(batches), ["a", "b"], 2)
    assert [x.tolist() for x in got["a"]] == [[3, 5], [3, 5]]
    assert [x.tolist() for x in got["b"]] == [[7], [7]]


def test_step_lookups_count_each_ids_lookups():
    batches = [{"ids": {"a": np.array([[3, -1], [3, 5]]), "b": np.array([7, 7, -1])}}]
    got = step_lookups(iter(batches), ["a", "b"], 1)
    assert [(u.tolist(), c.tolist()) for u, c in got["a"]] == [([3, 5], [2, 1])]
    assert [(u.tolist(), c.tolist()) for u, c in got["b"]] == [([7], [2])]


def reference_policy(steps, capacity, counted, policy, weights=None):
    """LRU / LFU by brute force: after each step, drop the lowest-scored ids
    (LRU: last step; LFU: lookups, then last step; ties: the smaller id) not
    in the step. With `weights`, hits and lookups are weighted per id."""
    last, count, hits, lookups = {}, {}, 0, 0
    for t, s in enumerate(steps):
        now = s.tolist()
        w = [1] * len(now) if weights is None else weights[t].tolist()
        if t in counted:
            lookups += sum(w)
            hits += sum(k for i, k in zip(now, w) if i in last)
        for i in now:
            last[i], count[i] = t, count.get(i, 0) + 1
        score = (lambda i: (last[i], i)) if policy == "lru" else (
            lambda i: (count[i], last[i], i))
        for i in sorted((i for i in last if i not in now), key=score)[:max(0, len(last) - capacity)]:
            del last[i], count[i]
    return hits, lookups


@pytest.mark.parametrize("policy", ["lru", "lfu"])
@pytest.mark.parametrize("seed", range(10))
def test_lru_and_lfu_match_a_brute_force_and_never_beat_min(policy, seed):
    rng = np.random.default_rng(seed)
    steps = [np.unique(rng.zipf(1.3, int(rng.integers(1, 12))) % 40) for _ in range(30)]
    capacity = int(rng.integers(12, 25))
    counted = range(10, 30)
    got = policy_hits(steps, capacity, counted, policy)
    assert got == reference_policy(steps, capacity, counted, policy)
    assert got[0] <= belady_hits(steps, capacity, counted)[0]
    # per lookup: the same evictions, each id weighted by its lookups
    weights = [rng.integers(1, 9, len(s)) for s in steps]
    got = policy_hits(steps, capacity, counted, policy, weights)
    assert got == reference_policy(steps, capacity, counted, policy, weights)
    assert got[0] <= belady_hits(steps, 10**6, counted, weights)[0]  # the ceiling


def test_the_command_prints_every_policy_and_min_bounds_them(capsys):
    out = main(["--steps", "6", "--window", "3", "--batch", "256"])
    assert json.loads(capsys.readouterr().out) == out
    assert out["hit_rate_lru"] <= out["hit_rate_belady"] <= out["hit_rate_unbounded"]
    assert max(out[f"lookup_hit_rate_{p}"] for p in ("lru", "lfu", "belady")) <= \
        out["lookup_hit_rate_unbounded"]
    assert out["lookups"] > out["ids"]  # the stream repeats ids within a batch
    assert out["hit_rate_lfu"] <= out["hit_rate_belady"] and out["lookups"] > 0
