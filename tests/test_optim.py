"""The fused sparse optimizers against optax (dense table, every row touched
every step, where the semantics match) and against numpy."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jax_hypereca as h

DIM, ROWS, STEPS = 6, 40, 25


def run_table(opt, grads_seq):
    spec = h.TableSpec(name="t", dim=DIM, capacity=128, optimizer=opt,
                       initializer=h.uniform(0.5), seed=3)
    keys = np.arange(ROWS, dtype=np.int64) * 97
    st = h.init_table(spec)
    for i, g in enumerate(grads_seq):
        st, r = h.find_or_insert(spec, st, keys, step=i + 1)
        st, status = h.apply_gradients(spec, st, r.slots, g, step=i)
    rows, _ = h.find(spec, st, keys)
    return np.asarray(rows), h.init_rows(3, keys, DIM, h.uniform(0.5))


def run_optax(tx, w0, grads_seq):
    w = jnp.asarray(w0)
    state = tx.init(w)
    for g in grads_seq:
        upd, state = tx.update(jnp.asarray(g), state, w)
        w = optax.apply_updates(w, upd)
    return np.asarray(w)


def grads(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(ROWS, DIM)).astype(np.float32) for _ in range(STEPS)]


SCHED = optax.linear_schedule(0.1, 0.01, STEPS)


@pytest.mark.parametrize("ours, theirs", [
    (h.SGD(learning_rate=0.05), optax.sgd(0.05)),
    (h.SGD(learning_rate=SCHED), optax.sgd(SCHED)),
    (h.SGD(learning_rate=0.05, weight_decay=0.1),
     optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.05))),
    (h.Adagrad(learning_rate=0.1), optax.adagrad(0.1, initial_accumulator_value=0.1, eps=1e-7)),
    (h.Adagrad(learning_rate=SCHED, initial_accumulator_value=0.5),
     optax.adagrad(SCHED, initial_accumulator_value=0.5, eps=1e-7)),
    (h.Adam(learning_rate=0.01), optax.adam(0.01)),
    (h.Adam(learning_rate=0.01, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.01),
     optax.adamw(0.01, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.01)),
])
def test_matches_optax_on_a_dense_table(ours, theirs):
    g = grads()
    rows, w0 = run_table(ours, g)
    np.testing.assert_allclose(rows, run_optax(theirs, w0, g), rtol=2e-5, atol=2e-6)


def rowwise_adagrad_np(w, g_seq, lr, acc0, eps):
    w = w.astype(np.float64)
    acc = np.full((w.shape[0], 1), acc0)
    for g in g_seq:
        acc += (g.astype(np.float64) ** 2).mean(axis=1, keepdims=True)
        w -= lr * g / (np.sqrt(acc) + eps)
    return w


def ftrl_np(w, g_seq, lr, l1, l2, beta, n0):
    w = w.astype(np.float64)
    z = np.zeros_like(w)
    n = np.full_like(w, n0)
    for g in g_seq:
        g = g.astype(np.float64)
        n_new = n + g * g
        z += g - (np.sqrt(n_new) - np.sqrt(n)) / lr * w
        n = n_new
        w = np.where(np.abs(z) > l1,
                     -(z - np.sign(z) * l1) / ((beta + np.sqrt(n)) / lr + 2 * l2), 0.0)
    return w


def test_rowwise_adagrad_matches_numpy():
    g = grads(1)
    rows, w0 = run_table(h.RowwiseAdagrad(learning_rate=0.1, initial_accumulator_value=0.2,
                                          eps=1e-6), g)
    np.testing.assert_allclose(rows, rowwise_adagrad_np(w0, g, 0.1, 0.2, 1e-6), rtol=2e-5,
                               atol=2e-6)


@pytest.mark.parametrize("l1, l2, beta", [(0.0, 0.0, 0.0), (0.05, 0.1, 0.5)])
def test_ftrl_matches_numpy(l1, l2, beta):
    g = grads(2)
    rows, w0 = run_table(h.FTRL(learning_rate=0.1, l1=l1, l2=l2, beta=beta), g)
    np.testing.assert_allclose(rows, ftrl_np(w0, g, 0.1, l1, l2, beta, 0.1), rtol=5e-5,
                               atol=5e-6)
    if l1:
        assert (rows == 0).any()  # L1 drives some weights to exactly zero


def test_adam_counts_steps_per_row():
    """A row touched twice gets step-2 bias correction even if other rows saw
    more updates."""
    spec = h.TableSpec(name="t", dim=2, capacity=16, optimizer=h.Adam(learning_rate=0.1),
                       initializer=h.constant(0.0))
    st = h.init_table(spec)
    for i, ks in enumerate([[1, 2], [1], [1, 2], [1]]):
        st, r = h.find_or_insert(spec, st, np.asarray(ks, np.int64), step=i + 1)
        st, _ = h.apply_gradients(spec, st, r.slots, jnp.ones((len(ks), 2)), step=i)
    rows, _ = h.find(spec, st, np.asarray([1, 2], np.int64))
    state = np.asarray(st.opt_state)[np.asarray(h.find_or_insert(spec, st, np.asarray(
        [1, 2], np.int64), step=9)[1].slots)]
    np.testing.assert_array_equal(state[:, -1], [4, 2])  # per-row step counts
    # constant gradient 1: every bias-corrected Adam step moves by lr (up to eps)
    np.testing.assert_allclose(np.asarray(rows), [[-0.4, -0.4], [-0.2, -0.2]], rtol=1e-5)


def test_state_widths_match_native():
    for opt, width in [(h.SGD(), 0), (h.Adagrad(), 5), (h.RowwiseAdagrad(), 1),
                       (h.Adam(), 11), (h.FTRL(), 10)]:
        assert opt.state_width(5) == width
        spec = h.TableSpec(name="t", dim=5, capacity=16, optimizer=opt)
        st, r = h.find_or_insert(spec, h.init_table(spec), np.asarray([1], np.int64), step=1)
        st, status = h.apply_gradients(spec, st, r.slots, jnp.ones((1, 5)), step=0)
        assert int(status[0]) == 1
        np.testing.assert_array_equal(np.asarray(st.opt_state)[int(r.slots[0])].shape, (width,))


@pytest.mark.parametrize("make,message", [
    (lambda: h.RowwiseAdagrad(learning_rate=float("nan")), "learning_rate=nan"),
    (lambda: h.SGD(learning_rate=-1.0), "learning_rate=-1.0; set learning_rate to a finite "
     "number > 0"),
    (lambda: h.FTRL(learning_rate=0.0), "learning_rate=0.0"),
    (lambda: h.Adagrad(eps=float("inf")), "eps=inf"),
    (lambda: h.Adagrad(initial_accumulator_value=-0.1), "initial_accumulator_value=-0.1"),
    (lambda: h.Adam(b1=1.0), "b1=1.0; set b1 to a finite number >= 0.0 and < 1.0"),
    (lambda: h.SGD(weight_decay="0.1x"), "weight_decay='0.1x'"),
])
def test_bad_hyperparameters_are_refused_with_the_field_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_schedules_and_numpy_scalars_are_accepted():
    assert h.SGD(learning_rate=lambda step: 0.1 * step).learning_rate(2) == pytest.approx(0.2)
    assert h.Adam(learning_rate=np.float32(0.01), b2=0.0).b2 == 0.0
