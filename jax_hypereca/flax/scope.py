"""Where the Flax layers find their rows: the collection looks every feature
up before the model runs (the exchange must see the whole batch), then runs
the model with the looked-up outputs current (jax_hypereca.lookup_scope). The
layers return them, and the gradient the loss sends them goes back to the
tables."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jax_hypereca.features import FeatureSpec
from jax_hypereca.lookup_scope import current_scope


def output_shape(feature: FeatureSpec, dim: int, ids_shape) -> tuple[int, ...]:
    batch = ids_shape[0]
    return (batch, feature.max_ids, dim) if feature.pooling == "none" else (batch, dim)


def current_output(feature: FeatureSpec, dim: int, ids, *, initializing: bool) -> jax.Array:
    """The looked-up output of `feature` for these ids (zeros while a linen
    model is being initialized outside any step)."""
    scope = current_scope()
    if scope is None:
        if initializing:
            return jnp.zeros(output_shape(feature, dim, ids.shape), jnp.float32)
        raise RuntimeError(
            f"HypeRecaEmbed({feature.name!r}) was called outside a jax_hypereca step. Run the "
            f"model inside the loss given to EmbeddingCollection.make_train_step, or the "
            f"function given to make_eval_fn: they look the ids up and provide the rows.")
    outputs, scope_ids = scope
    if feature.name not in outputs:
        raise KeyError(f"HypeRecaEmbed({feature.name!r}): the collection has no feature "
                       f"{feature.name!r}; features: {sorted(outputs)}")
    if scope_ids.get(feature.name) is not ids:
        raise ValueError(
            f"HypeRecaEmbed({feature.name!r}) must be called with batch['ids'][{feature.name!r}] "
            f"exactly as the step received it: the rows were looked up for those ids before "
            f"the model ran, so ids transformed inside the model would not match them.")
    out = outputs[feature.name]
    want = output_shape(feature, dim, ids.shape)
    if tuple(out.shape) != want:
        raise ValueError(f"HypeRecaEmbed({feature.name!r}): features={dim} gives shape {want} "
                         f"but the table's rows give {tuple(out.shape)}; use the table's dim")
    return out
