"""One process of the 2-process test (run by test_multihost.py):
jax.distributed on 127.0.0.1, 4 CPU devices per process, one global mesh of 8.
Trains the collection of test_collection.py feeding each process its half of
every global batch and checks I2 against the single-device reference: once
with element-wise Adagrad and no hot fold, once with row-wise Adagrad, a
planned hot fold applied before training and a re-plan half-way that swaps
half of each hot set (rows move both ways between the folds, across the
processes' shards); there also I1 (one home per id) and identical replicas of
the hot folds on every device of both processes. The hot-fold run picks its
exchange with exchange="auto" (both processes must agree, or the collectives
hang; it decides after 3 timed steps of each, well inside the run); a run
repeats the first with the ring exchange and must equal it bit for bit; one
trains with admission (test_admission.py) against its reference; the last
trains with a host tier (each process holding its shards' evicted rows, 3
steps in flight) against the reference, and restores a checkpoint of it."""

import dataclasses
import os
import shutil
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

port, num, pid, steps = (int(x) for x in sys.argv[1:5])
MODE = sys.argv[5] if len(sys.argv) > 5 else "all"  # "tier": only the host-tier run
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=num,
                           process_id=pid)

import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import test_collection as tc  # noqa: E402
import test_replication as tr  # noqa: E402
import test_admission as ta  # noqa: E402
import test_tiers as tt  # noqa: E402

import jax_hypereca as h  # noqa: E402
from jax_hypereca import replication as rep  # noqa: E402
from jax_hypereca.collection import EmbeddingCollection  # noqa: E402
from jax_hypereca.checkpoint import CheckpointManager  # noqa: E402
from jax_hypereca.placement import host_gather, local_rows, make_mesh, replica_rows  # noqa: E402
from jax_hypereca.table import COUNTER_NAMES, Rows  # noqa: E402

assert jax.device_count() == 8 and jax.local_device_count() == 4
batches = tc.make_batches(steps=steps)
half = tc.B // num


def train(opt, hot_plan=None, replan_at=None, replan=None, exchange="all_to_all", specs=None,
          steps=None):
    coll = EmbeddingCollection(specs or tc.table_specs(opt), tc.FEATURES, mesh=make_mesh(),
                               exchange=exchange)
    dense_tx = optax.adam(0.01)
    step = coll.make_train_step(tc.head_loss, dense_tx)
    state = coll.init_train_state(tc.init_params(), dense_tx)
    if hot_plan is not None:
        state = rep.apply_plan(coll, state, hot_plan(coll))
    losses = []
    for i, b in enumerate(batches[:steps]):
        if i == replan_at:
            state = rep.apply_plan(coll, state, replan(coll))
        local = jax.tree.map(lambda x: x[pid * half:(pid + 1) * half], b)
        state, m = step(state, local, local=True)
        losses.append(m["loss"])
    return coll, state, losses


def close(a, r):
    return (np.abs(a - r) <= 1e-5 * np.maximum(1, np.abs(r))).all()


def check_equivalent(state, losses, ref):
    """Losses, dense params and every local row of both folds; returns the
    number of local cold rows and the largest relative error seen."""
    ref_params, ref_tables, ref_losses = ref
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    errs = [0.0]
    for k in ref_params:
        a = np.asarray(state.params[k].addressable_shards[0].data)
        r = np.asarray(ref_params[k])
        assert close(a, r), k
    checked = 0
    for n in tc.DIMS:
        for shard_k, shard_v in zip(state.tables[n].keys.addressable_shards,
                                    state.tables[n].values.addressable_shards):
            keys, vals = np.asarray(shard_k.data), np.asarray(shard_v.data)
            live = keys >= 0
            r = np.asarray(ref_tables[n])[keys[live]]
            assert close(vals[live], r), n
            if live.any():
                errs.append(np.max(np.abs(vals[live] - r) / np.maximum(1, np.abs(r))))
            checked += int(live.sum())
        if n in state.hot:
            rows, _ = replica_rows(state.hot[n])
            r = np.asarray(ref_tables[n])[rows.keys]
            assert close(rows.values, r), f"hot {n}"
            errs.append(np.max(np.abs(rows.values - r) / np.maximum(1, np.abs(r))))
    assert checked > 0
    return checked, float(max(errs))


def check_one_home(coll, state):
    """I1: every cold id on its owner shard, once; no id in both folds."""
    w = coll.num_shards
    for n in tc.DIMS:
        per_shard = state.tables[n].keys.shape[0] // w
        for shard in state.tables[n].keys.addressable_shards:
            keys = np.asarray(shard.data)
            s = shard.index[0].start // per_shard
            assert (h.owner_of(keys[keys >= 0], w) == s).all(), n
        cold = host_gather(state.tables[n].keys)
        cold = cold[cold >= 0]
        assert len(np.unique(cold)) == len(cold), n
        if n in state.hot:
            hot = replica_rows(state.hot[n])[0].keys
            assert not np.intersect1d(cold, hot).size, n


def check_replicas(state):
    """Every device of every process holds the same hot folds."""
    for n, hot in state.hot.items():
        for field in ("keys", "values", "opt_state"):
            shards = [np.asarray(s.data) for s in getattr(hot, field).addressable_shards]
            for s in shards[1:]:
                np.testing.assert_array_equal(s, shards[0], err_msg=f"{n}.{field}")
            every = np.asarray(multihost_utils.process_allgather(shards[0]))
            for p in range(num):
                np.testing.assert_array_equal(every[p], shards[0], err_msg=f"{n}.{field}")


# a host tier across the processes, steps 3 in flight: each process keeps the
# rows its own shards evict and stages them for whichever process's samples
# look them up; then a checkpoint of both tiers restores every row
def host_tier_run():
    ref = tc.reference(batches, tc.OPTS["adagrad"][1], optax.adam(0.01))
    specs = tt.specs(tt.BUDGET[8])
    probe = EmbeddingCollection(specs, tc.FEATURES, mesh=make_mesh())
    coll = EmbeddingCollection(specs, tc.FEATURES, mesh=make_mesh(), host_tier=True,
                               max_shard_bytes=probe.shard_bytes(probe.init_tables()))
    dense_tx = optax.adam(0.01)
    pipe = h.TrainPipeline(coll.make_train_step(tc.head_loss, dense_tx), depth=3, local=True)
    state = coll.init_train_state(tc.init_params(), dense_tx)
    for b in batches:
        state = pipe.submit(state, jax.tree.map(lambda x: x[pid * half:(pid + 1) * half], b))
    state = pipe.flush(state)
    losses = [m["loss"] for m in pipe.pop_completed()]
    np.testing.assert_allclose(losses, ref[2], rtol=1e-5, atol=1e-6)
    mine = {}
    for n in tc.DIMS:
        host = coll.host_tier.rows(n)
        assert np.isin(h.owner_of(host.keys, 8), coll.host_tier.local).all(), n  # its own shards'
        rows = Rows.concat(local_rows(state.tables[n]) + [host])
        assert len(np.unique(rows.keys)) == len(rows.keys), n  # I1 within the process
        assert close(rows.values, np.asarray(ref[1][n])[rows.keys]), n
        mine[n] = set(rows.keys.tolist())
    stats = coll.table_stats(state.tables)
    for n, t in stats.items():  # I3 over both processes, exactly
        assert t["inserted"] - t["promoted"] == t["size"] + t["host_rows"], (n, t)
    assert stats["a"]["demoted"] > 100 and stats["a"]["promoted"] > 100, stats["a"]
    ckpt = CheckpointManager(f"/tmp/hypereca-multihost-{port}/ck")
    ckpt.save(state, coll)
    ckpt.wait()
    coll2 = EmbeddingCollection(specs, tc.FEATURES, mesh=make_mesh(), host_tier=True,
                                max_shard_bytes=probe.shard_bytes(probe.init_tables()))
    restored, _ = ckpt.restore(coll2.init_train_state(tc.init_params(), dense_tx), coll2)
    for n in tc.DIMS:  # every row back, in the host tier of the process that owns it
        assert set(coll2.host_tier.rows(n).keys.tolist()) == mine[n], n
    multihost_utils.sync_global_devices("checkpoint read")
    if pid == 0:
        shutil.rmtree(f"/tmp/hypereca-multihost-{port}", ignore_errors=True)
    print(f"process {pid}: OK host tier {stats['a']['demoted']} demoted, "
          f"{stats['a']['promoted']} promoted rows of table a", flush=True)


if MODE == "tier":  # test_multihost's slow case: only the host tier
    host_tier_run()
    jax.distributed.shutdown()
    sys.exit(0)

# element-wise Adagrad, the cold fold only
ref = tc.reference(batches, tc.OPTS["adagrad"][1], optax.adam(0.01))
coll, state, losses = train(tc.OPTS["adagrad"][0])
a2a_state, a2a_losses = state, losses
checked, _ = check_equivalent(state, losses, ref)
stats = coll.table_stats(state.tables)
assert all(v["evicted"] == 0 for v in stats.values())
print(f"process {pid}: OK {steps} steps, {checked} local rows equal the reference", flush=True)

# row-wise Adagrad with hot folds: planned before training, re-planned half-way
ref = tc.reference(batches, tr.rowwise_adagrad(tr.RW_LR, tr.RW_ACC0), optax.adam(0.01))
plans = {}


def planned(coll):
    stats = rep.peek(coll, batches[:steps // 2])
    plans["plan"] = rep.plan(coll, stats, tr.profile_for(8), memory_budget_bytes=2048)
    return plans["plan"]


def swapped(plan):
    """The re-plan: per table, the first half of the planned hot ids stays
    hot, the other half goes back to the cold fold and as many ids the plan
    left cold come hot, so rows move both ways. Same sizes, so the step is
    not recompiled (dropping a fold is covered by test_replication.py)."""
    out = {}
    for tp in plan.tables:
        ids = np.sort(np.asarray(tp.hot_ids, np.int64))
        k = len(ids) // 2
        out[tp.name] = np.concatenate([ids[:k], np.setdiff1d(np.arange(tc.V[tp.name]),
                                                             ids)[:len(ids) - k]])
    return out


coll, state, losses = train(h.RowwiseAdagrad(learning_rate=tr.RW_LR,
                                             initial_accumulator_value=tr.RW_ACC0),
                            hot_plan=planned, replan_at=steps // 2,
                            replan=lambda coll: swapped(plans["plan"]), exchange="auto")
assert coll.exchange in ("all_to_all", "ring") and set(coll.exchange_timings) == {
    "all_to_all", "ring"}
assert any(tp.hot_rows for tp in plans["plan"].tables)
assert set(state.hot) == {tp.name for tp in plans["plan"].tables if tp.hot_rows}
checked, err = check_equivalent(state, losses, ref)
check_one_home(coll, state)
check_replicas(state)
for n, c in rep.fold_counters(state).items():
    assert c["inserted"] == c["size"] + c["evicted"] + c["erased"], n
    assert c["moved_in"] == c["moved_out"], n
for n, t in state.hot.items():  # the re-plan moved rows cold -> hot and hot -> cold
    hot_counters = replica_rows(t)[1]
    assert hot_counters[COUNTER_NAMES["moved_in"]] > 0, n
    assert hot_counters[COUNTER_NAMES["moved_out"]] > 0, n
hot = {n: len(replica_rows(t)[0].keys) for n, t in state.hot.items()}
print(f"process {pid}: OK hot folds {hot}, {checked} local cold rows, row-wise Adagrad "
      f"max relative error {err:.3g}, exchange auto -> {coll.exchange} "
      f"{coll.exchange_timings}", flush=True)

# the first run again with the ring exchange: bit for bit the same
_, state, losses = train(tc.OPTS["adagrad"][0], exchange="ring")
assert losses == a2a_losses
for n in tc.DIMS:
    for field in ("keys", "values", "opt_state"):
        for a, b in zip(getattr(state.tables[n], field).addressable_shards,
                        getattr(a2a_state.tables[n], field).addressable_shards):
            np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data))
print(f"process {pid}: OK ring equals all_to_all bit for bit", flush=True)

# admission (ids get rows from their 3rd step on) against the reference that
# reads zeros until then, the filtered count summed over both processes
admitted, filtered = ta.expected(batches[:6])
ref = tc.reference(batches[:6], tc.OPTS["adagrad"][1], optax.adam(0.01), admitted)
specs = [dataclasses.replace(s, admit_after=ta.K, admission_counters=1 << 16)
         for s in tc.table_specs(tc.OPTS["adagrad"][0])]
coll, state, losses = train(None, specs=specs, steps=6)
checked, _ = check_equivalent(state, losses, ref)
stats = coll.table_stats(state.tables, admission=state.admission)
for n in tc.DIMS:
    assert stats[n]["admission_filtered"] == sum(f[n] for f in filtered), n
print(f"process {pid}: OK admission, {checked} local rows", flush=True)

jax.distributed.shutdown()
