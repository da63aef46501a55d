"""The sharded step on a one-GPU mesh against the same on one CPU device:
the whole step (unique, bucketize, exchange, find_or_insert, gather_tagged,
apply_gradients), with admission and a host tier, and the pipelined loop
(each step routing the next batch's ids, the default on GPUs) against the
synchronous one on the GPU. Skipped where JAX sees no GPU (run
tools/gpu_check.sh on a CUDA machine); HYPERECA_TEST_TARGET=cpu runs it CPU
against CPU."""

from __future__ import annotations

import jax
import numpy as np

import jax_hypereca as h
from cuda_target import CPU, ON_GPU, TARGET, assert_close, assert_same, skip_without_target

skip_without_target()


def test_sharded_training_on_one_gpu_matches_cpu():
    """The whole sharded step (unique, bucketize, exchange, find_or_insert,
    gather_tagged, apply_gradients) on a one-device GPU mesh against the same
    training on one CPU device."""
    import optax

    import test_collection as tc
    from jax_hypereca.collection import EmbeddingCollection
    from jax_hypereca.placement import make_mesh

    batches = tc.make_batches(seed=3, steps=12)
    results = []
    for dev in (CPU, TARGET):
        # full fp32 matmuls in the dense head (a GPU would use TF32 by default)
        with jax.default_device(dev), jax.default_matmul_precision("highest"):
            coll = EmbeddingCollection(tc.table_specs(h.Adagrad(learning_rate=0.05)),
                                       tc.FEATURES, mesh=make_mesh([dev]))
            dense_tx = optax.adam(0.01)
            step = coll.make_train_step(tc.head_loss, dense_tx)
            state = coll.init_train_state(tc.init_params(), dense_tx)
            losses = []
            for b in batches:
                state, m = step(state, b)
                losses.append(float(m["loss"]))
            results.append((losses, jax.tree.map(np.asarray, state.tables)))
    (ref_losses, ref_tables), (losses, tables) = results
    # The dense head's reductions differ in order between the platforms; the
    # embedding ops themselves are bit-exact (the tests above).
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    for name in ref_tables:
        ref_t, got_t = ref_tables[name], tables[name]
        assert_same(ref_t.keys, got_t.keys, f"{name}.keys")
        assert_same(ref_t.counters, got_t.counters, f"{name}.counters")
        assert_close(ref_t.values, got_t.values, f"{name}.values", rtol=1e-4, atol=1e-5)


def test_admission_and_a_host_tier_on_one_gpu_match_cpu():
    """The sharded step with admission (int8 sketch, scatter-max) on every
    table and a host tier (packed staging, int64 ids as int32 pairs, settle)
    on a one-device GPU mesh against the same on one CPU device: every row,
    on the device or in the host tier, by id."""
    import optax

    import test_collection as tc
    import test_tiers as tt
    from jax_hypereca.collection import EmbeddingCollection
    from jax_hypereca.placement import make_mesh

    batches = tt.wide(tc.make_batches(seed=4, steps=16))
    admit = {n: 2 for n in tc.DIMS}
    results = []
    for dev in (CPU, TARGET):
        with jax.default_device(dev), jax.default_matmul_precision("highest"):
            mesh = make_mesh([dev])
            probe = EmbeddingCollection(tt.specs(tt.BUDGET[1], admit=admit), tc.FEATURES,
                                        mesh=mesh)
            coll = EmbeddingCollection(tt.specs(tt.BUDGET[1], admit=admit), tc.FEATURES,
                                       mesh=mesh, host_tier=True,
                                       max_shard_bytes=probe.shard_bytes(probe.init_tables()))
            state, losses = tt.train(coll, batches, depth=2)
            stats = coll.table_stats(state.tables, admission=state.admission)
            results.append((losses, {n: tt.all_rows(coll, state, n) for n in tc.DIMS}, stats))
    (ref_losses, ref_rows, ref_stats), (losses, rows, stats) = results
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    for n in tc.DIMS:
        assert rows[n].keys() == ref_rows[n].keys(), n
        for k, (v, o) in ref_rows[n].items():
            assert_close(v, rows[n][k][0], f"{n}[{k}].values", rtol=1e-4, atol=1e-5)
            assert_close(o, rows[n][k][1], f"{n}[{k}].opt_state", rtol=1e-4, atol=1e-5)
        for key in ("admission_filtered", "demoted", "promoted", "size", "host_rows"):
            assert stats[n][key] == ref_stats[n][key], (n, key)
    assert ref_stats["a"]["demoted"] > 0 and ref_stats["a"]["admission_filtered"] > 0




def test_the_pipeline_routing_ahead_on_one_gpu_ends_as_its_synchronous_loop():
    """The golden workload (eviction, growth, overflow re-runs, a hot fold
    re-planned, three optimizers) on a one-device target mesh, through a
    depth-3 pipeline whose steps route the next batch's ids (the GPU
    default) and through synchronous steps: the same ids, slots, counters
    and scores, bit for bit; float arrays bit for bit on the CPU and within
    float32 rounding on a GPU (XLA:GPU's scatter-adds may sum in another
    order from one program to another)."""
    import golden_workload
    from jax_hypereca.placement import make_mesh

    with jax.default_device(TARGET), jax.default_matmul_precision("highest"):
        mesh = make_mesh([TARGET])
        sync = golden_workload.run(mesh=mesh)
        piped = golden_workload.run(depth=3, route_ahead=True, mesh=mesh)
    assert piped.pop("routed_ahead") >= golden_workload.STEPS - 1 - len(golden_workload.HOT)
    assert sorted(piped) == sorted(sync)
    for name in sync:
        if ON_GPU and np.issubdtype(sync[name].dtype, np.floating):
            assert_close(sync[name], piped[name], name, rtol=1e-5, atol=1e-6)
        else:
            assert_same(sync[name], piped[name], name)
