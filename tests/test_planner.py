"""Tests of jax_hypereca.planner (numpy only; must not need jax): its import
graph, the paper profile, fitting measurements, the cost model and search,
errors, serialisation and the profile cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from planner_testing import (
    CostProfile, HYP, K, Measurement, PlannerError, ProfileCache, ROOT, ReplicationPlan,
    TableCostModel, TableStats, a2a_lookup_cost, ar_row_cost, brute_force_latency, fit_line,
    make_profile, paper_profile, plan_replication, plan_summary, search_min, zipf_counts,
)

# --------------------------------------------------------------------------
# no jax
# --------------------------------------------------------------------------


def _run_python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


def test_planner_modules_do_not_import_jax():
    # The planner itself, independent of what the package __init__ does.
    res = _run_python(
        f"""
        import sys, types
        pkg = types.ModuleType("jax_hypereca")
        pkg.__path__ = [{str(ROOT / "jax_hypereca")!r}]
        sys.modules["jax_hypereca"] = pkg
        import jax_hypereca.planner as p
        import jax_hypereca.planner.cache, jax_hypereca.planner.replication
        p.plan_replication(
            [p.TableStats.from_counts(name="t", dim=4, counts=[5, 3, 1], num_devices=32)],
            p.paper_profile(), memory_budget_bytes=1 << 20, optimizer_state_floats_per_row=0)
        bad = sorted(m for m in sys.modules if m == "jax" or m.startswith(("jax.", "jaxlib")))
        assert not bad, bad
        print("ok")
        """
    )
    assert res.returncode == 0 and "ok" in res.stdout, res.stdout + res.stderr


# --------------------------------------------------------------------------
# paper profile
# --------------------------------------------------------------------------


def test_paper_profile_matches_hand_derivation():
    p = paper_profile()
    # Raw published figures, typed in again here (not read from constants).
    W, g = 32, 8  # 4 nodes of 8 GPUs
    ib_node = 100e9 / 8          # 12.5 GB/s per node
    ib_gpu = ib_node / g         # 1.5625 GB/s per GPU when all 8 send
    pcie = 12e9
    row = 128 * 4                # 512 B
    lookup = 8 + 2 * row         # key + row + gradient = 1032 B

    # Hierarchical ring all-reduce of S bytes:
    #   reduce-scatter in node 7/8 S over PCIe, all-reduce across nodes
    #   2*(3/4)*(S/8) = 3/16 S over the GPU's IB share, all-gather 7/8 S over PCIe.
    c_ar = row * (7 / 8 / pcie + (3 / 16) / ib_gpu + 7 / 8 / pcie)
    # All-to-all: 24 of 31 peers in other nodes (IB share), 7 of 31 in node (PCIe).
    c_a2a = lookup * ((24 / 31) / ib_gpu + (7 / 31) / pcie)

    assert p.num_devices == W
    assert ar_row_cost(p, 128, 4) == pytest.approx(c_ar, rel=1e-12)
    assert a2a_lookup_cost(p, 128, 4) == pytest.approx(c_a2a, rel=1e-12)
    # The numbers quoted in the docs.
    assert ar_row_cost(p, 128, 4) == pytest.approx(1.36107e-7, rel=1e-5)
    assert a2a_lookup_cost(p, 128, 4) == pytest.approx(5.30759e-7, rel=1e-5)
    # Bytes sent per payload byte and fixed costs.
    assert p.ar_bytes_sent_per_payload_byte == pytest.approx(7 / 8 + 3 / 16 + 7 / 8)
    assert p.ar_fixed_s == pytest.approx((7 + 6 + 7) * 10e-6)
    assert p.a2a_fixed_s == pytest.approx(3 * 31 * 10e-6)
    # Costs scale with dim and bytes per element.
    assert ar_row_cost(p, 64, 2) == pytest.approx(ar_row_cost(p, 128, 4) / 4)
    assert a2a_lookup_cost(p, 64, 2) == pytest.approx(c_a2a / lookup * (8 + 2 * 128))


def test_paper_profile_plan_threshold():
    """With the paper profile an id is worth replicating iff its exchanged
    count per (step, device) exceeds C_ar / C_a2a."""
    p = paper_profile()
    counts = zipf_counts(20_000, 1.1, scale=1e6)
    s = TableStats.from_counts(name="t", dim=128, counts=counts, num_devices=32, num_batches=100)
    plan = plan_replication([s], p, memory_budget_bytes=1 << 30, optimizer_state_floats_per_row=0)
    ratio = ar_row_cost(p, 128, 4) / a2a_lookup_cost(p, 128, 4)
    expected = int(np.count_nonzero(counts / (100 * 32) > ratio))
    assert plan["t"].hot_rows == expected
    assert plan.predicted_step_s < plan.unreplicated_step_s


# --------------------------------------------------------------------------
# fitting measurements
# --------------------------------------------------------------------------


def _synthetic_measurements(a_ar, b_ar, a_a2a, b_a2a, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    ms = []
    for rows in (1_000, 4_000, 16_000, 64_000, 256_000):
        nb = rows * 128 * 4
        t = a_ar + b_ar * nb
        ms.append(Measurement(kind="all_reduce", rows=rows, dim=128, bytes=nb,
                              seconds=t * (1 + noise * rng.standard_normal()), num_devices=8))
        nb = rows * (2 * 128 * 4 + 8)
        t = a_a2a + b_a2a * nb
        ms.append(Measurement(kind="all_to_all", rows=rows, dim=128, bytes=nb,
                              seconds=t * (1 + noise * rng.standard_normal()), num_devices=8))
    return ms


def test_from_measurements_recovers_coefficients():
    a_ar, b_ar, a_a2a, b_a2a = 50e-6, 2.5e-10, 120e-6, 6e-10
    p = CostProfile.from_measurements(
        _synthetic_measurements(a_ar, b_ar, a_a2a, b_a2a), name="fit", source="synthetic"
    )
    assert p.num_devices == 8
    assert p.c_ar_per_byte == pytest.approx(b_ar, rel=1e-9)
    assert p.c_a2a_per_byte == pytest.approx(b_a2a, rel=1e-9)
    assert p.ar_fixed_s == pytest.approx(a_ar, rel=1e-6)
    assert p.a2a_fixed_s == pytest.approx(a_a2a, rel=1e-6)
    assert p.r2_all_reduce == pytest.approx(1.0, abs=1e-12)
    assert p.r2_all_to_all == pytest.approx(1.0, abs=1e-12)
    assert ar_row_cost(p, 128, 4) == pytest.approx(b_ar * 512)
    assert p.ar_bytes_sent_per_payload_byte == pytest.approx(2 * 7 / 8)
    # Round trip through JSON.
    assert CostProfile.from_json(p.to_json()) == p


def test_from_measurements_noisy_fit_and_errors():
    p = CostProfile.from_measurements(
        _synthetic_measurements(50e-6, 2.5e-10, 120e-6, 6e-10, noise=0.03),
        name="fit", source="synthetic",
    )
    assert 0.9 < p.r2_all_reduce < 1.0 and 0.9 < p.r2_all_to_all < 1.0
    assert p.c_a2a_per_byte == pytest.approx(6e-10, rel=0.1)

    one_size = [m for m in _synthetic_measurements(1e-5, 1e-10, 1e-5, 1e-10) if m.rows == 1000]
    with pytest.raises(PlannerError, match="distinct sizes"):
        CostProfile.from_measurements(one_size, name="x", source="x")
    mixed = _synthetic_measurements(1e-5, 1e-10, 1e-5, 1e-10)
    mixed.append(Measurement(kind="all_reduce", rows=1, dim=1, bytes=4, seconds=1e-5, num_devices=4))
    with pytest.raises(PlannerError, match="device counts"):
        CostProfile.from_measurements(mixed, name="x", source="x")
    only_ar = [m for m in mixed[:-1] if m.kind == "all_reduce"]
    with pytest.raises(PlannerError, match="all_to_all"):
        CostProfile.from_measurements(only_ar, name="x", source="x")
    with pytest.raises(PlannerError, match="min_r2"):
        CostProfile.from_measurements(
            _synthetic_measurements(50e-6, 2.5e-10, 120e-6, 6e-10, noise=0.2, seed=3),
            name="x", source="x", min_r2=0.999,
        )
    with pytest.raises(PlannerError):
        Measurement(kind="broadcast", rows=1, dim=1, bytes=4, seconds=1.0, num_devices=2)


def test_fit_line_negative_intercept_refits_through_origin():
    x = np.array([1.0, 2.0, 3.0])
    y = np.array([0.9, 2.0, 3.1])  # unconstrained intercept -0.2
    fit = fit_line(x, y)
    assert fit.intercept == 0.0 and fit.slope > 0
    with pytest.raises(PlannerError, match="does not grow"):
        fit_line(x, np.array([3.0, 2.0, 1.0]))


# --------------------------------------------------------------------------
# cost model and search
# --------------------------------------------------------------------------


def test_latency_is_u_shaped_and_argmin_found():
    counts = zipf_counts(2_000, 1.05)
    s = TableStats.from_counts(name="z", dim=1, counts=counts, num_devices=4, num_batches=10)
    prof = make_profile(c_ar_row=100.0, c_a2a_lookup=2.0)
    m = TableCostModel(s, prof, value_bytes=4)
    r = np.arange(s.num_ids + 1)
    lat = m.latency(r)
    ref = brute_force_latency(counts, r, steps_x_devices=40, c_ar=100.0, c_a2a=2.0)
    np.testing.assert_allclose(lat, ref, rtol=1e-12)
    best = int(np.argmin(lat))
    assert 0 < best < s.num_ids  # interior minimum: U shape
    assert lat[0] > lat[best] < lat[-1]
    d = np.diff(lat)
    assert np.all(d[:best] <= 1e-9) and np.all(d[best:] >= -1e-9)  # unimodal
    plan = plan_replication([s], prof, memory_budget_bytes=10**12, optimizer_state_floats_per_row=0)
    assert plan["z"].hot_rows == best
    assert plan["z"].predicted_step_s == pytest.approx(lat[best])
    assert plan["z"].coverage == pytest.approx(counts[:best].sum() / counts.sum())
    np.testing.assert_array_equal(plan["z"].hot_ids, s.ids[:best])


@HYP
@given(
    counts=st.lists(st.integers(1, 60), min_size=1, max_size=40),
    c_ar=st.floats(1e-3, 10.0),
    c_a2a=st.floats(1e-3, 10.0),
    f_ar=st.sampled_from([0.0, 0.5, 5.0]),
    f_a2a=st.sampled_from([0.0, 0.5, 5.0]),
    budget_rows=st.integers(0, 45),
    max_rows=st.one_of(st.none(), st.integers(0, 45)),
    batches=st.integers(1, 5),
)
def test_single_table_matches_brute_force(counts, c_ar, c_a2a, f_ar, f_a2a, budget_rows, max_rows, batches):
    W = 4
    s = TableStats.from_counts(name="t", dim=1, counts=counts, num_devices=W, num_batches=batches)
    prof = make_profile(c_ar_row=c_ar, c_a2a_lookup=c_a2a, num_devices=W, ar_fixed_s=f_ar, a2a_fixed_s=f_a2a)
    opt = 3
    row_bytes = 4 + opt * 4 + K.KEY_BYTES + K.HOT_INDEX_OVERHEAD_BYTES
    plan = plan_replication(
        [s], prof, memory_budget_bytes=budget_rows * row_bytes + row_bytes - 1,
        optimizer_state_floats_per_row=opt, max_hot_rows=max_rows,
    )
    cap = min(len(counts), budget_rows, len(counts) if max_rows is None else max_rows)
    ref = brute_force_latency(counts, range(cap + 1), steps_x_devices=W * batches,
                              c_ar=c_ar, c_a2a=c_a2a, f_ar=f_ar, f_a2a=f_a2a)
    t = plan["t"]
    assert t.hot_rows <= cap
    assert t.memory_bytes_per_device == t.hot_rows * row_bytes <= plan.memory_budget_bytes
    assert t.predicted_step_s == pytest.approx(ref.min(), rel=1e-9, abs=1e-12)
    assert t.predicted_step_s == pytest.approx(ref[t.hot_rows], rel=1e-9, abs=1e-12)


def touched_row_costs(counts, *, devices, batches, row_bytes, remote_only):
    """Per hot row (rank order), rows' worth of bytes when only touched rows
    are all-reduced: min(1 + m, m + 1.44 * P(some device touches it))."""
    c = np.sort(np.asarray(counts, np.float64))[::-1]
    p = np.minimum(1.0, c / (batches * (devices - 1 if remote_only else devices)))
    m = 4 / row_bytes
    return np.minimum(1 + m, m + 1.44 * (1 - (1 - p) ** devices))


@HYP
@given(
    counts=st.lists(st.integers(1, 60), min_size=1, max_size=40),
    c_ar=st.floats(1e-3, 10.0),
    c_a2a=st.floats(1e-3, 10.0),
    f_ar=st.sampled_from([0.0, 0.5]),
    budget_rows=st.integers(0, 45),
    batches=st.integers(1, 5),
    dim=st.sampled_from([1, 16]),
)
def test_touched_hot_exchange_matches_brute_force(counts, c_ar, c_a2a, f_ar, budget_rows,
                                                  batches, dim):
    """hot_exchange="touched": L(R) from the counts by hand, the planner's R
    its argmin within the budget, positive gains first and non-increasing."""
    W = 4
    s = TableStats.from_counts(name="t", dim=dim, counts=counts, num_devices=W,
                               num_batches=batches)
    prof = make_profile(c_ar_row=c_ar, c_a2a_lookup=c_a2a, num_devices=W, ar_fixed_s=f_ar,
                        dim=dim)
    m = TableCostModel(s, prof, hot_exchange="touched")
    cost = touched_row_costs(counts, devices=W, batches=batches, row_bytes=4 * dim,
                             remote_only=s.remote_only)
    dense = brute_force_latency(counts, range(len(counts) + 1), steps_x_devices=W * batches,
                                c_ar=0.0, c_a2a=c_a2a, f_ar=f_ar)
    ref = dense + np.concatenate(([0.0], np.cumsum(cost))) * c_ar
    np.testing.assert_allclose(m.latency(np.arange(len(counts) + 1)), ref, rtol=1e-9, atol=1e-12)
    g = m.marginal_gain(1, len(counts))
    pos = np.flatnonzero(g > 0)
    assert np.array_equal(pos, np.arange(pos.size)) and np.all(np.diff(g[pos]) <= 1e-9)
    row_bytes = 4 * dim + K.KEY_BYTES + K.HOT_INDEX_OVERHEAD_BYTES
    plan = plan_replication([s], prof, memory_budget_bytes=budget_rows * row_bytes,
                            optimizer_state_floats_per_row=0, hot_exchange="touched")
    cap = min(len(counts), budget_rows)
    assert plan["t"].predicted_step_s == pytest.approx(ref[:cap + 1].min(), rel=1e-9, abs=1e-12)


def test_touched_hot_exchange_affords_more_rows_than_dense():
    """Zipf counts on 8 devices, an all-reduced row 200x cheaper than a
    fetched one (the paper's cluster: ~300x): charging a row by its chance of
    being touched, the planner replicates more rows, covers more of the
    exchange and predicts a shorter step than with every hot row all-reduced
    (where a row pays only if some device fetches it in 1 step of 200)."""
    counts = zipf_counts(20_000, 1.05, scale=800)  # 100 batches x 8 devices: p from 1 to 1/800
    s = TableStats.from_counts(name="z", dim=64, counts=counts, num_devices=8, num_batches=100)
    prof = make_profile(c_ar_row=0.01, c_a2a_lookup=2.0, num_devices=8, dim=64)
    got = {mode: plan_replication([s], prof, memory_budget_bytes=1 << 30,
                                  optimizer_state_floats_per_row=0, hot_exchange=mode)["z"]
           for mode in ("dense", "touched")}
    assert got["touched"].hot_rows > got["dense"].hot_rows > 0
    assert got["touched"].coverage > got["dense"].coverage
    assert got["touched"].predicted_step_s < got["dense"].predicted_step_s
    with pytest.raises(PlannerError, match="hot_exchange"):
        TableCostModel(s, prof, hot_exchange="sparse")


@HYP
@given(
    a=st.lists(st.integers(1, 30), min_size=1, max_size=15),
    b=st.lists(st.integers(1, 30), min_size=1, max_size=15),
    c_ar=st.floats(0.01, 3.0),
    c_a2a=st.floats(0.01, 3.0),
    budget_rows=st.integers(0, 30),
)
def test_two_tables_same_row_size_optimal(a, b, c_ar, c_a2a, budget_rows):
    """Equal row sizes, no fixed costs: the greedy allocation is optimal."""
    W = 2
    sa = TableStats.from_counts(name="a", dim=1, counts=a, num_devices=W)
    sb = TableStats.from_counts(name="b", dim=1, counts=b, num_devices=W)
    prof = make_profile(c_ar_row=c_ar, c_a2a_lookup=c_a2a, num_devices=W)
    row = 4 + K.KEY_BYTES + K.HOT_INDEX_OVERHEAD_BYTES
    plan = plan_replication([sa, sb], prof, memory_budget_bytes=budget_rows * row,
                            optimizer_state_floats_per_row=0)
    la = brute_force_latency(a, range(len(a) + 1), steps_x_devices=W, c_ar=c_ar, c_a2a=c_a2a)
    lb = brute_force_latency(b, range(len(b) + 1), steps_x_devices=W, c_ar=c_ar, c_a2a=c_a2a)
    best = min(la[i] + lb[j] for i in range(len(a) + 1) for j in range(len(b) + 1) if i + j <= budget_rows)
    assert plan["a"].hot_rows + plan["b"].hot_rows <= budget_rows
    assert plan.predicted_step_s == pytest.approx(best, rel=1e-9, abs=1e-12)


@HYP
@given(
    tables=st.lists(
        st.tuples(st.sampled_from([1, 2, 4]), st.lists(st.integers(1, 30), min_size=1, max_size=6)),
        min_size=2, max_size=3,
    ),
    c_ar=st.floats(0.01, 3.0),
    c_a2a=st.floats(0.01, 3.0),
    fixed=st.sampled_from([(0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (5.0, 5.0)]),
    budget=st.integers(0, 400),
)
def test_mixed_row_sizes_within_bound_of_brute_force(tables, c_ar, c_a2a, fixed, budget):
    import itertools

    W = 2
    prof = make_profile(c_ar_row=c_ar, c_a2a_lookup=c_a2a, num_devices=W,
                        ar_fixed_s=fixed[0], a2a_fixed_s=fixed[1])
    sts = [TableStats.from_counts(name=f"t{i}", dim=d, counts=c, num_devices=W)
           for i, (d, c) in enumerate(tables)]
    plan = plan_replication(sts, prof, memory_budget_bytes=budget, optimizer_state_floats_per_row=1)
    assert plan.memory_used_bytes <= budget
    assert plan.predicted_step_s <= plan.unreplicated_step_s * (1 + 1e-12)
    models = [TableCostModel(s, prof, optimizer_state_floats_per_row=1) for s in sts]
    curves = [m.latency(np.arange(s.num_ids + 1)) for m, s in zip(models, sts)]
    best = min(
        sum(c[r] for c, r in zip(curves, rs))
        for rs in itertools.product(*[range(s.num_ids + 1) for s in sts])
        if sum(m.bytes_per_hot_row * r for m, r in zip(models, rs)) <= budget
    )
    assert plan.predicted_step_s >= best * (1 - 1e-12)
    if fixed == (0.0, 0.0):
        # integer rounding costs at most one row's gain per table
        slack = sum(max(0.0, float(m.marginal_gain(1, 1)[0])) for m in models)
        assert plan.predicted_step_s <= best + slack + 1e-9


def test_table_not_worth_its_fixed_cost_gives_memory_back():
    W = 2
    prof = make_profile(c_ar_row=1.0, c_a2a_lookup=1.0, num_devices=W, ar_fixed_s=20.0)
    a = TableStats.from_counts(name="a", dim=1, counts=[10, 10, 10], num_devices=W)  # gain 4/row
    b = TableStats.from_counts(name="b", dim=1, counts=[9] * 10, num_devices=W)      # gain 3.5/row
    row = 4 + K.KEY_BYTES + K.HOT_INDEX_OVERHEAD_BYTES
    for first in ((a, b), (b, a)):
        plan = plan_replication(list(first), prof, memory_budget_bytes=8 * row,
                                optimizer_state_floats_per_row=0)
        # greedy alone would give a 3 rows and b 5; a's 12 s of gains do not pay its 20 s
        assert plan.hot_rows == {"a": 0, "b": 8}
        assert plan.predicted_step_s == pytest.approx((15 + 20 + 8 * 1 + 2 * 9 / 2) + 0)


def test_several_tables_share_the_budget():
    W = 8
    prof = make_profile(c_ar_row=1e-7, c_a2a_lookup=5e-7, dim=64, num_devices=W,
                        ar_fixed_s=1e-4, a2a_fixed_s=3e-4)
    tables = [
        TableStats.from_counts(name=f"t{i}", dim=d, counts=zipf_counts(5_000, s_, 1e5),
                               num_devices=W, num_batches=10)
        for i, (d, s_) in enumerate([(64, 1.2), (16, 0.9), (128, 1.4), (32, 1.05)])
    ]
    unconstrained = plan_replication(tables, prof, memory_budget_bytes=10**12,
                                     optimizer_state_floats_per_row=2)
    need = unconstrained.memory_used_bytes
    assert need > 0
    for frac in (0.0, 0.1, 0.35, 0.8):
        budget = int(need * frac)
        plan = plan_replication(tables, prof, memory_budget_bytes=budget,
                                optimizer_state_floats_per_row={"t0": 2, "t1": 2, "t2": 2, "t3": 2})
        assert plan.memory_used_bytes <= budget
        assert plan.memory_used_bytes == sum(t.memory_bytes_per_device for t in plan.tables)
        for t in plan.tables:
            assert t.memory_bytes_per_device == t.hot_rows * t.bytes_per_hot_row
        assert plan.predicted_step_s <= plan.unreplicated_step_s + 1e-15
        assert plan.predicted_step_s >= unconstrained.predicted_step_s - 1e-15
        # no table would gain from one more row that still fits
        slack = budget - plan.memory_used_bytes
        for t, s_ in zip(plan.tables, tables):
            if t.hot_rows < s_.num_ids and slack >= t.bytes_per_hot_row:
                m = TableCostModel(s_, prof, optimizer_state_floats_per_row=2)
                assert m.latency(t.hot_rows + 1) >= m.latency(t.hot_rows) - 1e-15
    # more budget never hurts
    costs = [plan_replication(tables, prof, memory_budget_bytes=int(need * f),
                              optimizer_state_floats_per_row=2).predicted_step_s
             for f in (0.05, 0.2, 0.5, 1.0)]
    assert all(x >= y - 1e-15 for x, y in zip(costs, costs[1:]))


def test_zero_rows_when_allreduce_is_expensive():
    s = TableStats.from_counts(name="t", dim=8, counts=zipf_counts(500, 1.3), num_devices=4)
    prof = make_profile(c_ar_row=1e9, c_a2a_lookup=1e-6, dim=8, num_devices=4)
    plan = plan_replication([s], prof, memory_budget_bytes=10**12, optimizer_state_floats_per_row=8)
    t = plan["t"]
    assert t.hot_rows == 0 and t.hot_ids.size == 0 and t.coverage == 0.0
    assert t.memory_bytes_per_device == 0 and t.allreduce_payload_bytes == 0
    assert t.predicted_step_s == pytest.approx(t.unreplicated_step_s)


def test_all_rows_when_exchange_dominates_and_budget_allows():
    counts = zipf_counts(300, 1.0)
    s = TableStats.from_counts(name="t", dim=8, counts=counts, num_devices=4, num_batches=2)
    prof = make_profile(c_ar_row=1e-9, c_a2a_lookup=1.0, dim=8, num_devices=4, a2a_fixed_s=1e-3)
    row = 8 * 4 + 8 * 4 + K.KEY_BYTES + K.HOT_INDEX_OVERHEAD_BYTES
    plan = plan_replication([s], prof, memory_budget_bytes=300 * row, optimizer_state_floats_per_row=8)
    t = plan["t"]
    assert t.hot_rows == 300 and t.coverage == 1.0
    assert t.remote_lookups_sampled == 0 and t.alltoall_bytes_per_step == 0.0
    assert t.predicted_alltoall_s == 0.0  # fixed exchange cost gone too
    # One row less of budget: the cap binds.
    plan = plan_replication([s], prof, memory_budget_bytes=300 * row - 1, optimizer_state_floats_per_row=8)
    assert plan["t"].hot_rows == 299
    # max_hot_rows binds too.
    plan = plan_replication([s], prof, memory_budget_bytes=10**9, optimizer_state_floats_per_row=8,
                            max_hot_rows=17)
    assert plan["t"].hot_rows == 17 and plan["t"].max_hot_rows == 17


def test_search_min_on_plateaus_and_steps():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(1, 300))
        centre = int(rng.integers(0, n))
        width = int(rng.integers(0, 5))
        x = np.arange(n)
        # convex with a flat bottom and integer steps
        f = np.maximum(0, np.abs(x - centre) - width) ** rng.choice([1, 2])
        r = search_min(lambda q: f[q], 0, n - 1, window=2)
        assert f[r] == f.min()
        r = search_min(lambda q: f[q], 0, n - 1, window=16)  # window covers the flat bottom
        assert r == int(np.argmin(f))  # smallest on ties


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------


def test_planner_errors_name_the_setting():
    counts = zipf_counts(10_000, 1.1)
    s = TableStats.from_counts(name="ads", dim=128, counts=counts, num_devices=32, num_batches=100)
    p = paper_profile()
    row = 128 * 4 + 128 * 4 + K.KEY_BYTES + K.HOT_INDEX_OVERHEAD_BYTES
    need = TableCostModel(s, p).rows_for_coverage(0.9)
    with pytest.raises(PlannerError) as e:
        plan_replication([s], p, memory_budget_bytes=1 << 20, optimizer_state_floats_per_row=128,
                         min_coverage=0.9)
    msg = str(e.value)
    assert "1.0 MiB" in msg and "`memory_budget_bytes`" in msg and "`min_coverage`" in msg
    assert f"{need * row:,}" in msg
    # the advertised fixes work
    plan_replication([s], p, memory_budget_bytes=need * row, optimizer_state_floats_per_row=128,
                     min_coverage=0.9)
    best = float(msg.split("`min_coverage` to <= ")[1].split(" ")[0])
    ok = plan_replication([s], p, memory_budget_bytes=1 << 20, optimizer_state_floats_per_row=128,
                          min_coverage=best)
    assert ok["ads"].coverage >= best and ok.memory_used_bytes <= 1 << 20

    with pytest.raises(PlannerError, match="`max_hot_rows`"):
        plan_replication([s], p, memory_budget_bytes=1 << 40, optimizer_state_floats_per_row=0,
                         min_coverage=0.9, max_hot_rows=10)
    with pytest.raises(PlannerError, match="`min_hot_rows`"):
        plan_replication([s], p, memory_budget_bytes=100, optimizer_state_floats_per_row=0,
                         min_hot_rows=50)
    with pytest.raises(PlannerError, match="exceeds `max_hot_rows`"):
        plan_replication([s], p, memory_budget_bytes=1 << 40, optimizer_state_floats_per_row=0,
                         min_hot_rows=50, max_hot_rows=10)
    with pytest.raises(PlannerError, match="distinct"):
        plan_replication([s], p, memory_budget_bytes=1 << 40, optimizer_state_floats_per_row=0,
                         min_hot_rows=10**6)
    with pytest.raises(PlannerError, match="sampled on 8 devices"):
        s8 = TableStats.from_counts(name="x", dim=4, counts=[3, 2], num_devices=8)
        plan_replication([s8], p, memory_budget_bytes=1, optimizer_state_floats_per_row=0)
    with pytest.raises(PlannerError, match="`memory_budget_bytes`"):
        plan_replication([s], p, memory_budget_bytes=-1, optimizer_state_floats_per_row=0)
    with pytest.raises(PlannerError, match="unique"):
        plan_replication([s, s], p, memory_budget_bytes=1, optimizer_state_floats_per_row=0)
    with pytest.raises(PlannerError, match="unknown tables"):
        plan_replication([s], p, memory_budget_bytes=1, optimizer_state_floats_per_row={"other": 1})
    s2 = TableStats.from_counts(name="other", dim=8, counts=[3, 1], num_devices=32)
    with pytest.raises(PlannerError, match="no entry for tables \\['ads'\\]"):
        plan_replication([s, s2], p, memory_budget_bytes=1, optimizer_state_floats_per_row={"other": 1})
    with pytest.raises(PlannerError, match="unknown tables"):
        plan_replication([s], p, memory_budget_bytes=1, optimizer_state_floats_per_row=0,
                         max_hot_rows={"nope": 3})
    assert issubclass(PlannerError, ValueError)


def test_tiny_budget_gives_empty_plan_not_error():
    s = TableStats.from_counts(name="t", dim=128, counts=zipf_counts(100, 1.2), num_devices=32)
    plan = plan_replication([s], paper_profile(), memory_budget_bytes=100,
                            optimizer_state_floats_per_row=0)
    assert plan["t"].hot_rows == 0 and plan.memory_used_bytes == 0


# --------------------------------------------------------------------------
# serialisation and cache
# --------------------------------------------------------------------------


def test_plan_json_round_trip():
    s = TableStats.from_counts(name="t", dim=16, counts=zipf_counts(200, 1.2), num_devices=32,
                               ids=np.arange(200) * 3 - 7)
    plan = plan_replication([s], paper_profile(), memory_budget_bytes=1 << 20,
                            optimizer_state_floats_per_row=16)
    text = plan.to_json()
    doc = json.loads(text)
    assert doc["tables"][0]["hot_rows"] == plan["t"].hot_rows
    back = ReplicationPlan.from_json(text)
    assert back.hot_rows == plan.hot_rows
    np.testing.assert_array_equal(back["t"].hot_ids, plan["t"].hot_ids)
    assert back["t"].predicted_step_s == plan["t"].predicted_step_s
    assert "hot_ids" not in json.loads(plan.to_json(include_hot_ids=False))["tables"][0]
    summary = plan_summary(plan)
    assert "t" in summary and "ms/step" in summary
    with pytest.raises(KeyError):
        plan["missing"]


def test_profile_cache(tmp_path):
    cache = ProfileCache(tmp_path / "profiles")
    assert cache.get((8,), 128, "float32") is None
    p = CostProfile.from_measurements(
        _synthetic_measurements(50e-6, 2.5e-10, 120e-6, 6e-10), name="fit", source="synthetic"
    )
    path = cache.put((8,), 128, np.float32, p)
    assert path.exists() and path.name == "profile_mesh8_dim128_float32.json"
    assert cache.get((8,), 128, "float32") == p
    assert cache.get((8,), 64, "float32") is None
    assert cache.get({"data": 8}, 128, "float32") is None
    assert cache.get((2, 4), 128, "float32") is None
    cache.put({"data": 2, "model": 4}, 128, "bfloat16", p)
    assert cache.get({"data": 2, "model": 4}, 128, "bfloat16") == p
    path.write_text("{not json")
    assert cache.get((8,), 128, "float32") is None
    path.write_text(json.dumps({"schema": 999, "key": "x", "profile": {}}))
    assert cache.get((8,), 128, "float32") is None


def test_planner_import_graph_has_no_cycles_and_types_imports_only_below():
    """DESIGN.md section 5: the planner imports nothing else of the package,
    nothing inside it cycles, and types.py (contracts) imports only the
    modules below it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
    graph_tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(graph_tool)
    _, graph = graph_tool.build_graph(ROOT)
    planner = {m for m in graph if m == "jax_hypereca.planner" or m.startswith("jax_hypereca.planner.")}
    assert [c for c in graph_tool.strongly_connected(graph) if set(c) & planner] == []
    outside = {(m, d) for m in planner for d in graph[m] if d not in planner}
    assert outside == set()
    below_types = {f"jax_hypereca.planner.{m}" for m in ("constants", "errors", "fit", "ranking")}
    assert set(graph["jax_hypereca.planner.types"]) <= below_types
