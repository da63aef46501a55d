"""The Flax models: the dot interaction agrees with a plain reference,
the cross network computes DCN-v2's formula, DLRM and DLRM-DCNv2 train
through an EmbeddingCollection, and the presets bound their tables."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jax_hypereca as h
from models import config as mc
from models.data import expand_bags, make_batch
from models.dcn import CrossNetwork
from models.dlrm import DLRM
from models.interaction import dot_interaction, num_pairs


def reference_interaction(vectors):
    """Pairwise dots in (i, j < i) row-major order, one pair at a time."""
    x = np.stack([np.asarray(v, np.float64) for v in vectors], axis=1)
    return np.stack([(x[:, i] * x[:, j]).sum(-1)
                     for i in range(x.shape[1]) for j in range(i)], axis=1)


def reference_interaction_grad(vectors, ct):
    """d/dv_k of sum over pairs (i, j < i) of ct_ij <v_i, v_j>, one pair at a time."""
    x = [np.asarray(v, np.float64) for v in vectors]
    grads = [np.zeros_like(v) for v in x]
    ct = np.asarray(ct, np.float64)
    for p, (i, j) in enumerate((i, j) for i in range(len(x)) for j in range(i)):
        grads[i] += ct[:, p:p + 1] * x[j]
        grads[j] += ct[:, p:p + 1] * x[i]
    return grads


def test_dot_interaction_agrees_in_value_and_gradient():
    keys = jax.random.split(jax.random.PRNGKey(0), 7)
    vectors = [jax.random.normal(k, (16, 8)) for k in keys[:6]]
    ct = jax.random.normal(keys[6], (16, num_pairs(6)))
    np.testing.assert_allclose(np.asarray(dot_interaction(vectors)),
                               reference_interaction(vectors), rtol=1e-5, atol=1e-5)
    grad = jax.grad(lambda vs: (dot_interaction(vs) * ct).sum())(vectors)
    for g, w in zip(grad, reference_interaction_grad(vectors, ct)):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-5, atol=1e-5)


def test_dot_interaction_checks_its_arguments():
    v = jnp.ones((4, 3))
    assert dot_interaction([v, v]).shape == (4, 1)
    with pytest.raises(ValueError, match="at least 2 vectors"):
        dot_interaction([v])


@pytest.mark.parametrize("low_rank", [0, 3])
def test_cross_network_is_dcn_v2(low_rank):
    net = CrossNetwork(num_layers=2, low_rank=low_rank)
    x0 = jax.random.normal(jax.random.PRNGKey(1), (5, 6))
    params = net.init(jax.random.PRNGKey(2), x0)["params"]
    x = np.asarray(x0, np.float64)
    for i in range(2):
        if low_rank:
            w = np.asarray(params[f"down_{i}"]["kernel"]) @ np.asarray(params[f"up_{i}"]["kernel"])
            b = np.asarray(params[f"up_{i}"]["bias"])
        else:
            w = np.asarray(params[f"cross_{i}"]["kernel"])
            b = np.asarray(params[f"cross_{i}"]["bias"])
        x = np.asarray(x0) * (x @ w + b) + x
    np.testing.assert_allclose(np.asarray(net.apply({"params": params}, x0)), x, rtol=1e-5,
                               atol=1e-5)


def small_batch(n=64, multi_hot=(1, 3, 1), seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.zipf(1.3, size=(n, len(multi_hot), 1)) % 200
    dense = rng.lognormal(size=(n, 13)).astype(np.float32)
    labels = (ids[:, 0, 0] % 2).astype(np.float32)  # learnable from feature C1
    return make_batch(dense, ids, labels, mc.SPARSE_NAMES[:len(multi_hot)], multi_hot)


@pytest.mark.parametrize("interaction", ["dot", "dcn"])
def test_model_trains_through_the_collection(interaction):
    multi_hot = (1, 3, 1)
    preset = mc.Preset(name="t", vocab_sizes=(200,) * 3, multi_hot=multi_hot,
                       model=mc.ModelConfig(interaction=interaction, embedding_dim=8,
                                            bottom_mlp=(16, 8), top_mlp=(16,), cross_low_rank=4))
    tables, features = mc.sparse_specs(preset, optimizer=h.RowwiseAdagrad(learning_rate=0.5),
                                       budget_bytes=1 << 24)
    assert [f.max_ids for f in features] == list(multi_hot)
    coll = h.EmbeddingCollection(tables, features)
    model = DLRM(config=preset.model, features=tuple(features))
    batch = small_batch(multi_hot=multi_hot)
    params = model.init(jax.random.PRNGKey(0), batch)["params"]
    assert ("cross" in params) == (interaction == "dcn")
    tx = optax.adam(0.01)
    step = coll.make_train_step(lambda p, e, b: optax.sigmoid_binary_cross_entropy(
        model.apply({"params": p}, b), b["labels"]).mean(), tx)
    state = coll.init_train_state(params, tx)
    losses = []
    for _ in range(30):
        state, m = step(state, batch)
        losses.append(m["loss"])
    assert losses[-1] < 0.5 * losses[0]
    logits = coll.make_eval_fn(lambda p, e, b: model.apply({"params": p}, b))(state, batch)
    assert logits.shape == (64,)


def test_dense_only_model_is_an_ordinary_flax_model():
    model = DLRM(config=mc.ModelConfig())
    batch = small_batch()
    params = model.init(jax.random.PRNGKey(0), batch)["params"]
    assert set(params) == {"bottom", "top"}
    assert model.apply({"params": params}, batch).shape == (64,)


def test_model_config_is_validated():
    with pytest.raises(ValueError, match="bottom MLP to end at the embedding dim 16"):
        mc.ModelConfig(bottom_mlp=(64, 32))
    with pytest.raises(ValueError, match="interaction must be"):
        mc.ModelConfig(interaction="fm")
    mc.ModelConfig(interaction="dcn", bottom_mlp=(64, 32))  # dcn: any bottom width


def test_bounded_capacities_fill_the_budget_large_tables_first():
    vocab = [10, 1000, 50_000, 2_000_000]
    free = mc.bounded_capacities(vocab, 100, 1 << 40)
    assert free == [mc.MIN_CAPACITY, mc.MIN_CAPACITY, 100_000, 4_000_000]
    caps = mc.bounded_capacities(vocab, 100, 20_000_000)  # 200k rows
    assert caps == [mc.MIN_CAPACITY, mc.MIN_CAPACITY, 95_904, 95_904]  # one cap on the large
    assert mc.bounded_capacities(vocab, 100, 20_000_200)[2:] == [95_905, 95_905]
    with pytest.raises(ValueError, match="cannot hold 4 tables"):
        mc.bounded_capacities(vocab, 100, 10_000)


@pytest.mark.parametrize("name", sorted(mc.PRESETS))
def test_presets_fit_the_budget(name):
    preset = mc.PRESETS[name]
    budget = 2 << 30
    tables, features = mc.sparse_specs(preset, optimizer=h.RowwiseAdagrad(), budget_bytes=budget)
    assert len(tables) == len(features) == (4 if name == "tiny" else 26)
    assert sum(t.capacity * t.row_bytes() for t in tables) <= budget
    assert all(t.dim == preset.model.embedding_dim for t in tables)
    assert len({t.seed for t in tables}) == len(tables)
    if name == "mlperf-dlrmv2":
        assert preset.model.interaction == "dcn" and preset.model.embedding_dim == 128
        assert [f.max_ids for f in features] == list(mc.MLPERF_MULTI_HOT_SIZES)
        assert sum(mc.MLPERF_TABLE_SIZES) == 204_184_588  # as published (public_cardinalities)
    if name == "criteo-kaggle":
        assert sum(preset.vocab_sizes) == 33_762_577


def test_multi_hot_bags_are_fixed_functions_of_the_id():
    ids = np.array([0, 5, 5, 2**40 + 3], np.int64)
    bags = expand_bags(ids, 7, 4)
    assert bags.shape == (4, 4) and bags.dtype == np.int64
    np.testing.assert_array_equal(bags[:, 0], ids)
    np.testing.assert_array_equal(bags[1], bags[2])
    assert (bags >= 0).all() and len(set(bags[1].tolist())) == 4
    assert not np.array_equal(expand_bags(ids, 8, 4), bags)  # per-feature bags
    for a, b in itertools.combinations([0, 1, 3], 2):  # distinct ids, distinct bags
        assert not set(bags[a, 1:].tolist()) & set(bags[b, 1:].tolist())
