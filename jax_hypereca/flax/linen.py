"""The linen layer: HypeRecaEmbed in place of ``nn.Embed`` for sparse features."""

from __future__ import annotations

import flax.linen as nn
import jax

from jax_hypereca.features import FeatureSpec
from jax_hypereca.flax.scope import current_output


class HypeRecaEmbed(nn.Module):
    """Embeds a sparse feature from a dynamic, sharded jax_hypereca table.

    Example::

        import flax.linen as nn, jax, optax, numpy as np, jax_hypereca as h
        from jax_hypereca.flax.linen import HypeRecaEmbed
        feat = h.FeatureSpec(name="item", table="items")
        coll = h.EmbeddingCollection([h.TableSpec(name="items", dim=16, capacity=4096)], [feat])

        class Model(nn.Module):
            @nn.compact
            def __call__(self, batch):
                e = HypeRecaEmbed(feat, 16)(batch["ids"]["item"])      # [B, 16]
                return nn.Dense(1)(e)[:, 0]

        batch = {"ids": {"item": np.arange(64)}, "y": np.ones(64, np.float32)}
        model = Model()
        params = model.init(jax.random.PRNGKey(0), batch)["params"]
        loss = lambda p, emb, b: optax.sigmoid_binary_cross_entropy(
            model.apply({"params": p}, b), b["y"]).mean()
        step = coll.make_train_step(loss, optax.adam(1e-3))
        state, metrics = step(coll.init_train_state(params, optax.adam(1e-3)), batch)

    An id the table has never seen is inserted on its owner shard during the
    train step, with its deterministic initial row (a pure function of the
    table seed, the id and the column) and fresh optimizer state; evaluation
    (``make_eval_fn``) inserts nothing and gives an unseen id that same initial
    row. There is no vocabulary and no hashing collision: every int64 id
    except the reserved -2 gets its own row; -1 is padding (a zero row).

    Attributes:
      feature: the FeatureSpec this layer embeds (its name keys the batch ids).
      features: the output width: the feature's table dim.
    """

    feature: FeatureSpec
    features: int

    @nn.compact
    def __call__(self, ids: jax.Array) -> jax.Array:
        """Rows of ``ids`` ([B] or [B, max_ids]) pooled per the FeatureSpec:
        [B, features], or [B, max_ids, features] for pooling "none"."""
        return current_output(self.feature, self.features, ids,
                              initializing=self.is_initializing())
