"""Training through dynamic tables without hand-written plumbing.

A custom_vjp cannot return row-shaped gradients for a table, so training
differentiates the loss with respect to the rows it looked up and hands those
row gradients to the fused ``apply_gradients``. `lookup` and `make_train_step`
do that for the user:

    step_fn = make_train_step(loss_fn, specs, optax.adam(1e-3))
    state = init_train_state(params, specs, optax.adam(1e-3))
    state, metrics = step_fn(state, ids, batch)

``loss_fn(params, embeddings, batch)`` receives, for each table name, the rows
of that table's ids with the ids' shape plus ``(dim,)`` (padding ids give zero
rows); it returns a scalar loss or ``(loss, aux)``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax_hypereca import _ops
from jax_hypereca.errors import (
    HyperecaError, apply_status_dict, check_ids, insert_status_dict, raise_for_apply_status,
    raise_for_insert_status)
from jax_hypereca.table import (
    TableSpec, TableState, apply_gradients, counters_dict, find_or_insert, gather, init_table)


class Lookup(NamedTuple):
    """Rows of a batch of ids, deduplicated: ``unique_rows[inverse]`` are the
    rows of the ids (inverse -1 marks padding)."""

    unique_rows: jax.Array  # (n, dim) float32, one row per distinct id
    inverse: jax.Array      # (n,) int32 into unique_rows; -1 for padding
    slots: jax.Array        # (n,) int32 slots of the distinct ids (-1 padding)
    status: jax.Array       # (8,) int64 find_or_insert status


def lookup(spec: TableSpec, state: TableState, ids, *, step, pin_from=None
           ) -> tuple[TableState, Lookup]:
    """Deduplicates `ids` (any shape), finds or inserts each distinct id once and
    gathers its row (float32)."""
    flat = _ops.ids_array(ids).reshape(-1)
    uniq, inverse, _ = _ops.unique(flat)
    state, res = find_or_insert(spec, state, uniq, step=step, pin_from=pin_from)
    rows = gather(state, res.slots).astype(jnp.float32)
    return state, Lookup(rows, inverse, res.slots, res.status)


def expand(unique_rows: jax.Array, inverse: jax.Array, shape) -> jax.Array:
    """Rows of the original ids: (*shape, dim); padding ids get zeros."""
    rows = jnp.take(unique_rows, jnp.maximum(inverse, 0), axis=0)
    rows = jnp.where((inverse >= 0)[:, None], rows, 0.0)
    return rows.reshape(tuple(shape) + (unique_rows.shape[-1],))


class TrainState(NamedTuple):
    """Dense parameters, their optax state, the tables and the step count."""

    params: Any
    opt_state: Any
    tables: dict[str, TableState]
    step: jax.Array  # () int64


def init_train_state(params, specs: Mapping[str, TableSpec],
                     dense_tx: optax.GradientTransformation) -> TrainState:
    """Fresh tables (single shard each) and optimizer state for `params`."""
    return TrainState(params, dense_tx.init(params),
                      {name: init_table(spec) for name, spec in specs.items()},
                      jnp.zeros((), jnp.int64))


LossFn = Callable[[Any, dict[str, jax.Array], Any], Any]


def _train_step(loss_fn: LossFn, specs: Mapping[str, TableSpec],
                dense_tx: optax.GradientTransformation, has_aux: bool):
    def step_fn(state: TrainState, ids: Mapping[str, jax.Array], batch):
        # Rows are accessed at step count + 1 (so 0 means "never"); schedules see
        # the count of earlier updates, as optax's do.
        tables = dict(state.tables)
        lookups = {}
        for name, table_ids in ids.items():
            tables[name], lookups[name] = lookup(specs[name], tables[name], table_ids,
                                                 step=state.step + 1)

        def inner(params, unique_rows):
            emb = {name: expand(unique_rows[name], lookups[name].inverse, ids[name].shape)
                   for name in ids}
            return loss_fn(params, emb, batch)

        rows = {name: lk.unique_rows for name, lk in lookups.items()}
        out, (g_params, g_rows) = jax.value_and_grad(inner, argnums=(0, 1), has_aux=has_aux)(
            state.params, rows)
        loss, aux = out if has_aux else (out, None)
        updates, opt_state = dense_tx.update(g_params, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        apply_status = {}
        for name, lk in lookups.items():
            tables[name], apply_status[name] = apply_gradients(
                specs[name], tables[name], lk.slots, g_rows[name], step=state.step)
        metrics = {"loss": loss, "aux": aux,
                   "insert_status": {n: lk.status for n, lk in lookups.items()},
                   "apply_status": apply_status}
        return TrainState(params, opt_state, tables, state.step + 1), metrics

    return step_fn


class TrainStep:
    """A jitted train step with the state donated (tables updated in place) that
    checks the tables' status outputs on the host after each call and raises
    with the numbers (see errors.py). The input state is donated, so an
    exception raised after the step carries the step's outputs as ``.state``
    and ``.metrics`` (the offending ids got no row, every other row is there)."""

    def __init__(self, loss_fn: LossFn, specs: Mapping[str, TableSpec],
                 dense_tx: optax.GradientTransformation, *, has_aux: bool = False,
                 check: bool = True):
        self.specs = dict(specs)
        self.check = check
        self._fn = jax.jit(_train_step(loss_fn, self.specs, dense_tx, has_aux),
                           donate_argnums=(0,))

    def __call__(self, state: TrainState, ids: Mapping[str, Any], batch=None):
        host_ids = {}
        for name, x in ids.items():
            if name not in self.specs:
                raise KeyError(f"ids given for unknown table {name!r}; tables: "
                               f"{sorted(self.specs)}")
            if isinstance(x, np.ndarray):
                x = check_ids(x, where=f"ids[{name!r}]")
            host_ids[name] = _ops.ids_array(x)
        state, metrics = self._fn(state, host_ids, batch)
        if self.check:
            try:
                self.raise_for_status(state, metrics, {n: x.size for n, x in host_ids.items()})
            except HyperecaError as e:
                # The input state was donated: hand the step's result to the caller.
                e.state, e.metrics = state, metrics
                raise
        return state, metrics

    def lower(self, state, ids, batch=None):
        """The lowered step (for inspecting the HLO)."""
        return self._fn.lower(state, {k: _ops.ids_array(v) for k, v in ids.items()}, batch)

    def raise_for_status(self, state: TrainState, metrics, ids_per_table: Mapping[str, int]
                         ) -> None:
        """Raises for reserved ids, refused inserts or skipped gradient rows."""
        for name, status in metrics["insert_status"].items():
            st = insert_status_dict(status)
            if st["reserved"] or st["failed"]:
                table = state.tables[name]
                raise_for_insert_status(
                    name, st, capacity=table.capacity,
                    bucket_size=min(self.specs[name].bucket_size, table.capacity),
                    max_evictions=ids_per_table[name], size=counters_dict(table)["size"])
        for name, status in metrics["apply_status"].items():
            raise_for_apply_status(name, apply_status_dict(status))


def make_train_step(loss_fn: LossFn, specs: Mapping[str, TableSpec],
                    dense_tx: optax.GradientTransformation, *, has_aux: bool = False,
                    check: bool = True) -> TrainStep:
    """A train step over single-shard tables; see the module docstring."""
    return TrainStep(loss_fn, specs, dense_tx, has_aux=has_aux, check=check)
