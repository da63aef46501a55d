"""The host tier's stager (jax_hypereca.host_tier.HostStager): one batch's
rows of several tables' stores, routed to their owner shards and packed,
against a Python reference built from the stores' own contents (dicts),
with the full int64 range, ids of other processes' shards, take and peek,
threads, and bad input that must move nothing."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from jax_hypereca.errors import ERASED_KEY, PADDING_ID, ReservedIdError
from jax_hypereca.hashing import owner_of
from jax_hypereca.host_tier import HostStager, HostStore

W, DIM, SW = 4, 3, 2
I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def filled_stores(rng, tables=3, rows=300, dtype=np.float32):
    """Stores holding `rows` random ids each (both signs, the int64 ends)
    with distinct rows, and a dict per table: id -> (values, state, last, freq)."""
    stores, ref = [], []
    for t in range(tables):
        keys = np.unique(np.concatenate([rng.integers(I64_MIN, I64_MAX, rows, dtype=np.int64),
                                         [I64_MIN, I64_MAX, 0, 5]]))
        keys = keys[(keys != PADDING_ID) & (keys != ERASED_KEY)]
        n = len(keys)
        v = rng.standard_normal((n, DIM)).astype(dtype)
        s = rng.standard_normal((n, SW)).astype(np.float32)
        last, freq = rng.integers(0, 100, n), rng.integers(1, 1000, n)
        store = HostStore(DIM, SW, dtype=np.dtype(dtype).name, name=f"t{t}")
        store.put(keys, v, s, last, freq)
        stores.append(store)
        ref.append({int(k): (v[i], s[i], int(last[i]), int(freq[i])) for i, k in enumerate(keys)})
    return stores, ref


def batch_of(rng, ref):
    """Per table: unique ids, about half held by the store, half absent."""
    out = []
    for d in ref:
        held = rng.choice(np.array(list(d), np.int64), len(d) // 2, replace=False)
        absent = rng.integers(-(2**40), 2**40, 150, dtype=np.int64)
        ids = np.unique(np.concatenate([held, absent]))
        out.append(ids[(ids != PADDING_ID) & (ids != ERASED_KEY)])
    return out


def expected_pack(ref, batch, local, S, dtype=np.float32, W=W):
    """[W * T * S] rows built from the reference dicts: block (d, t) holds
    table t's found local ids owned by d and padding, sorted by key."""
    T = len(ref)
    keys = np.full(W * T * S, PADDING_ID, np.int64)
    values = np.zeros((W * T * S, DIM), dtype)
    state = np.zeros((W * T * S, SW), np.float32)
    last, freq = np.zeros(W * T * S, np.int64), np.zeros(W * T * S, np.int64)
    for t, (d, ids) in enumerate(zip(ref, batch)):
        owners = owner_of(ids, W)
        for o in range(W):
            found = sorted(int(k) for k in ids[owners == o] if local[o] and int(k) in d)
            block = sorted(found + [PADDING_ID] * (S - len(found)))
            for j, k in enumerate(block):
                row = (o * T + t) * S + j
                keys[row] = k
                if k != PADDING_ID:
                    values[row], state[row], last[row], freq[row] = d[k]
    return keys, values, state, last, freq


def most_per_block(ref, batch, local, W=W):
    return max(int(((owner_of(ids, W) == o) & np.isin(ids, list(d))).sum()) if local[o] else 0
               for d, ids in zip(ref, batch) for o in range(W))


@pytest.mark.parametrize("take", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shuffled", [False, True])
def test_collect_and_pack_match_the_reference(take, threads, shuffled):
    rng = np.random.default_rng(0)
    stores, ref = filled_stores(rng)
    batch = batch_of(rng, ref)
    if shuffled:  # ids out of order: the stager sorts each block itself
        batch = [rng.permutation(ids) for ids in batch]
    local = np.array([True, False, True, True])  # shard 1's rows are another process's
    stager = HostStager(DIM, SW, dtype="float32", num_shards=W, threads=threads)
    most = stager.collect(stores, batch, take=take, local=local)
    assert most == most_per_block(ref, batch, local) > 0
    assert stager.looked_up == sum(int(local[owner_of(b, W)].sum()) for b in batch)
    S = 1 << int(np.ceil(np.log2(most)))
    got = stager.pack(S)
    for g, want in zip(got, expected_pack(ref, batch, local, S)):
        np.testing.assert_array_equal(g, want)
    assert stager.found == int((got.keys != PADDING_ID).sum())
    for store, d, ids in zip(stores, ref, batch):  # a take removed exactly the rows packed
        taken = {int(k) for k in ids if local[owner_of(np.array([k]), W)[0]] and int(k) in d}
        assert len(store) == len(d) - (len(taken) if take else 0)
        assert store.contains(np.array(sorted(taken), np.int64)).tolist() == [not take] * len(taken)
    again = stager.pack(S * 2)  # packed again, larger: the same rows
    assert sorted(again.keys[again.keys != PADDING_ID].tolist()) == sorted(
        got.keys[got.keys != PADDING_ID].tolist())


def test_random_meshes_tables_and_threads_match_the_reference():
    """Twelve random shapes: 1-8 owner shards, 1-5 tables of 4-400 rows,
    1-3 threads, ids sorted or not, some shards another process's, take or
    peek, blocks of exactly the most rows or larger."""
    rng = np.random.default_rng(7)
    for _ in range(12):
        w, tables, threads = (int(rng.integers(1, 9)), int(rng.integers(1, 6)),
                              int(rng.integers(1, 4)))
        stores, ref = filled_stores(rng, tables=tables, rows=int(rng.integers(0, 400)))
        batch = [rng.permutation(b) if rng.random() < 0.5 else b for b in batch_of(rng, ref)]
        local = rng.random(w) < 0.7
        local[rng.integers(w)] = True
        take = bool(rng.random() < 0.5)
        stager = HostStager(DIM, SW, dtype="float32", num_shards=w, threads=threads)
        most = stager.collect(stores, batch, take=take, local=local)
        assert most == most_per_block(ref, batch, local, W=w)
        S = max(most, 1) + int(rng.integers(0, 3))
        for g, want in zip(stager.pack(S), expected_pack(ref, batch, local, S, W=w)):
            np.testing.assert_array_equal(g, want)


def test_bfloat16_rows_and_tables_with_nothing_found():
    rng = np.random.default_rng(1)
    stores, ref = filled_stores(rng, tables=2, dtype=ml_dtypes.bfloat16)
    batch = [batch_of(rng, ref)[0], np.array([7, 8, 9], np.int64)]  # table 1: all absent
    ref[1] = {k: r for k, r in ref[1].items() if k not in (7, 8, 9)}
    stager = HostStager(DIM, SW, dtype="bfloat16", num_shards=W)
    local = np.ones(W, bool)
    most = stager.collect(stores, batch, take=True, local=local)
    got = stager.pack(most)
    want = expected_pack(ref, batch, local, most, dtype=ml_dtypes.bfloat16)
    assert got.values.dtype == ml_dtypes.bfloat16
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.view(np.uint8), w.view(np.uint8))


def test_bad_input_moves_no_row():
    rng = np.random.default_rng(2)
    stores, ref = filled_stores(rng)
    batch = batch_of(rng, ref)
    stager = HostStager(DIM, SW, dtype="float32", num_shards=W)
    local = np.ones(W, bool)
    before = [len(s) for s in stores]
    bad = [batch[0], np.append(batch[1], ERASED_KEY), batch[2]]  # a later table's id
    with pytest.raises(ReservedIdError, match="ERASED_KEY"):
        stager.collect(stores, bad, take=True, local=local)
    assert [len(s) for s in stores] == before
    other = HostStore(DIM + 1, SW, name="wide")
    with pytest.raises(ValueError, match="one stager per row layout"):
        stager.collect(stores[:1] + [other], batch[:2], take=True, local=local)
    assert [len(s) for s in stores] == before
    most = stager.collect(stores, batch, take=True, local=local)
    with pytest.raises(ValueError, match=f"one holds {most} rows"):
        stager.pack(most - 1)
    with pytest.raises(ValueError, match="3 flags for 4 shards"):
        stager.collect(stores, batch, take=False, local=np.ones(3, bool))
    with pytest.raises(ValueError, match="num_shards=0"):
        HostStager(DIM, SW, dtype="float32", num_shards=0)


@pytest.mark.parametrize("fails_in", ["tree_to_mesh", "pack"])
def test_a_stage_that_fails_before_the_transfer_puts_every_taken_row_back(monkeypatch,
                                                                          fails_in):
    """HostTier.stage: the rows a take removed go back to their stores when
    staging fails after the lookups -- in the transfer to the mesh (the rows
    packed) or before packing (the stagers still hold them) -- for tables
    of two row layouts (two stagers); the room made is released."""
    import jax

    import jax_hypereca as h
    from jax_hypereca import tiers
    from jax_hypereca.table import Rows

    specs = {n: h.TableSpec(name=n, dim=DIM + (n == "c"), capacity=64, seed=i,
                            optimizer=h.RowwiseAdagrad(learning_rate=0.1))
             for i, n in enumerate(["a", "b", "c"])}
    tier = tiers.HostTier(specs, h.make_mesh(jax.devices()[:1]), "shard",
                          memory_limit_bytes=1 << 30)
    rng = np.random.default_rng(3)
    for n, spec in specs.items():
        k = rng.choice(1 << 40, 50, replace=False).astype(np.int64)
        tier.stores[n].put_rows(Rows(k, rng.standard_normal((50, spec.dim)).astype(np.float32),
                                     np.ones((50, spec.state_width), np.float32),
                                     np.arange(50), np.arange(50)))
    before = {n: sorted(tier.rows(n).keys.tolist()) for n in specs}
    ids = {n: np.array(before[n][:20] + [1, 2, 3], np.int64) for n in specs}

    pack, calls = tiers.HostStager.pack, []

    def broken(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("made to fail")
        return pack(*args, **kwargs)  # the failure path packs what the stagers hold

    if fails_in == "pack":  # the first set's pack: every set's rows still in its stager
        monkeypatch.setattr(tiers.HostStager, "pack", broken)
    else:
        monkeypatch.setattr(tiers, fails_in, broken)
    with pytest.raises(RuntimeError, match="made to fail"):
        tier.stage(ids, take=True)
    assert {n: sorted(tier.rows(n).keys.tolist()) for n in specs} == before
    assert tier.room == dict.fromkeys(specs, 0)
    monkeypatch.undo()
    staged = tier.stage(ids, take=True)
    assert {n: len(tier.stores[n]) for n in specs} == dict.fromkeys(specs, 30)
    assert sorted(staged.tables) == ["a", "b", "c"] and len(staged.host) == 2


def test_unstage_into_a_full_store_holds_the_refused_rows_and_returns_the_others():
    """HostTier.unstage (a step whose dispatch failed): every table's rows go
    back; a store that cannot take them (its holes and free records filled
    meanwhile, its limit at what it holds) refuses, and its rows travel with one
    HostTierFullError -- the other tables' rows are back, the room is
    released, and put_back with the limit raised restores every row."""
    import jax

    import jax_hypereca as h
    from jax_hypereca import tiers
    from jax_hypereca.table import Rows
    from test_tiers_refusals import fill_stores

    specs = {n: h.TableSpec(name=n, dim=DIM, capacity=64, seed=i,
                            optimizer=h.RowwiseAdagrad(learning_rate=0.1))
             for i, n in enumerate(["a", "b"])}
    tier = tiers.HostTier(specs, h.make_mesh(jax.devices()[:1]), "shard",
                          memory_limit_bytes=1 << 30)
    rng = np.random.default_rng(5)

    def rows(keys):
        n = len(keys)
        return Rows(keys, rng.standard_normal((n, DIM)).astype(np.float32),
                    np.ones((n, 1), np.float32), np.arange(n), np.arange(n))

    for n in specs:
        tier.stores[n].put_rows(rows(np.arange(1000, 1100, dtype=np.int64)))
    before = {n: tier.rows(n) for n in specs}
    ids = {n: np.arange(1000, 1040, dtype=np.int64) for n in specs}
    staged = tier.stage(ids, take=True)
    filler = fill_stores(tier, ["a"])["a"]  # every hole and free record of a's store filled
    with pytest.raises(h.HostTierFullError, match="'a': 40 rows refused") as e:
        tier.unstage(staged)
    assert sorted(e.value.rows) == ["a"] and len(e.value.rows["a"].keys) == 40
    assert len(tier.stores["b"]) == 100 and tier.room == {"a": 0, "b": 0}
    tier.set_memory_limit_bytes(None)
    tier.put_back(e.value.rows)
    for n in specs:
        got = tier.rows(n)
        keep = ~np.isin(got.keys, filler)
        order, want = np.argsort(got.keys[keep]), np.argsort(before[n].keys)
        for g, w in zip(got, before[n]):
            np.testing.assert_array_equal(g[keep][order], w[want])


def test_the_host_store_benchmark_times_the_stager_on_tier_shaped_batches(tmp_path):
    """experiments.bench_host_store at toy sizes: a ``stage`` line per thread
    count (batches of 26 tables' ids, 100-1,700 per table plus the 16% found)
    and both rates in the summary."""
    import json

    from experiments import bench_host_store

    out = tmp_path / "bench.jsonl"
    summary = bench_host_store.main(["--resident", "2000", "--batch", "200", "--repeats", "1",
                                     "--out", str(out)])
    stages = [r for r in map(json.loads, out.read_text().splitlines()) if r.get("op") == "stage"]
    assert [r["threads"] for r in stages] == [1, 2]
    for r in stages:
        assert 26 * 100 <= r["keys_per_batch"] <= 26 * 1700 * 1.2 and r["keys_per_s"] > 0
        assert r["batches"] == bench_host_store.STAGE_BATCHES
    assert set(summary["stage_keys_per_s_by_threads"]) == {1, 2}
