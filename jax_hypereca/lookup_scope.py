"""Where the looked-up outputs of a step are visible to model code.

The collection looks every feature up before the model runs (the exchange
must see the whole batch), then calls the user's function inside
`lookup_scope`, so layers above the collection (jax_hypereca.flax) can find
the rows of the ids they are called with, without the collection knowing of
them."""

from __future__ import annotations

import contextlib
from typing import Mapping

import jax

_SCOPES: list[tuple[Mapping[str, jax.Array], Mapping[str, jax.Array]]] = []


@contextlib.contextmanager
def lookup_scope(outputs: Mapping[str, jax.Array], ids: Mapping[str, jax.Array]):
    """Makes `outputs` (per feature) current for the ids `ids` (per feature)."""
    _SCOPES.append((outputs, ids))
    try:
        yield
    finally:
        _SCOPES.pop()


def current_scope() -> tuple[Mapping[str, jax.Array], Mapping[str, jax.Array]] | None:
    """The innermost (outputs, ids), or None outside every step."""
    return _SCOPES[-1] if _SCOPES else None


def scoped(fn):
    """fn(params, outputs, batch), run with `outputs` current for batch["ids"]."""
    def wrapped(params, outputs, batch):
        with lookup_scope(outputs, batch["ids"]):
            return fn(params, outputs, batch)
    return wrapped
