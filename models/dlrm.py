"""DLRM (Naumov et al. 2019) and DLRM-DCNv2 (MLPerf DLRMv2) in Flax linen,
with every sparse feature embedded through jax_hypereca's dynamic tables.

    model = DLRM(config=ModelConfig(), features=features)
    logits = model.apply({"params": params}, batch)   # inside a collection step

``batch["dense"]`` is [B, 13] (already log1p-transformed), ``batch["ids"]``
holds each feature's ids as the collection's step received them. The model
must run inside ``EmbeddingCollection.make_train_step``'s loss or
``make_eval_fn``'s function, where ``HypeRecaEmbed`` finds its rows; with no
features (the dense-only baseline) it is an ordinary Flax model.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jax_hypereca import FeatureSpec
from jax_hypereca.flax.linen import HypeRecaEmbed
from models.config import ModelConfig
from models.dcn import CrossNetwork
from models.interaction import dot_interaction


class MLP(nn.Module):
    """Dense layers with ReLU between them (and after the last one unless
    ``final_activation`` is False)."""

    sizes: Sequence[int]
    final_activation: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, size in enumerate(self.sizes):
            x = nn.Dense(size, name=f"dense_{i}")(x)
            if i + 1 < len(self.sizes) or self.final_activation:
                x = nn.relu(x)
        return x


class DLRM(nn.Module):
    """Bottom MLP on the dense features, one embedding per sparse feature,
    an interaction, top MLP to one logit per sample.

    The interaction is the config's: "dot" (DLRM: the pairwise dot products
    of the bottom output and the embeddings, concatenated with the bottom
    output) or "dcn" (DLRM-DCNv2: a cross network over their concatenation).

    Attributes:
      config: the network sizes and interaction.
      features: the sparse features, embedded in this order (empty: a
        dense-only model, bottom MLP straight into the top MLP).
    """

    config: ModelConfig
    features: tuple[FeatureSpec, ...] = ()

    @nn.compact
    def __call__(self, batch: Mapping[str, Any]) -> jax.Array:
        """Logits [B] for the batch."""
        cfg = self.config
        x = MLP(cfg.bottom_mlp, name="bottom")(batch["dense"])
        embedded = [HypeRecaEmbed(f, cfg.embedding_dim, name=f"embed_{f.name}")(
            batch["ids"][f.name]) for f in self.features]
        return interact_and_top(cfg, x, embedded)


def interact_and_top(cfg: ModelConfig, x: jax.Array, embedded: Sequence[jax.Array]
                     ) -> jax.Array:
    """The network above the embeddings: the config's interaction of the
    bottom output `x` [B, D] with the pooled embeddings ([B, D] each), then
    the top MLP to one logit per sample. Call it inside a ``nn.compact``
    method: its layers ("cross", "top") become that module's, so any model
    that embeds its ids another way (experiments/baselines.py) has the same
    parameters and math as :class:`DLRM`."""
    if not embedded:
        h = x
    elif cfg.interaction == "dot":
        h = jnp.concatenate([x, dot_interaction([x] + list(embedded))], axis=1)
    else:
        h = CrossNetwork(cfg.cross_layers, cfg.cross_low_rank, name="cross")(
            jnp.concatenate([x] + list(embedded), axis=1))
    return MLP(tuple(cfg.top_mlp) + (1,), final_activation=False, name="top")(h)[:, 0]
