"""Tests of jax_hypereca.planner's statistics (numpy only): exact counting of
what a mesh exchanges and the decayed (Misra-Gries) counter."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from planner_testing import (
    DecayedCounter, ExactCounter, HYP, K, PlannerError, TableStats, collect_table_stats,
    coverage, dedup_step, exchanged_lookups, lookups_per_step, make_profile,
    plan_replication, zipf_counts,
)

# --------------------------------------------------------------------------
# stats
# --------------------------------------------------------------------------

HAND_BATCHES = [
    [np.array([4, 4, 3, -1, 5, -2]), np.array([3, 3, 2, -1, -1, 7])],
    [np.array([3, 6, 6, 7]), np.array([-1, -1, 4, 3, 2])],
]


def test_exact_counting_hand_example():
    # no owner: per-device dedup only
    s = collect_table_stats(HAND_BATCHES, name="h", dim=2, num_devices=2)
    # b1: dev0 {3,4,5} dev1 {2,3,7}; b2: dev0 {3,6,7} dev1 {2,3,4}
    assert s.ids.tolist() == [3, 2, 4, 7, 5, 6]
    assert s.counts.tolist() == [4, 2, 2, 2, 1, 1]
    assert s.total_lookups == 4 + 4 + 4 + 3
    assert s.deduplicated_lookups == 12 == exchanged_lookups(s)
    assert s.num_batches == 2 and s.num_devices == 2 and not s.remote_only

    # owner = id % 2: dev0 sends odd ids, dev1 sends even ids
    s = collect_table_stats(HAND_BATCHES, name="h", dim=2, num_devices=2, owner_fn=lambda ids: ids % 2)
    # b1: dev0 {3,5} dev1 {2}; b2: dev0 {3,7} dev1 {2,4}
    assert s.ids.tolist() == [2, 3, 4, 5, 7]
    assert s.counts.tolist() == [2, 2, 1, 1, 1]
    assert s.remote_only and s.deduplicated_lookups == 12 and exchanged_lookups(s) == 7
    np.testing.assert_allclose(coverage(s.counts, np.array([0, 1, 2, 5, 10])), [0, 2 / 7, 4 / 7, 1, 1])
    assert coverage(s.counts, 3) == pytest.approx(5 / 7)
    assert lookups_per_step(s) == pytest.approx(7 / 4)

    # the plan's exchange volume is exact on these batches
    prof = make_profile(c_ar_row=1.0, c_a2a_lookup=1.0, dim=2, num_devices=2)
    plan = plan_replication([s], prof, memory_budget_bytes=10**6, optimizer_state_floats_per_row=0,
                            max_hot_rows=0)
    t = plan["h"]
    assert t.remote_lookups_sampled == 7 and t.alltoall_bytes_per_lookup == 8 + 2 * 2 * 4
    assert t.alltoall_bytes_sampled == 7 * 24
    assert t.alltoall_bytes_per_step == pytest.approx(7 * 24 / 4)
    plan = plan_replication([s], prof, memory_budget_bytes=10**6, optimizer_state_floats_per_row=0,
                            min_hot_rows=2, max_hot_rows=2)
    assert plan["h"].hot_ids.tolist() == [2, 3] and plan["h"].remote_lookups_sampled == 3


def test_plan_exchange_volume_matches_simulated_exchange():
    """remote_lookups_sampled / alltoall_bytes_sampled equal what an exchange
    with the planned hot set would carry on the sampled batches."""
    W, steps = 4, 12
    rng = np.random.default_rng(5)
    p = 1.0 / np.arange(1, 501) ** 1.1
    p /= p.sum()
    batches = [
        [np.where(rng.random(64) < 0.05, -1, rng.choice(500, size=64, p=p) * 3 + 1) for _ in range(W)]
        for _ in range(steps)
    ]

    def owner(ids):
        return (ids.astype(np.uint64) * np.uint64(2654435761) >> np.uint64(7)) % np.uint64(W)

    s = collect_table_stats(iter(batches), name="e", dim=8, num_devices=W, owner_fn=owner)
    prof = make_profile(c_ar_row=1e-7, c_a2a_lookup=2e-6, dim=8, num_devices=W)
    plan = plan_replication([s], prof, memory_budget_bytes=40 * 200, optimizer_state_floats_per_row=8)
    t = plan["e"]
    assert 0 < t.hot_rows < s.num_ids
    hot = set(t.hot_ids.tolist())
    sent = 0
    for batch in batches:
        for dev, ids in enumerate(batch):
            u = np.unique(ids[ids >= 0])
            u = u[owner(u) != dev]
            sent += sum(1 for x in u.tolist() if x not in hot)
    assert t.remote_lookups_sampled == sent
    assert t.alltoall_bytes_sampled == sent * (2 * 8 * 4 + 8)
    assert t.remote_lookups_per_step == pytest.approx(sent / (steps * W))
    assert t.allreduce_payload_bytes == t.hot_rows * 8 * 4


def test_reserved_ids_match_the_store():
    errors = pytest.importorskip("jax_hypereca.errors")
    assert set(K.RESERVED_IDS) == {errors.PADDING_ID, errors.EMPTY_KEY, errors.ERASED_KEY}
    assert K.PADDING_ID == errors.PADDING_ID


def test_counting_accepts_2d_arrays_and_checks_shape():
    batch = np.array([[1, 1, -1], [2, 1, -2]])
    ids, counts, raw, dedup = dedup_step(batch)
    assert ids.tolist() == [1, 2] and counts.tolist() == [2, 1] and raw == 4 and dedup == 3
    with pytest.raises(PlannerError, match="num_devices"):
        dedup_step([np.array([1])], num_devices=2)
    with pytest.raises(PlannerError, match="1-D"):
        dedup_step(np.array([1, 2, 3]))
    with pytest.raises(PlannerError, match="no batches"):
        collect_table_stats([], name="e", dim=1, num_devices=1)


@HYP
@given(
    data=st.lists(
        st.lists(st.lists(st.integers(-2, 12), max_size=12), min_size=3, max_size=3),
        min_size=1, max_size=12,
    ),
    remote=st.booleans(),
)
def test_exact_counter_matches_naive(data, remote):
    W = 3
    owner = (lambda ids: (ids * 7 + 1) % W) if remote else None
    batches = [[np.array(d, dtype=np.int64) for d in step] for step in data]
    c = ExactCounter(num_devices=W, owner_fn=owner, merge_every=3)
    for b in batches:
        c.update(b)
    ids, counts = c.counts()
    naive: dict[int, int] = {}
    for step in data:
        for dev, arr in enumerate(step):
            for x in set(arr) - {-1, -2}:
                if remote and (x * 7 + 1) % W == dev:
                    continue
                naive[x] = naive.get(x, 0) + 1
    assert dict(zip(ids.tolist(), counts.tolist())) == naive
    assert c.total_lookups == sum(1 for step in data for arr in step for x in arr if x not in (-1, -2))


def test_coverage_function_vectorised():
    counts = np.array([5, 3, 2])
    np.testing.assert_allclose(coverage(counts, [0, 1, 2, 3, 4]), [0, 0.5, 0.8, 1, 1])
    assert coverage(counts, 2) == pytest.approx(0.8)
    assert coverage(np.zeros(0, np.int64), 3) == 0.0
    with pytest.raises(PlannerError):
        coverage(counts, -1)
    with pytest.raises(PlannerError):
        TableStats(name="x", dim=1, ids=[1, 2], counts=[1, 2], total_lookups=3,
                   deduplicated_lookups=3, num_batches=1, num_devices=1)


def test_paper_skew_shape():
    """A Zipf-like table where ~2.2% of ids cover ~90% of lookups."""
    counts = zipf_counts(100_000, 1.45, 1e7)
    s = TableStats.from_counts(name="t", dim=128, counts=counts, num_devices=32)
    r = int(round(K.PAPER_HOT_ID_SHARE * s.num_ids))
    assert coverage(s.counts, r) > K.PAPER_HOT_COVERAGE


# --------------------------------------------------------------------------
# decayed counter
# --------------------------------------------------------------------------


def _zipf_stream(steps, W, per_device, vocab, s, seed):
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1) ** s
    p /= p.sum()
    perm = rng.permutation(vocab).astype(np.int64) * 13 + 5  # hot ids are not 0..k
    for _ in range(steps):
        yield [perm[rng.choice(vocab, size=per_device, p=p)] for _ in range(W)], perm


def test_decayed_counter_bounds_and_top_ids_on_zipf_stream():
    W, vocab, k, decay = 4, 4_000, 150, 0.98
    counter = DecayedCounter(k, decay=decay, num_devices=W)
    exact: dict[int, float] = {}
    total = 0.0
    for batch, _ in _zipf_stream(250, W, 400, vocab, 1.2, seed=7):
        counter.update(batch)
        ids, cnt, _, _ = dedup_step(batch)
        for key in exact:
            exact[key] *= decay
        for i, c in zip(ids.tolist(), cnt.tolist()):
            exact[i] = exact.get(i, 0.0) + c
        total = total * decay + cnt.sum()
        assert len(counter) <= k
    assert counter.total_weight == pytest.approx(total)
    keys = np.array(sorted(exact))
    true = np.array([exact[x] for x in keys])
    est = counter.estimate(keys)
    eps = counter.error_bound
    assert eps <= total / (k + 1) + 1e-9
    assert np.all(est <= true + 1e-9)           # never overestimates
    assert np.all(true - est <= eps + 1e-9)     # undercount bounded
    # top ids
    order = np.lexsort((keys, -true))
    for R in (5, 10, 20):
        true_top = set(keys[order[:R]].tolist())
        got = set(counter.hot_ids(R).tolist())
        gap = true[order[R - 1]] - true[order[R]]
        if gap > eps:
            assert got == true_top
        else:
            assert len(got & true_top) >= R - 2
    assert set(counter.hot_ids(10).tolist()) == set(keys[order[:10]].tolist())
    # coverage of the current hot set: lower bound <= truth <= upper bound
    hot = counter.hot_ids(20)
    true_cov = sum(exact[int(i)] for i in hot) / total
    lo, hi = counter.coverage_bounds_of(hot)
    assert lo - 1e-9 <= true_cov <= hi + 1e-9
    assert counter.coverage(20) == pytest.approx(lo)
    assert true_cov > 0.05


def test_decayed_counter_without_decay_is_misra_gries():
    counter = DecayedCounter(2, decay=1.0)
    for step in ([1, 1, 2], [1, 3], [1, 4], [2, 5]):
        # one device per step -> counts of distinct ids
        counter.update([np.array(step)])
    # true counts: 1:3 2:2 3:1 4:1 5:1, total 8
    est = counter.estimate([1, 2, 3, 4, 5])
    true = np.array([3, 2, 1, 1, 1])
    assert np.all(est <= true) and np.all(true - est <= counter.error_bound + 1e-12)
    assert counter.error_bound <= 8 / 3
    assert counter.hot_ids(1).tolist() == [1]
    with pytest.raises(PlannerError):
        DecayedCounter(0)
    with pytest.raises(PlannerError):
        DecayedCounter(3, decay=0.0)


def test_decayed_counter_forgets_old_hot_ids():
    counter = DecayedCounter(8, decay=0.8)
    for _ in range(30):
        counter.update([np.array([1, 2, 3])])
    for _ in range(30):
        counter.update([np.array([7, 8, 9])])
    assert set(counter.hot_ids(3).tolist()) == {7, 8, 9}
    assert counter.coverage(3) > 0.99
