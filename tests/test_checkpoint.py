"""Orbax checkpoints of a sharded TrainState: restorable on fewer devices
with equal eval logits, a snapshot of the step it was taken at even while
training goes on, and atomic (a crash mid-save leaves the last good one)."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jax_hypereca as h
from jax_hypereca.checkpoint import (
    CheckpointError, CheckpointManager, check_writable, local_rows, replica_rows)
from jax_hypereca.collection import EmbeddingCollection
from jax_hypereca.sharding import make_mesh

sys.path.insert(0, os.path.dirname(__file__))
import test_collection as tc  # noqa: E402

TX = optax.adam(0.01)


def collection_on(devices: int, opt=tc.OPTS["adagrad"][0]) -> EmbeddingCollection:
    return EmbeddingCollection(tc.table_specs(opt), tc.FEATURES,
                               mesh=make_mesh(jax.devices()[:devices]))


def trained(devices: int, steps: int, batches):
    coll = collection_on(devices)
    step = coll.make_train_step(tc.head_loss, TX)
    state = coll.init_train_state(tc.init_params(), TX)
    for b in batches[:steps]:
        state, _ = step(state, b)
    return coll, step, state


def logits(params, emb, batch):
    feats = jnp.concatenate([emb["fa"], emb["fa3"], emb["fb"],
                             emb["fc"].reshape(emb["fc"].shape[0], -1), batch["x"]], axis=1)
    return feats @ params["w"] + params["c"]


def rows_by_key(state) -> dict[str, dict[int, np.ndarray]]:
    """Every table's rows (both folds) as {id: values, opt state, scores}."""
    out = {}
    for name, st in state.tables.items():
        parts = local_rows(st) + ([replica_rows(state.hot[name])[0]] if name in state.hot else [])
        rows = h.Rows.concat(parts)
        out[name] = {int(k): np.concatenate([rows.values[i].ravel(), rows.opt_state[i],
                                             [rows.last_step[i], rows.freq[i]]])
                     for i, k in enumerate(rows.keys)}
        assert len(out[name]) == len(rows.keys)  # one home per id
    return out


@pytest.fixture(scope="module")
def batches():
    return tc.make_batches(steps=12)


def test_restore_on_fewer_devices_gives_equal_eval_logits(tmp_path, batches):
    """8 devices, with a hot fold for table a, restored onto 4 and 1."""
    coll8, step8, state8 = trained(8, 6, batches)
    state8 = h.replication.apply_plan(coll8, state8, {"a": np.arange(12)})
    for b in batches[6:8]:  # the hot rows train too
        state8, _ = step8(state8, b)
    ckpt = CheckpointManager(tmp_path / "ck")
    assert ckpt.save(state8, coll8, extra={"data_step": 8}) == 8
    ckpt.wait()
    want = np.asarray(coll8.make_eval_fn(logits)(state8, batches[10]))
    want_rows = rows_by_key(state8)
    want_counters = h.replication.fold_counters(state8)
    for devices in (4, 1):
        coll = collection_on(devices)
        state, extra = CheckpointManager(tmp_path / "ck").restore(
            coll.init_train_state(tc.init_params(), TX), coll)
        assert extra == {"data_step": 8} and int(state.step) == 8
        assert set(state.hot) == {"a"}
        np.testing.assert_array_equal(np.sort(replica_rows(state.hot["a"])[0].keys),
                                      np.arange(12))
        got = np.asarray(coll.make_eval_fn(logits)(state, batches[10]))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        rows = rows_by_key(state)
        assert rows.keys() == want_rows.keys()
        for name in rows:
            assert rows[name].keys() == want_rows[name].keys()
            for k, r in rows[name].items():
                np.testing.assert_array_equal(r, want_rows[name][k])
        # counters are kept as totals over the shards, per fold
        assert h.replication.fold_counters(state) == want_counters
        per_shard = np.asarray(state.tables["a"].keys).reshape(devices, -1)
        for s in range(devices):  # each id on its new owner
            k = per_shard[s][per_shard[s] >= 0]
            assert (h.owner_of(k, devices) == s).all()
        step = coll.make_train_step(tc.head_loss, TX)  # and training goes on
        state, m = step(state, batches[8])
        assert np.isfinite(m["loss"]) and int(state.step) == 9


def test_async_save_is_a_snapshot_of_its_step(tmp_path, batches):
    """The next (donating) steps run while Orbax writes; the checkpoint still
    holds the state of the step it was taken at."""
    coll, step, state = trained(8, 4, batches)
    ckpt = CheckpointManager(tmp_path / "ck", max_to_keep=1)
    want_rows = rows_by_key(state)
    want_w = np.asarray(state.params["w"])
    ckpt.save(state, coll)
    for b in batches[4:8]:
        state, _ = step(state, b)
    ckpt.close()
    assert not np.array_equal(np.asarray(state.params["w"]), want_w)
    restored, _ = CheckpointManager(tmp_path / "ck").restore(
        coll.init_train_state(tc.init_params(), TX), coll)
    assert int(restored.step) == 4
    np.testing.assert_array_equal(np.asarray(restored.params["w"]), want_w)
    got = rows_by_key(restored)
    for name in want_rows:
        assert got[name].keys() == want_rows[name].keys()
        for k in got[name]:
            np.testing.assert_array_equal(got[name][k], want_rows[name][k])


CRASHING_SAVER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import numpy as np
    from orbax.checkpoint._src.path import atomicity
    import test_checkpoint as t
    from jax_hypereca.checkpoint import CheckpointManager

    batches = t.tc.make_batches(steps=6)
    coll, step, state = t.trained(8, 3, batches)
    ckpt = CheckpointManager({directory!r})
    ckpt.save(state, coll)
    ckpt.wait()
    np.save({expected!r}, np.asarray(state.params["w"]))
    for b in batches[3:5]:
        state, _ = step(state, b)

    async def crash(self, *args, **kwargs):  # every file written, not yet renamed into place
        os.kill(os.getpid(), signal.SIGKILL)

    atomicity.AtomicRenameTemporaryPath.finalize = crash
    ckpt.save(state, coll)
    ckpt.wait()
    print("not reached")
""")


def test_a_crash_mid_save_leaves_the_last_good_checkpoint(tmp_path, batches):
    directory, expected = tmp_path / "ck", tmp_path / "w.npy"
    script = CRASHING_SAVER.format(tests=os.path.dirname(__file__), directory=str(directory),
                                   expected=str(expected))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == -9, proc.stdout[-2000:] + proc.stderr[-4000:]
    leftovers = [p.name for p in directory.iterdir()]
    assert any(n.startswith("5") and "tmp" in n for n in leftovers), leftovers
    ckpt = CheckpointManager(directory)
    assert ckpt.latest_step() == 3 and ckpt.all_steps() == [3]
    coll = collection_on(8)
    state, _ = ckpt.restore(coll.init_train_state(tc.init_params(), TX), coll)
    assert int(state.step) == 3
    np.testing.assert_array_equal(np.asarray(state.params["w"]), np.load(expected))


def test_dense_only_state_round_trips(tmp_path):
    mesh = make_mesh()
    params = {"w": jnp.arange(6.0).reshape(2, 3)}
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    state = h.TrainState(jax.device_put(params, rep), jax.device_put(TX.init(params), rep), {},
                         jax.device_put(jnp.asarray(7, jnp.int64), rep))
    ckpt = CheckpointManager(tmp_path / "ck")
    ckpt.save(state, None)
    ckpt.close()
    template = state._replace(params=jax.tree.map(jnp.zeros_like, state.params))
    got, extra = CheckpointManager(tmp_path / "ck").restore(template, None)
    assert int(got.step) == 7 and extra == {} and got.tables == {}
    np.testing.assert_array_equal(np.asarray(got.params["w"]), np.asarray(params["w"]))


def test_unusable_directories_and_mismatches_are_clear_errors(tmp_path, batches):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match="is not writable"):
        check_writable(blocker / "ck")
    with pytest.raises(CheckpointError, match="is not writable"):
        CheckpointManager(blocker)
    coll = collection_on(8)
    empty = CheckpointManager(tmp_path / "none")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        empty.restore(coll.init_train_state(tc.init_params(), TX), coll)
    coll8, _, state8 = trained(8, 1, batches)
    ckpt = CheckpointManager(tmp_path / "ck")
    ckpt.save(state8, coll8)
    ckpt.wait()
    other = EmbeddingCollection(tc.table_specs(h.SGD()), tc.FEATURES)  # no optimizer state
    with pytest.raises(CheckpointError, match="optimizer state width 8; the spec has 8 and 0"):
        ckpt.restore(other.init_train_state(tc.init_params(), TX), other)
    fewer = EmbeddingCollection(tc.table_specs(tc.OPTS["adagrad"][0])[:2], tc.FEATURES[:3])
    with pytest.raises(CheckpointError, match=r"holds tables \['a', 'b', 'c'\]"):
        ckpt.restore(fewer.init_train_state(tc.init_params(), TX), fewer)
