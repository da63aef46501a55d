"""A one-device mesh is the single-device path: training through the
collection on one device equals the same model with dense jnp tables and
optax (I2), the step updates the tables in place, and reserved ids are
refused before dispatch (host ids) or reported after the step (device ids)
with every row kept."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jax_hypereca as h

V = {"a": 300, "b": 50}   # id universe per table
DIMS = {"a": 8, "b": 4}
B, STEPS = 64, 200
FEATURES = [h.FeatureSpec(name="a", table="a", max_ids=2, pooling="none"),
            h.FeatureSpec(name="b", table="b")]


def collection(optimizer):
    specs = [h.TableSpec(name=name, dim=DIMS[name], capacity=4096, optimizer=optimizer,
                         seed=11 + i, initializer=h.uniform(0.1))
             for i, name in enumerate(DIMS)]
    return h.EmbeddingCollection(specs, FEATURES, mesh=h.make_mesh(jax.devices()[:1]))


def batches(seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(STEPS):
        a = rng.zipf(1.3, size=(B, 2)) % V["a"]           # two ids per sample
        a[rng.random((B, 2)) < 0.1] = h.PADDING_ID          # some padding
        b = rng.integers(0, V["b"], size=(B,))
        x = rng.normal(size=(B, 3)).astype(np.float32)
        y = (rng.random(B) < 0.3).astype(np.float32)
        yield {"ids": {"a": a.astype(np.int64), "b": b.astype(np.int64)}, "x": x, "y": y}


def init_params():
    k1, _ = jax.random.split(jax.random.PRNGKey(0))
    return {"w": jax.random.normal(k1, (2 * 8 + 4 + 3,)) * 0.1, "c": jnp.zeros(())}


def model_loss(params, emb_a, emb_b, batch):
    feats = jnp.concatenate([emb_a.reshape(B, -1), emb_b, batch["x"]], axis=1)
    logits = feats @ params["w"] + params["c"]
    return optax.sigmoid_binary_cross_entropy(logits, batch["y"]).mean()


def loss_fn(params, emb, batch):
    return model_loss(params, emb["a"], emb["b"], batch)


def reference(optimizer_tx, dense_tx):
    """Plain jnp + optax, dense tables indexed by id; no project helpers."""
    tables = {n: jnp.asarray(h.init_rows(11 + i, np.arange(V[n]), DIMS[n], h.uniform(0.1)))
              for i, n in enumerate(DIMS)}
    params = init_params()
    opt_t = {n: optimizer_tx.init(t) for n, t in tables.items()}
    opt_p = dense_tx.init(params)

    @jax.jit
    def step(params, tables, opt_p, opt_t, ids, batch):
        def loss_fn(params, tables):
            ea = jnp.where((ids["a"] >= 0)[..., None], tables["a"][jnp.maximum(ids["a"], 0)], 0)
            eb = tables["b"][ids["b"]]
            return model_loss(params, ea, eb, batch)
        loss, (gp, gt) = jax.value_and_grad(loss_fn, argnums=(0, 1))(params, tables)
        up, opt_p = dense_tx.update(gp, opt_p, params)
        params = optax.apply_updates(params, up)
        new_t, new_o = {}, {}
        for n in tables:
            u, new_o[n] = optimizer_tx.update(gt[n], opt_t[n], tables[n])
            new_t[n] = optax.apply_updates(tables[n], u)
        return params, new_t, opt_p, new_o, loss

    losses = []
    for b in batches():
        ids = {k: jnp.asarray(v, jnp.int32) for k, v in b["ids"].items()}
        params, tables, opt_p, opt_t, loss = step(params, tables, opt_p, opt_t, ids,
                                                  {"x": b["x"], "y": b["y"]})
        losses.append(float(loss))
    return params, tables, losses


@pytest.mark.parametrize("ours, theirs", [
    (h.Adagrad(learning_rate=0.05), optax.adagrad(0.05, initial_accumulator_value=0.1, eps=1e-7)),
    (h.SGD(learning_rate=0.5), optax.sgd(0.5)),
])
def test_200_steps_equal_dense_optax_reference(ours, theirs):
    dense_tx = optax.adam(0.01)
    coll = collection(ours)
    step_fn = coll.make_train_step(loss_fn, dense_tx)
    state = coll.init_train_state(init_params(), dense_tx)
    losses = []
    for b in batches():
        state, metrics = step_fn(state, b)
        losses.append(metrics["loss"])
    ref_params, ref_tables, ref_losses = reference(theirs, dense_tx)

    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    for k in ref_params:
        np.testing.assert_allclose(np.asarray(state.params[k]), np.asarray(ref_params[k]),
                                   rtol=1e-5, atol=1e-5)
    for n in DIMS:
        rows = h.Rows.concat(list(h.export(coll.tables[n], state.tables[n])))
        ref = np.asarray(ref_tables[n])[rows.keys]
        tol = 1e-5 * np.maximum(1.0, np.abs(ref))
        assert (np.abs(rows.values - ref) <= tol).all()
        assert coll.table_stats(state.tables)[n]["evicted"] == 0
    assert losses[-1] < losses[0]
    assert int(state.step) == STEPS


def test_compiled_step_updates_tables_in_place():
    dense_tx = optax.sgd(0.1)
    coll = collection(h.RowwiseAdagrad(learning_rate=0.1))
    step_fn = coll.make_train_step(loss_fn, dense_tx)
    state = coll.init_train_state(init_params(), dense_tx)
    hlo = step_fn.lower(state, coll.prepare_batch(next(batches()))).compile().as_text()
    table_shapes = {"s64[4096]", "f32[4096,8]", "f32[4096,4]", "f32[4096,1]"}
    copies = [line for line in hlo.splitlines()
              if " copy(" in line and any(s in line for s in table_shapes)]
    assert not copies, copies


def sgd_after_one_step():
    """(collection, its SGD train step, the state after one step, that batch)."""
    dense_tx = optax.sgd(0.1)
    coll = collection(h.SGD(learning_rate=0.1))
    step_fn = coll.make_train_step(loss_fn, dense_tx)
    state = coll.init_train_state(init_params(), dense_tx)
    b = next(batches())
    state, _ = step_fn(state, b)
    return coll, step_fn, state, b


def test_host_ids_reserved_or_unknown_are_refused_before_dispatch():
    coll, step_fn, state, b = sgd_after_one_step()
    size = coll.table_stats(state.tables)["a"]["size"]
    bad = dict(b, ids=dict(b["ids"], a=b["ids"]["a"].copy()))
    bad["ids"]["a"][3, 1] = h.ERASED_KEY
    with pytest.raises(h.ReservedIdError, match=r"ids\[3, 1\] = -2"):
        step_fn(state, bad)
    assert coll.table_stats(state.tables)["a"]["size"] == size  # not donated, intact
    with pytest.raises(ValueError, match="unknown feature 'zz'"):
        step_fn(state, dict(b, ids=dict(b["ids"], zz=b["ids"]["b"])))


def test_device_ids_reserved_are_reported_after_the_step_with_rows_kept():
    """Device ids cannot be checked before dispatch: the op reports them and
    the step raises after, with every existing row kept."""
    coll, step_fn, state, b = sgd_after_one_step()
    before = h.Rows.concat(list(h.export(coll.tables["a"], state.tables["a"])))
    a = b["ids"]["a"]
    bad = dict(b, ids={"a": h.ids_array(np.where(a == a[0, 0], h.ERASED_KEY, a)),
                       "b": h.ids_array(b["ids"]["b"])})
    with pytest.raises(h.ReservedIdError, match="reserved ERASED_KEY") as err:
        step_fn(state, bad)
    after = h.Rows.concat(list(h.export(coll.tables["a"], err.value.state.tables["a"])))
    assert set(before.keys.tolist()) <= set(after.keys.tolist())
    assert int(np.asarray(err.value.state.step)) == 2
