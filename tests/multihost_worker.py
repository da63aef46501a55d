"""One process of the 2-process test (run by test_multihost.py):
jax.distributed on 127.0.0.1, 4 CPU devices per process, one global mesh of 8.
Trains the collection of test_collection.py feeding each process its half of
every global batch and checks I2 against the single-device reference."""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

port, num, pid, steps = (int(x) for x in sys.argv[1:5])
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=num,
                           process_id=pid)

import numpy as np  # noqa: E402
import optax  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import test_collection as tc  # noqa: E402

from jax_hypereca.collection import EmbeddingCollection  # noqa: E402
from jax_hypereca.sharding import make_mesh  # noqa: E402

assert jax.device_count() == 8 and jax.local_device_count() == 4
batches = tc.make_batches(steps=steps)
ref_params, ref_tables, ref_losses = tc.reference(batches, tc.OPTS["adagrad"][1],
                                                  optax.adam(0.01))

coll = EmbeddingCollection(tc.table_specs(tc.OPTS["adagrad"][0]), tc.FEATURES, mesh=make_mesh())
dense_tx = optax.adam(0.01)
step = coll.make_train_step(tc.head_loss, dense_tx)
state = coll.init_train_state(tc.init_params(), dense_tx)
half = tc.B // num
losses = []
for b in batches:
    local = jax.tree.map(lambda x: x[pid * half:(pid + 1) * half], b)
    state, m = step(state, local, local=True)
    losses.append(m["loss"])
np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
for k in ref_params:
    a = np.asarray(state.params[k].addressable_shards[0].data)
    r = np.asarray(ref_params[k])
    assert (np.abs(a - r) <= 1e-5 * np.maximum(1, np.abs(r))).all(), k
checked = 0
for n in tc.DIMS:
    for shard_k, shard_v in zip(state.tables[n].keys.addressable_shards,
                                state.tables[n].values.addressable_shards):
        keys, vals = np.asarray(shard_k.data), np.asarray(shard_v.data)
        live = keys >= 0
        ref = np.asarray(ref_tables[n])[keys[live]]
        assert (np.abs(vals[live] - ref) <= 1e-5 * np.maximum(1, np.abs(ref))).all(), n
        checked += int(live.sum())
assert checked > 0
stats = coll.table_stats(state.tables)
assert all(v["evicted"] == 0 for v in stats.values())
print(f"process {pid}: OK {steps} steps, {checked} local rows equal the reference", flush=True)
jax.distributed.shutdown()
