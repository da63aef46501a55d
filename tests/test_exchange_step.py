"""The collection's exchange strategies through the whole train step: the
ring equals the all-to-all bit for bit (losses, dense params, every table
array) on 2, 4 and 8 devices, with a hot fold and an overflow re-run on the
way; the compiled step holds the collectives each strategy claims; "auto"
measures both and keeps one. The strategies themselves: test_exchange.py;
2 processes: test_multihost.py."""

import jax
import numpy as np
import optax
import pytest

import jax_hypereca as h
from jax_hypereca import replication as rep
from jax_hypereca.collection import EmbeddingCollection
from jax_hypereca.exchange import Ring
from jax_hypereca.placement import make_mesh

import test_collection as tc
from conftest import slow_case

STEPS = 12


@pytest.fixture(scope="module")
def batches():
    return tc.make_batches(seed=3, steps=STEPS)


def run(shards, batches, exchange, *, hot=False):
    """Trains STEPS steps; the first step's buffers are too small on purpose
    (capacities of 1), so the step is re-run with larger ones."""
    coll = EmbeddingCollection(tc.table_specs(h.RowwiseAdagrad(learning_rate=0.1)),
                               tc.FEATURES, mesh=make_mesh(jax.devices()[:shards]),
                               capacities={"a": 1, "b": 1, "c": 1}, exchange=exchange)
    dense_tx = optax.adam(0.01)
    step = coll.make_train_step(tc.head_loss, dense_tx)
    state = coll.init_train_state(tc.init_params(), dense_tx)
    if hot:
        state = rep.apply_plan(coll, state, {"a": np.arange(10), "c": np.arange(4)})
    losses = []
    for b in batches:
        state, m = step(state, b)
        losses.append(m["loss"])
    return coll, step, state, losses


def assert_bitwise_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# 8 devices with a hot fold is also checked across 2 processes (test_multihost.py)
@pytest.mark.parametrize("shards,hot", [pytest.param(2, False, marks=slow_case),
                                        pytest.param(8, True, marks=slow_case)])
def test_ring_trains_bit_for_bit_like_all_to_all(shards, hot, batches):
    _, s1, a, la = run(shards, batches, "all_to_all", hot=hot)
    coll, s2, r, lr = run(shards, batches, "ring", hot=hot)
    assert coll.exchange == "ring"
    assert s1.retries > 0 and s2.retries == s1.retries  # the overflow path ran too
    assert la == lr
    assert_bitwise_equal((a.params, a.tables, a.hot), (r.params, r.tables, r.hot))


@pytest.mark.parametrize("exchange", ["all_to_all", "ring"])
def test_compiled_step_holds_the_strategys_collectives(exchange, batches):
    coll = EmbeddingCollection(tc.table_specs(h.SGD()), tc.FEATURES, mesh=make_mesh(),
                               exchange=exchange)
    dense_tx = optax.adam(0.01)
    step = coll.make_train_step(tc.head_loss, dense_tx)
    state = coll.init_train_state(tc.init_params(), dense_tx)
    layout = coll.layout(tc.B)
    kinds = [k for k, _ in tc.collective_ops(
        step.lower(state, coll.prepare_batch(batches[0])).compile().as_text())]
    exchanges = 3 * len(layout.groups)  # ids out, rows back, gradients out
    w = coll.num_shards
    if exchange == "ring":
        assert "all-to-all" not in kinds
        assert kinds.count("collective-permute") == exchanges * (w - 1)
    else:
        assert kinds.count("all-to-all") == exchanges
        assert "collective-permute" not in kinds
    # the same bytes cross the axis whatever the schedule
    assert layout.bytes_per_step() == coll.layout(tc.B).bytes_per_step()
    assert layout.bytes_per_step()["ids"] == (w - 1) * sum(layout.capacities) * 16


def test_auto_takes_turns_keeps_one_and_trains_identically(batches):
    coll = EmbeddingCollection(tc.table_specs(h.RowwiseAdagrad(learning_rate=0.1)),
                               tc.FEATURES, mesh=make_mesh(), exchange="auto")
    dense_tx = optax.adam(0.01)
    step = coll.make_train_step(tc.head_loss, dense_tx)
    state = coll.init_train_state(tc.init_params(), dense_tx)
    ran, losses = [], []
    for b in batches:
        assert coll.exchange == "auto" or coll.exchange in ("all_to_all", "ring")
        state, m = step(state, b)
        ran.append(m["exchange"])
        losses.append(m["loss"])
    assert coll.exchange in ("all_to_all", "ring")
    assert set(coll.exchange_timings) == {"all_to_all", "ring"}
    assert all(t > 0 for t in coll.exchange_timings.values())
    assert set(ran) == {"all_to_all", "ring"} and ran[-1] == coll.exchange
    # turns change nothing but the time
    _, _, ref, ref_losses = run(8, batches, "all_to_all")
    assert losses == ref_losses
    assert_bitwise_equal(state.tables, ref.tables)


def test_exchange_setting_errors_and_instances():
    with pytest.raises(ValueError, match="unknown exchange strategy 'mesh'.*'all_to_all'"):
        EmbeddingCollection(tc.table_specs(h.SGD()), tc.FEATURES, exchange="mesh")
    coll = EmbeddingCollection(tc.table_specs(h.SGD()), tc.FEATURES, exchange=Ring())
    assert coll.exchange == "ring" and coll.layout(tc.B).exchange == Ring()
