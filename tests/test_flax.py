"""The Flax layers: the docstring examples run, linen and nnx train to the
same parameters, and misuse gives clear errors."""

import re
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jax_hypereca as h
from jax_hypereca.flax import linen as hlinen
from jax_hypereca.flax import nnx as hnnx


def docstring_example(obj) -> str:
    """The code between 'Example::' and the paragraph after it."""
    code = obj.__doc__.split("Example::", 1)[1].split("    An id the table", 1)[0]
    return textwrap.dedent(code)


@pytest.mark.parametrize("module", [hlinen.HypeRecaEmbed, hnnx.HypeRecaEmbed])
def test_docstring_example_runs(module):
    namespace: dict = {}
    exec(compile(docstring_example(module), f"<{module.__module__} example>", "exec"), namespace)
    assert np.isfinite(float(namespace["metrics"]["loss"]))
    assert int(namespace["state"].step) == 1


FEATS = [h.FeatureSpec(name="user", table="users"),
         h.FeatureSpec(name="hist", table="items", max_ids=4, pooling="mean"),
         h.FeatureSpec(name="item", table="items")]
TABLES = [h.TableSpec(name="users", dim=8, capacity=4096, optimizer=h.Adagrad(learning_rate=0.05)),
          h.TableSpec(name="items", dim=8, capacity=4096, optimizer=h.Adagrad(learning_rate=0.05))]


class LinenModel(nn.Module):
    @nn.compact
    def __call__(self, batch):
        u = hlinen.HypeRecaEmbed(FEATS[0], 8)(batch["ids"]["user"])
        hst = hlinen.HypeRecaEmbed(FEATS[1], 8)(batch["ids"]["hist"])
        it = hlinen.HypeRecaEmbed(FEATS[2], 8)(batch["ids"]["item"])
        x = nn.relu(nn.Dense(16, name="hidden")(jnp.concatenate([u, hst, it], axis=1)))
        return nn.Dense(1, name="out")(x)[:, 0]


class NnxModel(nnx.Module):
    def __init__(self, rngs):
        self.user = hnnx.HypeRecaEmbed(FEATS[0], 8)
        self.hist = hnnx.HypeRecaEmbed(FEATS[1], 8)
        self.item = hnnx.HypeRecaEmbed(FEATS[2], 8)
        self.hidden = nnx.Linear(24, 16, rngs=rngs)
        self.out = nnx.Linear(16, 1, rngs=rngs)

    def __call__(self, batch):
        ids = batch["ids"]
        x = jnp.concatenate([self.user(ids["user"]), self.hist(ids["hist"]),
                             self.item(ids["item"])], axis=1)
        return self.out(nnx.relu(self.hidden(x)))[:, 0]


def batches(n=30, b=32):
    rng = np.random.default_rng(0)
    for _ in range(n):
        hist = rng.zipf(1.3, size=(b, 4)) % 500
        hist[rng.random((b, 4)) < 0.3] = -1
        user = rng.integers(0, 30, b)
        yield {"ids": {"user": user, "hist": hist, "item": rng.zipf(1.3, size=b) % 500},
               "y": (user % 3 == 0).astype(np.float32)}  # learnable from the user row


def bce(logits, y):
    return optax.sigmoid_binary_cross_entropy(logits, y).mean()


def test_linen_and_nnx_train_identically():
    data = list(batches())
    linen_model = LinenModel()
    params = linen_model.init(jax.random.PRNGKey(0), data[0])["params"]
    graphdef, nnx_params = nnx.split(NnxModel(nnx.Rngs(0)))
    # same starting dense weights
    for layer in ("hidden", "out"):
        for p in ("kernel", "bias"):
            nnx_params[layer][p][...] = params[layer][p]

    def run(loss, p0):
        coll = h.EmbeddingCollection(TABLES, FEATS)
        tx = optax.adam(0.01)
        step = coll.make_train_step(loss, tx)
        state = coll.init_train_state(p0, tx)
        losses = []
        for b in data:
            state, m = step(state, b)
            losses.append(float(m["loss"]))
        return state, losses

    s1, l1 = run(lambda p, emb, b: bce(linen_model.apply({"params": p}, b), b["y"]), params)
    s2, l2 = run(lambda p, emb, b: bce(nnx.merge(graphdef, p)(b), b["y"]), nnx_params)
    np.testing.assert_allclose(l1, l2, rtol=1e-6, atol=1e-7)
    assert l1[-1] < l1[0]
    np.testing.assert_allclose(np.asarray(s1.params["out"]["kernel"]),
                               np.asarray(s2.params["out"]["kernel"][...]), rtol=1e-6, atol=1e-7)
    for t in ("users", "items"):
        np.testing.assert_array_equal(np.asarray(s1.tables[t].keys), np.asarray(s2.tables[t].keys))
        np.testing.assert_allclose(np.asarray(s1.tables[t].values),
                                   np.asarray(s2.tables[t].values), rtol=1e-6, atol=1e-7)


def test_misuse_is_reported():
    with pytest.raises(RuntimeError, match="outside a jax_hypereca step"):
        hnnx.HypeRecaEmbed(FEATS[0], 8)(jnp.zeros((4,), jnp.int32))
    coll = h.EmbeddingCollection(TABLES, FEATS)
    data = next(batches())

    class Twisted(nn.Module):
        @nn.compact
        def __call__(self, batch):
            return hlinen.HypeRecaEmbed(FEATS[0], 8)(batch["ids"]["user"] + 1).sum(1)

    model = Twisted()
    params = {}
    step = coll.make_train_step(lambda p, e, b: model.apply({"params": p}, b).mean(),
                                optax.sgd(0.1))
    with pytest.raises(ValueError, match=re.escape("must be called with batch['ids']['user']")):
        step(coll.init_train_state(params, optax.sgd(0.1)), data)
