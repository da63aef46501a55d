"""The host tier under the train step (tiers.py): with a device budget far
below the ids a run sees, the device tier evicts rows to the host tier and
promotes them back, and training equals the run that keeps every row on the
device bit for bit (losses, dense params, every row's values and optimizer
state), synchronously and with steps in flight (depth 3: stale ids cancel a
step, re-run once the host has the row); nothing is lost (I3, exact
counters) and evaluation reads host rows."""

import jax
import numpy as np
import optax
import pytest

import jax_hypereca as h
from jax_hypereca.checkpoint import CheckpointManager
from jax_hypereca.collection import EmbeddingCollection
from jax_hypereca.pipeline import TrainPipeline
from jax_hypereca.placement import local_rows, make_mesh
from jax_hypereca.table import Rows
from jax_hypereca.tiers import MIN_STAGED

import test_collection as tc
from conftest import slow_case

STEPS = 20
# Rows per table over all shards, per device count: a sees ~400 distinct ids
# in the run (b and c hold all their ids). A shard's bucket must fit the ids
# of one batch it owns, so 8 shards need more rows in all than one.
BUDGET = {1: {"a": 128, "b": 128, "c": 128}, 2: {"a": 128, "b": 128, "c": 128},
          8: {"a": 256, "b": 256, "c": 256}}


def specs(capacity: dict[str, int] | None, bucket_size: int = 32,
          admit: dict[str, int] | None = None):
    """The tables of test_collection; `admit`: admit_after per table (a wide
    sketch: no two ids of these tests share its counters)."""
    return [h.TableSpec(name=n, dim=tc.DIMS[n], capacity=(capacity or {}).get(n, 2048),
                        optimizer=tc.OPTS["adagrad"][0], seed=7 + i,
                        initializer=h.uniform(0.2), bucket_size=bucket_size,
                        admit_after=(admit or {}).get(n, 1), admission_counters=1 << 16)
            for i, n in enumerate(tc.DIMS)]


def train(coll, batches, depth=1, route_ahead=None):
    dense_tx = optax.adam(0.01)
    step = coll.make_train_step(tc.head_loss, dense_tx)
    state = coll.init_train_state(tc.init_params(), dense_tx)
    pipe = TrainPipeline(step, depth=depth, route_ahead=route_ahead)
    for b in batches:
        state = pipe.submit(state, b)
    state = pipe.flush(state)
    losses = [m["loss"] for m in pipe.pop_completed()]
    return state, losses


def all_rows(coll, state, name) -> dict[int, tuple]:
    parts = local_rows(state.tables[name])
    if coll.host_tier is not None:
        parts.append(coll.host_tier.rows(name))
    rows = Rows.concat(parts)
    assert len(np.unique(rows.keys)) == len(rows.keys), "an id in two places (I1)"
    return {int(k): (v, o) for k, v, o in zip(rows.keys, rows.values, rows.opt_state)}


def assert_same_rows(coll, state, ref_coll, ref_state, name) -> dict:
    """Every row of table `name`, values and optimizer state, in either tier,
    bit for bit as the reference's; returns the reference's rows by id."""
    got, want = all_rows(coll, state, name), all_rows(ref_coll, ref_state, name)
    assert got.keys() == want.keys()
    for k, (v, o) in want.items():
        np.testing.assert_array_equal(got[k][0], v)
        np.testing.assert_array_equal(got[k][1], o)
    return want


def wide(batches):
    """The batches with every id spread over the whole int64 range (an odd
    multiplier: one id per id, padding kept): ids >= 2**31 and negative ones
    must cross the tiers unchanged (jax narrows int64 to int32 on transfers
    without jax_enable_x64)."""
    for b in batches:
        for f, ids in b["ids"].items():
            big = (ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)).view(np.int64)
            b["ids"][f] = np.where(ids == h.PADDING_ID, ids, big)
            assert not np.isin(b["ids"][f][ids != h.PADDING_ID],
                               [h.PADDING_ID, h.EMPTY_KEY, h.ERASED_KEY]).any()
    return batches


@pytest.fixture(scope="module")
def batches():
    return wide(tc.make_batches(steps=STEPS))


def all_on_device(batches, devices):
    """The run with room for every row (the same mesh: the order in which
    the owners sum a row's gradients depends on it)."""
    coll = EmbeddingCollection(specs(None), tc.FEATURES, mesh=make_mesh(jax.devices()[:devices]))
    state, losses = train(coll, batches)
    assert all(s["evicted"] == 0 for s in coll.table_stats(state.tables).values())
    return coll, state, losses


def tiered(devices, admit: dict[str, int] | None = None,
           budget: dict[str, int] | None = None):
    """A collection with a host tier whose tables may not grow past `budget`
    (default BUDGET)."""
    mesh = make_mesh(jax.devices()[:devices])
    budget = budget or BUDGET[devices]
    probe = EmbeddingCollection(specs(budget, admit=admit), tc.FEATURES, mesh=mesh)
    return EmbeddingCollection(specs(budget, admit=admit), tc.FEATURES, mesh=mesh,
                               host_tier=True,
                               max_shard_bytes=probe.shard_bytes(probe.init_tables()))


def assert_trains_alike(coll, state, losses, ref_coll, ref_state, ref_losses) -> dict:
    """Losses, dense params and every row bit for bit as the reference run,
    and I3 exact (every id inserted is on the device or in the host tier);
    returns the table stats."""
    assert losses == ref_losses  # bit for bit
    for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    stats = coll.table_stats(state.tables)
    for name in tc.DIMS:
        want = assert_same_rows(coll, state, ref_coll, ref_state, name)
        s = stats[name]
        assert s["inserted"] - s["promoted"] == s["size"] + s["host_rows"] == len(want)
    return stats


# 8 devices at depth 3 covers the paths (and the 1-device checkpoint restore
# below trains on one device with a host tier); 1 device at depth 1 runs with
# HYPERECA_SLOW_TESTS=1. Here steps route the next batch's ids (the default
# on GPUs); the 5% test below runs CPU's default, each step its own.
@pytest.mark.parametrize("devices,depth", [pytest.param(1, 1, marks=slow_case), (8, 3)])
def test_a_small_device_tier_trains_like_all_rows_on_the_device(devices, depth, batches):
    ref_coll, ref_state, ref_losses = all_on_device(batches, devices)
    coll = tiered(devices)
    state, losses = train(coll, batches, depth, route_ahead=True)
    stats = assert_trains_alike(coll, state, losses, ref_coll, ref_state, ref_losses)
    for name in tc.DIMS:
        s = stats[name]
        assert state.tables[name].keys.shape[0] == BUDGET[devices][name]  # never grew
        assert s["evicted"] == s["demoted"] == s["host_inserted"] - s["returned"]
        assert s["promoted"] == s["host_take_hits"] - s["returned"]
        assert s["bytes_to_host"] == s["demoted"] * coll.tables[name].row_bytes()
    assert stats["a"]["demoted"] > 100 and stats["a"]["promoted"] > 100
    # in flight, a step met ids an unsettled one had evicted, and was re-run
    assert (sum(s["stale"] for s in stats.values()) > 0) == (depth > 1)
    if devices == 1:
        return  # evaluation: on 8 devices
    # evaluation reads the host tier's rows, and moves nothing
    predict = lambda params, emb, batch: emb  # the looked-up rows themselves
    probe = wide(tc.make_batches(seed=5, steps=1))[0]
    probe["ids"]["fa"][:16] = coll.host_tier.rows("a").keys[:16]  # trained rows on the host
    before = coll.host_tier.stats()
    got = coll.make_eval_fn(predict)(state, probe)
    want = ref_coll.make_eval_fn(predict)(ref_state, probe)
    for f in want:
        np.testing.assert_array_equal(np.asarray(got[f]), np.asarray(want[f]))
    assert coll.host_tier.stats() == before


@pytest.fixture(scope="module")
def rotating():
    """80 steps whose table-a ids rotate through 40 disjoint ranges of 400
    (one per step, so an id returns every 40 steps; ~5,500 of them in all),
    and the dense jnp + optax reference run over them."""
    batches = tc.make_batches(seed=3, steps=80)
    for i, b in enumerate(batches):
        for f in ("fa", "fa3"):
            ids = b["ids"][f]
            b["ids"][f] = np.where(ids == h.PADDING_ID, ids, ids + tc.V["a"] * (i % 40))
    vocab = dict(tc.V, a=tc.V["a"] * 40)
    return batches, tc.reference(batches, tc.OPTS["adagrad"][1], optax.adam(0.01), vocab=vocab)


@pytest.mark.parametrize("devices,depth", [(8, 3), pytest.param(8, 1, marks=slow_case),
                                           pytest.param(1, 3, marks=slow_case),
                                           pytest.param(1, 1, marks=slow_case)])
def test_a_device_tier_of_5_percent_of_the_ids_trains_like_all_rows_on_the_device(
        devices, depth, rotating):
    """80 steps of the rotating stream through a device tier of 256 rows of
    table a (about 5% of its ids; 32 per device on 8). Losses, dense params
    and every row bit for bit as the all-device run, I3 exact, and within
    1e-5 of the dense jnp + optax reference (I2)."""
    batches, (ref_params, ref_tables, ref_losses) = rotating
    mesh = make_mesh(jax.devices()[:devices])
    all_coll = EmbeddingCollection(specs({"a": 16384}), tc.FEATURES, mesh=mesh)
    all_state, all_losses = train(all_coll, batches)
    assert all(s["evicted"] == 0 for s in all_coll.table_stats(all_state.tables).values())
    coll = tiered(devices, budget=dict(BUDGET[devices], a=256))
    state, losses = train(coll, batches, depth=depth)
    a = assert_trains_alike(coll, state, losses, all_coll, all_state, all_losses)["a"]
    assert state.tables["a"].keys.shape[0] == 256
    assert a["size"] + a["host_rows"] >= 19 * 256  # the device tier holds about 5% of them
    assert a["promoted"] > 1000 and a["demoted"] > 1000, a
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    close = lambda got, want: (np.abs(got - want) <= 1e-5 * np.maximum(1, np.abs(want))).all()
    for k, want in ref_params.items():
        assert close(np.asarray(state.params[k]), np.asarray(want)), k
    for name in tc.DIMS:  # every row the run trained, in either tier
        rows = all_rows(coll, state, name)
        ids = np.array(sorted(rows), np.int64)
        got = np.stack([rows[int(k)][0] for k in ids])
        assert close(got, np.asarray(ref_tables[name])[ids]), name


def test_a_step_that_evicts_past_its_eviction_outputs_reruns_with_room_for_them(rotating):
    """On CPU a table's eviction outputs hold the host tier's read-back rows
    per device (MIN_STAGED at first), not one per id: a step that must evict
    more refuses the inserts past them (``failed``, ``evicted`` at the cap),
    is not applied, and re-runs with the rows raised to what that device
    needed (a power of two) -- nothing dropped, and training equals the
    all-device run bit for bit."""
    batches = rotating[0][:12]
    mesh = make_mesh(jax.devices()[:1])
    all_coll = EmbeddingCollection(specs({"a": 16384}), tc.FEATURES, mesh=mesh)
    all_state, all_losses = train(all_coll, batches)
    coll = tiered(1, budget=dict(BUDGET[1], a=256))
    dense_tx = optax.adam(0.01)
    step = coll.make_train_step(tc.head_loss, dense_tx)
    state = coll.init_train_state(tc.init_params(), dense_tx)
    assert step.cap_evictions and coll.host_tier.demoted_rows == MIN_STAGED
    losses, capped = [], []
    for i, b in enumerate(batches):
        verdict = None
        while verdict is None or not verdict.ok:  # as ShardedTrainStep.__call__
            state = state if verdict is None else step.repair(state, verdict)
            state, pending = step.dispatch(state, coll.prepare_batch(b), i)
            cap = pending.read_back_rows
            assert pending.metrics["tier"]["demoted"]["a"].keys.shape == (cap,)
            verdict = step.check(pending)
            a = verdict.stats["a"]
            assert a["evicted"].max() <= cap
            if a["failed"].sum():  # (other re-runs: the first steps' exchange buffers)
                assert not verdict.ok and verdict.overflow and a["evicted"].max() == cap
                need = int((a["evicted"] + a["failed"]).max())
                assert coll.host_tier.demoted_rows == max(cap, 1 << (need - 1).bit_length())
                capped.append(i)
        losses.append(step.finish(state, pending, verdict)["loss"])
    assert capped and coll.host_tier.demoted_rows > MIN_STAGED
    assert_trains_alike(coll, state, losses, all_coll, all_state, all_losses)


def test_a_checkpoint_holds_both_tiers_and_restores_onto_another_mesh(batches, tmp_path):
    """10 steps on 8 devices, saved, restored onto 1 device (every row into
    the host tier, the device tier empty) and trained 10 more: as the
    1-device run that kept every row on the device (the mesh changes only
    the order the owners sum gradients in: within 1e-5)."""
    ref_coll, ref_state, ref_losses = all_on_device(batches, 1)
    coll = tiered(8)
    state, first = train(coll, batches[:10])
    saved_rows = {n: s["size"] + s["host_rows"] for n, s in coll.table_stats(state.tables).items()}
    ckpt = CheckpointManager(tmp_path / "ck")
    ckpt.save(state, coll)
    ckpt.wait()
    coll1 = tiered(1)
    template = coll1.init_train_state(tc.init_params(), optax.adam(0.01))
    state, _ = ckpt.restore(template, coll1)
    stats = coll1.table_stats(state.tables)
    assert {n: s["host_rows"] for n, s in stats.items()} == saved_rows
    assert all(s["size"] == 0 for s in stats.values())
    step = coll1.make_train_step(tc.head_loss, optax.adam(0.01))
    losses = list(first)
    for b in batches[10:]:
        state, m = step(state, b)
        losses.append(m["loss"])
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    stats = coll1.table_stats(state.tables)
    for name in tc.DIMS:
        got, want = all_rows(coll1, state, name), all_rows(ref_coll, ref_state, name)
        assert got.keys() == want.keys()
        for k, (v, o) in want.items():
            np.testing.assert_allclose(got[k][0], v, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(got[k][1], o, rtol=1e-4, atol=1e-5)
        s = stats[name]
        assert s["inserted"] - s["promoted"] == s["size"] + s["host_rows"] == len(want)




def test_host_tier_settings_are_checked():
    with pytest.raises(ValueError, match="host_tier needs evict=True"):
        EmbeddingCollection(specs(None), tc.FEATURES, mesh=make_mesh(jax.devices()[:1]),
                            host_tier=True, evict=False)
    coll = EmbeddingCollection(specs(None), tc.FEATURES, mesh=make_mesh(jax.devices()[:1]),
                               host_tier=True)
    with pytest.raises(h.HyperecaError, match="hot folds"):
        coll.layout(64, ("a",))
    with pytest.raises(ValueError, match="ttl_steps must be a step count >= 1"):
        EmbeddingCollection(specs(None), tc.FEATURES, mesh=make_mesh(jax.devices()[:1]),
                            host_tier={"ttl_steps": 0})


def test_a_device_budget_below_one_steps_ids_names_both_numbers(batches):
    mesh = make_mesh(jax.devices()[:1])
    small = {"a": 32, "b": 128, "c": 128}  # a batch looks up ~100 ids of table a
    probe = EmbeddingCollection(specs(small, bucket_size=32), tc.FEATURES, mesh=mesh)
    coll = EmbeddingCollection(specs(small, bucket_size=32), tc.FEATURES, mesh=mesh,
                               max_shard_bytes=probe.shard_bytes(probe.init_tables()),
                               host_tier=True)
    dense_tx = optax.adam(0.01)
    step = coll.make_train_step(tc.head_loss, dense_tx)
    state = coll.init_train_state(tc.init_params(), dense_tx)
    with pytest.raises(h.TableFullError,
                       match=r"table 'a'.*asked for \d+ ids for 32 rows in buckets of 32"):
        step(state, batches[0])
    assert len(coll.host_tier.rows("a").keys) == 0  # nothing was moved, nothing lost


def test_the_soak_streams_wide_ids_through_both_tiers_and_accounts_for_every_row():
    """experiments.soak, tiny: Zipf ids spread over [0, 2**62) through a
    4096-row device tier and a TTL'd host tier; I3 is checked after every
    step inside the run (it raises otherwise) and rows come back from the
    host (promoted: ids >= 2**31 survive the transfers)."""
    from experiments import soak

    s = soak.main(["--distinct", "30000", "--vocab", "1e6", "--device-rows", "4096",
                   "--batch", "256", "--ttl-steps", "5", "--report-every", "1000"])
    assert s["distinct_ids"] >= 30000 and s["accounting_checks"] == s["steps"]
    assert s["inserted"] - s["promoted"] == s["device_rows"] + s["host_rows"] + s["ttl_evicted"]
    assert s["promoted"] > 1000 and s["demoted"] > 10000 and s["ttl_evicted"] > 0
