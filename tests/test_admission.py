"""Admission (admission.py, TableSpec.admit_after): an id gets a row in the
step it is seen in for the k-th time. Checked against a dense jnp + optax
reference in which ids not yet admitted look up zero rows, with exact
counts (resident ids, ids filtered per step); the sketch never admits late
however crowded; a host tier, steps in flight and checkpoints (same and
another device count) keep it exact; evaluation serves zeros for ids
without a row."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jax_hypereca as h
from jax_hypereca.admission import admit
from jax_hypereca.checkpoint import CheckpointManager
from jax_hypereca.collection import EmbeddingCollection
from jax_hypereca.placement import make_mesh, replica_rows

import test_collection as tc
import test_tiers as tt
from conftest import slow_case

K = 3
STEPS = 30
TABLE_FEATURES = {"a": ("fa", "fa3"), "b": ("fb",), "c": ("fc",)}


def specs(capacity=None):
    return tt.specs(capacity, admit={n: K for n in tc.DIMS})


def expected(batches):
    """A dict count of each table's ids in steps: per step the ids admitted
    (bool over the vocabulary) and how many of its ids were filtered."""
    counts = {n: np.zeros(tc.V[n], np.int64) for n in tc.V}
    admitted, filtered = [], []
    for b in batches:
        a, f = {}, {}
        for n, feats in TABLE_FEATURES.items():
            ids = np.unique(np.concatenate([b["ids"][x].reshape(-1) for x in feats]))
            ids = ids[ids >= 0]
            counts[n][ids] += 1
            a[n], f[n] = counts[n] >= K, int((counts[n][ids] < K).sum())
        admitted.append(a)
        filtered.append(f)
    return admitted, filtered


def run(coll, batches, depth=1):
    """tiers.train, also returning each applied step's filtered counts."""
    dense_tx = optax.adam(0.01)
    step = coll.make_train_step(tc.head_loss, dense_tx)
    state = coll.init_train_state(tc.init_params(), dense_tx)
    pipe = h.TrainPipeline(step, depth=depth)
    for b in batches:
        state = pipe.submit(state, b)
    state = pipe.flush(state)
    done = pipe.pop_completed()
    return state, [m["loss"] for m in done], [
        {n: int(s["filtered"].sum()) for n, s in m["stats"].items()} for m in done]


def resident(table) -> set[int]:
    keys = np.asarray(table.keys)
    return set(keys[keys >= 0].tolist())


@pytest.fixture(scope="module")
def batches():
    return tc.make_batches(steps=STEPS)


@pytest.mark.parametrize("shards", [1, 8])
def test_admitted_training_equals_a_reference_that_reads_zeros_until_the_kth_sighting(
        shards, batches):
    admitted, filtered = expected(batches)
    ref = tc.reference(batches, tc.OPTS["adagrad"][1], optax.adam(0.01), admitted)
    coll = EmbeddingCollection(specs(), tc.FEATURES, mesh=make_mesh(jax.devices()[:shards]))
    state, losses, got_filtered = run(coll, batches)
    assert got_filtered == filtered  # exact, step by step
    tc.assert_equivalent(state, losses, ref)
    stats = coll.table_stats(state.tables, admission=state.admission)
    for n in tc.DIMS:
        assert resident(state.tables[n]) == set(np.flatnonzero(admitted[-1][n]).tolist())
        assert stats[n]["admission_filtered"] == sum(f[n] for f in filtered)
        assert stats[n]["evicted"] == 0
    assert stats["a"]["admission_filtered"] > 100
    if shards == 1:
        check_evaluation_serves_zeros_for_ids_without_a_row(coll, state, admitted[-1]["a"])


def check_evaluation_serves_zeros_for_ids_without_a_row(coll, state, admitted):
    probe = tc.make_batches(seed=3, steps=1)[0]
    ids = probe["ids"]["fa"]
    out = np.asarray(coll.make_eval_fn(lambda p, emb, b: emb)(state, probe)["fa"])
    rows = {int(k): v for k, v in zip(*(np.asarray(x) for x in (state.tables["a"].keys,
                                                                 state.tables["a"].values)))}
    without = ~admitted[ids]
    assert without.any() and (~without).any()
    np.testing.assert_array_equal(out[without], 0.0)
    np.testing.assert_array_equal(out[~without], np.stack([rows[int(k)] for k in ids[~without]]))


def test_hot_fold_ids_are_admitted_from_their_first_step(batches):
    """Ids the hot fold replicates never reach an owner's sketch: they train
    from the first step, the others from their K-th (2 devices)."""
    from jax_hypereca import replication as rep

    hot = np.arange(10)
    admitted, _ = expected(batches[:10])
    for a in admitted:
        a["a"] = a["a"].copy()
        a["a"][hot] = True
    ref = tc.reference(batches[:10], tc.OPTS["adagrad"][1], optax.adam(0.01), admitted)
    coll = EmbeddingCollection(specs(), tc.FEATURES, mesh=make_mesh(jax.devices()[:2]))
    dense_tx = optax.adam(0.01)
    step = coll.make_train_step(tc.head_loss, dense_tx)
    state = rep.apply_plan(coll, coll.init_train_state(tc.init_params(), dense_tx), {"a": hot})
    losses = []
    for b in batches[:10]:
        state, m = step(state, b)
        losses.append(m["loss"])
    tc.assert_equivalent(state, losses, ref)
    rows, _ = replica_rows(state.hot["a"])  # the hot rows trained from their first step
    assert sorted(rows.keys.tolist()) == hot.tolist()
    np.testing.assert_allclose(rows.values, np.asarray(ref[1]["a"])[rows.keys], rtol=1e-5,
                               atol=1e-6)


def test_the_sketch_never_admits_late_however_crowded():
    """1024 counters per row for ~20k distinct ids: ids share counters and
    some are admitted early, none late; ids with a row always pass."""
    spec = h.TableSpec(name="t", dim=4, capacity=64, admit_after=4, admission_counters=1024)
    state = {"sketch": jnp.zeros(2 * 1024, jnp.int8), "filtered": jnp.zeros((), jnp.int64)}
    step = jax.jit(lambda st, k, known: admit(spec, st, k, known))
    rng = np.random.default_rng(0)
    counts: dict[int, int] = {}
    early = 0
    for _ in range(30):
        ids = np.unique(rng.zipf(1.2, 3000) * 7919 + rng.integers(0, 5, 3000))
        ids = np.concatenate([ids, np.full(3064 - len(ids), h.PADDING_ID)])  # one shape
        known = rng.random(ids.shape[0]) < 0.05
        state, ok, n = step(state, jnp.asarray(ids), jnp.asarray(known))
        ok = np.asarray(ok)
        for i, k in enumerate(ids.tolist()):
            if k == h.PADDING_ID:
                assert not ok[i]
                continue
            counts[k] = counts.get(k, 0) + 1
            assert ok[i] or (counts[k] < 4 and not known[i]), (k, counts[k])
            early += ok[i] and counts[k] < 4 and not known[i]
        assert int(n) == int(((ids != h.PADDING_ID) & ~ok).sum())
    assert early > 0  # the sketch is crowded: the test exercises collisions
    assert int(state["filtered"]) > 0


@slow_case  # a further case: the tiers state machine admits with a host tier (depth 1)
def test_host_tier_and_steps_in_flight_admit_exactly_like_all_rows_on_the_device():
    """8 devices, a device tier of a fraction of the ids, depth 3: bit for
    bit the all-device run with the same admission (ids across int64)."""
    batches = tt.wide(tc.make_batches(steps=STEPS))
    mesh = make_mesh(jax.devices()[:8])
    ref_coll = EmbeddingCollection(specs(), tc.FEATURES, mesh=mesh)
    ref_state, ref_losses, ref_filtered = run(ref_coll, batches)
    # admission leaves fewer rows to hold: a smaller budget for a
    coll = tt.tiered(8, admit={n: K for n in tc.DIMS}, budget=dict(tt.BUDGET[8], a=128))
    state, losses, got_filtered = run(coll, batches, depth=3)
    assert got_filtered == ref_filtered
    stats = tt.assert_trains_alike(coll, state, losses, ref_coll, ref_state, ref_losses)
    assert stats["a"]["demoted"] > 300 and stats["a"]["promoted"] > 200  # 606, 398
    assert sum(s["stale"] for s in stats.values()) > 0  # steps in flight re-ran
    for n, a in state.admission.items():
        np.testing.assert_array_equal(np.asarray(a["sketch"]),
                                      np.asarray(ref_state.admission[n]["sketch"]))


def test_a_checkpoint_restored_onto_another_mesh_keeps_every_row_and_restarts_the_counts(
        batches, tmp_path, caplog):
    """Saved on 2 devices, restored onto 1: the sketch starts again (logged),
    every admitted row and the filtered totals are back, training goes on.
    (A restore onto the same mesh keeps the sketch: test_tiers_machine's
    runs train on after restores and must admit as the run never saved.)"""
    coll = EmbeddingCollection(specs(), tc.FEATURES, mesh=make_mesh(jax.devices()[:2]))
    state, _, _ = run(coll, batches[:6])
    ckpt = CheckpointManager(tmp_path / "ck")
    ckpt.save(state, coll)
    ckpt.wait()
    saved = {n: resident(t) for n, t in state.tables.items()}
    saved_filtered = coll.table_stats(state.tables, admission=state.admission)
    tx = optax.adam(0.01)
    coll1 = EmbeddingCollection(specs(), tc.FEATURES, mesh=make_mesh(jax.devices()[:1]))
    with caplog.at_level(logging.WARNING, logger="jax_hypereca"):
        state1, _ = ckpt.restore(coll1.init_train_state(tc.init_params(), tx), coll1)
    assert "admission sketches not restored" in caplog.text
    stats1 = coll1.table_stats(state1.tables, admission=state1.admission)
    for n in tc.DIMS:
        assert resident(state1.tables[n]) == saved[n]
        assert stats1[n]["admission_filtered"] == saved_filtered[n]["admission_filtered"]
        assert int(np.asarray(state1.admission[n]["sketch"]).max()) == 0
    step1 = coll1.make_train_step(tc.head_loss, tx)
    for b in batches[6:8]:
        state1, m = step1(state1, b)
    assert np.isfinite(m["loss"])


def test_admission_settings_are_checked():
    for bad, match in (({"admit_after": 0}, "admit_after must be in 1..127"),
                       ({"admit_after": 128}, "admit_after must be in 1..127"),
                       ({"admission_counters": 1000}, "power of two in")):
        with pytest.raises(ValueError, match=match):
            h.TableSpec(name="t", dim=4, capacity=8, **bad)
    off = EmbeddingCollection(tt.specs(None), tc.FEATURES, mesh=make_mesh(jax.devices()[:1]))
    assert off.init_train_state(tc.init_params(), optax.adam(0.01)).admission == {}
