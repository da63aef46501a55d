"""Flax layers over an EmbeddingCollection: ``jax_hypereca.flax.linen`` and
``jax_hypereca.flax.nnx`` each define ``HypeRecaEmbed``."""

from jax_hypereca.flax.scope import embedding_scope

__all__ = ["embedding_scope"]
