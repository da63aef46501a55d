"""Flax layers over an EmbeddingCollection: ``jax_hypereca.flax.linen`` and
``jax_hypereca.flax.nnx`` each define ``HypeRecaEmbed``. ``embedding_scope``
makes looked-up outputs current for code that runs a model outside the
collection's steps."""

from jax_hypereca.lookup_scope import lookup_scope as embedding_scope

__all__ = ["embedding_scope"]
