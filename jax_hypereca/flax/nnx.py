"""The nnx layer: HypeRecaEmbed in place of ``nnx.Embed`` for sparse features."""

from __future__ import annotations

import jax
from flax import nnx

from jax_hypereca.features import FeatureSpec
from jax_hypereca.flax.scope import current_output


class HypeRecaEmbed(nnx.Module):
    """Embeds a sparse feature from a dynamic, sharded jax_hypereca table.

    Example::

        import optax, numpy as np, jax_hypereca as h
        from flax import nnx
        from jax_hypereca.flax.nnx import HypeRecaEmbed
        feat = h.FeatureSpec(name="item", table="items")
        coll = h.EmbeddingCollection([h.TableSpec(name="items", dim=16, capacity=4096)], [feat])

        class Model(nnx.Module):
            def __init__(self, rngs):
                self.embed = HypeRecaEmbed(feat, 16)
                self.head = nnx.Linear(16, 1, rngs=rngs)
            def __call__(self, batch):
                return self.head(self.embed(batch["ids"]["item"]))[:, 0]

        graphdef, params = nnx.split(Model(nnx.Rngs(0)))
        batch = {"ids": {"item": np.arange(64)}, "y": np.ones(64, np.float32)}
        loss = lambda p, emb, b: optax.sigmoid_binary_cross_entropy(
            nnx.merge(graphdef, p)(b), b["y"]).mean()
        step = coll.make_train_step(loss, optax.adam(1e-3))
        state, metrics = step(coll.init_train_state(params, optax.adam(1e-3)), batch)

    An id the table has never seen is inserted on its owner shard during the
    train step, with its deterministic initial row (a pure function of the
    table seed, the id and the column) and fresh optimizer state; evaluation
    (``make_eval_fn``) inserts nothing and gives an unseen id that same initial
    row. Every int64 id except the reserved -2 gets its own row; -1 is padding.

    Args:
      feature: the FeatureSpec this layer embeds (its name keys the batch ids).
      features: the output width: the feature's table dim.
    """

    def __init__(self, feature: FeatureSpec, features: int):
        self.feature = feature
        self.features = features

    def __call__(self, ids: jax.Array) -> jax.Array:
        """Rows of ``ids`` pooled per the FeatureSpec ([B, features], or
        [B, max_ids, features] for pooling "none")."""
        return current_output(self.feature, self.features, ids, initializing=False)
