"""The state a training loop carries, and the loss it differentiates."""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax

from jax_hypereca.table import TableState


class TrainState(NamedTuple):
    """Dense parameters (replicated), their optax state, the sharded tables
    (the cold fold), the number of completed steps, the replicated hot
    folds of the tables that have one (see replication.py), and the
    admission state (sketch, filtered count) of the tables that filter ids
    (admission.py)."""

    params: Any
    opt_state: Any
    tables: dict[str, TableState]
    step: jax.Array
    hot: dict[str, TableState] = {}
    admission: dict[str, dict[str, jax.Array]] = {}


LossFn = Callable[[Any, dict[str, jax.Array], Mapping[str, Any]], Any]
"""``loss_fn(params, embeddings, batch)``: one array per feature in
`embeddings`; returns the mean loss over the global batch, or ``(loss, aux)``."""
